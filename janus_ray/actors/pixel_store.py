"""Pixels written to Ray's object store once, outside Ray Data's blocks (the per-metric layout).

In the per-metric layout every stage's output batch becomes a new Ray Data block, so pixels that
travel in the rows are written to the object store once per stage hop. Instead, the decode stage
hands each decode batch's pixels to a ``PixelStore`` actor, which puts them into the object store
once and owns them; the rows carry only a key (``pixel_key_column``) and their index in the batch
(``pixel_row_column``). Each metric stage looks the key up and reads the pixels; the last stage
of the chain reports the rows it finished (``done``) and, once every row of a key is done, the
store drops its references and the objects are freed.

Why the store, not the decode actor, owns the objects: an object dies with its owner, and Ray Data
releases the decode actors when decoding ends while metric stages still need the pixels (and a
decode actor killed by one bad image would take every batch it decoded with it). ``ray.put``'s
``_owner`` argument, which would let the decode actor put objects owned by the store, was removed
in Ray 2.56; so the decode actor sends the bytes to the store as arguments of at most
``CHUNK_BYTES`` each, which Ray passes inline in the call (arguments under its
``max_direct_call_object_size``, 100 KiB by default, up to ``task_rpc_inlined_bytes_limit``, 10 MiB
per call) rather than through the object store; the store's ``ray.put`` is then the only write to
the object store (checked in tests/integration/test_pixel_store.py).

Backpressure: Ray Data's own object-store backpressure no longer sees the pixels (its blocks are
small), so ``reserve`` makes the decode stage wait while the store holds more than its budget
bytes, for at most ``wait_s`` seconds (then it proceeds): a batch whose ``done`` never comes (a
crashed stage) slows decoding down, never hangs it.

``PixelLedger`` is the bookkeeping without Ray (unit-tested as is); ``PixelStore`` is the actor's
body around it (``remote_store_class`` makes it a threaded Ray actor); ``PixelClient`` is what the
stages call; ``InProcessPixelStore`` stands in for store and client without Ray (tests, the
transport bench). Only methods import ``ray``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from janus_ray.errors import JanusRayError

#: bytes per call argument: under Ray's default max_direct_call_object_size (100 KiB), so inlined
CHUNK_BYTES = 96 * 1024
#: argument bytes per call: under Ray's default task_rpc_inlined_bytes_limit (10 MiB)
CALL_BYTES = 8 * 1024 * 1024
#: fraction of the object store the held pixels may take before decoding waits
BUDGET_FRACTION = 0.25
#: longest wait for the budget before a decode batch proceeds anyway (s)
WAIT_S = 60.0
#: seconds the store may take to start before the run goes on without it
START_TIMEOUT_S = 120.0
#: concurrent calls one store serves (lookups, done reports, the bytes), and decode batches that
#: may wait for the budget at once (their own concurrency group: waiting never blocks a lookup or a
#: done report, which would keep it waiting)
MAX_CONCURRENCY = 32
MAX_WAITING = 16
#: decode actors per store, and the most stores a run starts (``store_count``)
DECODERS_PER_STORE = 4
MAX_STORES = 16


class PixelStoreError(JanusRayError):
    """The pixel store could not start (the stream then runs without it)."""


class PixelsLost(JanusRayError):
    """A batch's pixels are not (or no longer) in the store: the rows get a 'pixels lost' error."""


def holder_object(key: str, holder: str, offsets: Any, cells: Iterable[bytes]) -> dict[str, np.ndarray]:
    """One holder metric's pixels of batch ``key`` as a store keeps them: ``{"offsets": int64 row
    offsets (n + 1), "data": the rows' uint8 bytes joined}`` (``PixelClient.fetch`` slices rows out).

    Raises PixelsLost when the bytes do not add up to the last offset (a part never arrived)."""
    data = np.frombuffer(b"".join(cells), dtype=np.uint8)
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(data) != int(offsets[-1]):
        raise PixelsLost(f"batch {key}: {len(data)} pixel bytes of {holder} arrived, {int(offsets[-1])} were sent")
    return {"offsets": offsets, "data": data}


class PixelLedger:
    """Which keys are held, how many of their rows are done, how many bytes are outstanding.

    ``objects``: key -> {holder metric: object (an ObjectRef in the actor; anything in tests)}.
    Thread-safe: ``reserve`` blocks on a condition the other methods notify.
    """

    def __init__(self, budget_bytes: int, wait_s: float = WAIT_S):
        self.budget = int(budget_bytes)
        self.wait_s = float(wait_s)
        self.objects: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, int] = {}
        self.finished: dict[str, set[int]] = {}
        self.nbytes: dict[str, int] = {}
        self.reserved = 0  # reserved by decode batches, not yet held
        self.stats = {"held_bytes_total": 0, "keys_total": 0, "waits": 0, "wait_s_total": 0.0,
                      "timeouts": 0, "max_outstanding_bytes": 0}
        self._cond = threading.Condition()

    @property
    def outstanding(self) -> int:
        return self.reserved + sum(self.nbytes.values())

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` of the budget; wait while the store is over it (at most ``wait_s``; never
        when nothing is outstanding; a budget <= 0: no limit). Returns the seconds waited."""
        started = time.monotonic()
        with self._cond:
            deadline = started + self.wait_s
            while self.budget > 0 and self.outstanding and self.outstanding + nbytes > self.budget:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats["timeouts"] += 1
                    break
                self._cond.wait(left)
            waited = time.monotonic() - started
            if waited > 0.001:
                self.stats["waits"] += 1
                self.stats["wait_s_total"] += waited
            self.reserved += int(nbytes)
            self.stats["max_outstanding_bytes"] = max(self.stats["max_outstanding_bytes"], self.outstanding)
        return waited

    def hold(self, key: str, objects: Mapping[str, Any], rows: int, nbytes: int, reserved: int = 0) -> None:
        """Keep ``objects`` until ``rows`` rows of ``key`` are done; ``reserved``: what ``reserve`` took for it."""
        with self._cond:
            self.reserved = max(0, self.reserved - int(reserved))
            self.objects[key] = dict(objects)
            self.rows[key] = int(rows)
            self.finished.setdefault(key, set())
            self.nbytes[key] = int(nbytes)
            self.stats["held_bytes_total"] += int(nbytes)
            self.stats["keys_total"] += 1
            self.stats["max_outstanding_bytes"] = max(self.stats["max_outstanding_bytes"], self.outstanding)
            self._drop_if_done(key)
            self._cond.notify_all()

    def lookup(self, key: str) -> dict[str, Any]:
        """{holder: object} of ``key``. Raises PixelsLost if it is not held."""
        with self._cond:
            objects = self.objects.get(key)
        if objects is None:
            raise PixelsLost(f"batch {key} is not held by the pixel store (dropped, or never stored)")
        return dict(objects)

    def done(self, finished: Mapping[str, Iterable[int]]) -> int:
        """Mark rows (key -> row indices in the batch) done; drop each key whose rows are all done.
        Idempotent (a retried batch reports the same rows again). Returns the keys dropped."""
        dropped = 0
        with self._cond:
            for key, indices in finished.items():
                self.finished.setdefault(key, set()).update(int(i) for i in indices)
                dropped += self._drop_if_done(key)
            self._cond.notify_all()
        return dropped

    def release(self, nbytes: int) -> None:
        """Give back a reservation whose batch was never held (its decode batch failed)."""
        with self._cond:
            self.reserved = max(0, self.reserved - int(nbytes))
            self._cond.notify_all()

    def _drop_if_done(self, key: str) -> int:
        if key in self.rows and len(self.finished.get(key, ())) >= self.rows[key]:
            for table in (self.objects, self.rows, self.finished, self.nbytes):
                table.pop(key, None)
            return 1
        return 0

    def summary(self) -> dict[str, Any]:
        with self._cond:
            return {**self.stats, "held_keys": len(self.objects), "outstanding_bytes": self.outstanding,
                    "budget_bytes": self.budget}


class PixelStore:
    """The actor's body (``remote_store_class()`` = ``ray.remote`` of it): receives pixel bytes, puts them
    into the object store once, owns them until their rows are done."""

    def __init__(self, budget_bytes: int, wait_s: float = WAIT_S):
        self.ledger = PixelLedger(budget_bytes, wait_s)
        self.parts: dict[tuple[str, str], dict[int, list[bytes]]] = {}
        self.lock = threading.Lock()

    def reserve(self, nbytes: int) -> float:
        return self.ledger.reserve(nbytes)

    def release(self, nbytes: int) -> None:
        self.ledger.release(nbytes)

    def add(self, key: str, holder: str, part: int, *chunks: bytes) -> None:
        """One part of ``holder``'s pixel bytes for ``key`` (parts arrive in any order)."""
        with self.lock:
            self.parts.setdefault((key, holder), {})[part] = list(chunks)

    def seal(self, key: str, offsets: dict[str, np.ndarray], rows: int, reserved: int) -> None:
        """Join each holder's parts, ``ray.put`` them with the row offsets (the one write to the
        object store), and hold the references until ``rows`` rows of ``key`` are done."""
        import ray

        refs, nbytes = {}, 0
        for holder, holder_offsets in offsets.items():
            with self.lock:
                parts = self.parts.pop((key, holder), {})
            stored = holder_object(key, holder, holder_offsets, (c for p in sorted(parts) for c in parts[p]))
            refs[holder] = ray.put(stored)
            nbytes += len(stored["data"])
        self.ledger.hold(key, refs, rows, nbytes, reserved)

    def lookup(self, key: str) -> dict[str, Any]:
        """{holder: ObjectRef}: returned nested, so the caller borrows the references (in-band) and
        reads the bytes from the object store, not through this process."""
        return self.ledger.lookup(key)

    def done(self, finished: dict[str, list[int]]) -> int:
        return self.ledger.done(finished)

    def summary(self) -> dict[str, Any]:
        return self.ledger.summary()


def remote_store_class():
    """``PixelStore`` as a threaded Ray actor class (num_cpus=0: it must never wait for a CPU)."""
    import ray

    return ray.remote(num_cpus=0, max_concurrency=MAX_CONCURRENCY, concurrency_groups={"reserve": MAX_WAITING},
                      max_restarts=0)(PixelStore)


def start_stores(count: int = 1, wait_s: float = WAIT_S) -> tuple[list[Any], dict[str, Any]]:
    """Start ``count`` stores, round-robin over the alive nodes with CPUs (the driver's node first),
    so that no one actor process carries every pixel byte of a large node or a cluster: a decode
    stage sends to a store on its own node (``PixelClient``). Each store's budget is
    ``BUDGET_FRACTION`` of its node's object store, shared by the stores on that node.

    Returns (handles, spec for ``PixelClient``: {"namespace", "stores": [{"name", "node"}]}).
    Raises PixelStoreError (and kills what it started) if one does not start in ``START_TIMEOUT_S``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    namespace = ray.get_runtime_context().namespace
    try:
        here = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - e.g. a driver without a node of its own
        here = None
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    nodes.sort(key=lambda n: n.get("NodeID") != here)  # the driver's node first
    placed = [nodes[i % len(nodes)] if nodes else None for i in range(max(1, count))]
    per_node: dict[str | None, int] = {}
    for node in placed:
        per_node[node and node["NodeID"]] = per_node.get(node and node["NodeID"], 0) + 1
    fallback = float(ray.cluster_resources().get("object_store_memory", 0)) / max(1, len(nodes))
    handles, stores = [], []
    run = uuid.uuid4().hex[:12]
    for i, node in enumerate(placed):
        node_id = node and node["NodeID"]
        memory = float(node.get("Resources", {}).get("object_store_memory", 0)) if node else 0.0
        budget = int(BUDGET_FRACTION * (memory or fallback) / per_node[node_id])
        name = f"janus-ray-pixels-{run}-{i}"
        # soft: any node if that one cannot host it
        placement = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=True)} if node_id else {}
        handles.append(remote_store_class().options(name=name, namespace=namespace, **placement)
                       .remote(budget, wait_s))
        stores.append({"name": name, "node": node_id})
    try:
        ray.get([h.summary.remote() for h in handles], timeout=START_TIMEOUT_S)  # named before any stage looks
    except Exception as exc:
        for handle in handles:
            ray.kill(handle)
        raise PixelStoreError(f"the pixel store did not start within {START_TIMEOUT_S:g} s ({exc!r})") from exc
    return handles, {"namespace": namespace, "stores": stores}


def store_count(decode_replicas: int) -> int:
    """Stores for a run with up to ``decode_replicas`` decode actors: one per ``DECODERS_PER_STORE``
    of them (each store copies bytes at a few hundred MB/s), at most ``MAX_STORES``."""
    return max(1, min(MAX_STORES, -(-int(decode_replicas) // DECODERS_PER_STORE)))


def merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``summary()`` for several stores: counts and bytes added, maxima kept, ``stores`` = how many."""
    out: dict[str, Any] = {"stores": len(summaries)}
    for summary in summaries:
        for key, value in summary.items():
            if key.startswith("max_"):
                out[key] = max(out.get(key, 0), value)
            else:
                out[key] = out.get(key, 0) + value
    return out


def created_bytes() -> int:
    """Bytes ever created in the object store (plasma), summed over the alive nodes: Ray's
    ``cumulative_created_bytes`` store statistic (a DeveloperAPI; benchmarks and tests)."""
    import ray
    from ray._private.internal_api import node_stats

    total = 0
    for node in ray.nodes():
        if node.get("Alive"):
            stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False)
            total += int(stats.store_stats.cumulative_created_bytes)
    return total


def as_pixel_client(store: Any):
    """A stage's ``pixel_store`` argument -> what it calls: None (no store), a client object as is
    (``InProcessPixelStore``, test doubles), or a store spec dict -> a ``PixelClient``."""
    return PixelClient(store) if isinstance(store, dict) else store


class PixelClient:
    """What the stages call; one per actor process. ``spec``: ``start_stores``' spec (or the
    one-store form {"name", "namespace"}). A batch's key names its store: ``<index>.<uuid>``."""

    def __init__(self, spec: Mapping[str, Any]):
        self.spec = dict(spec)
        self.stores = list(spec.get("stores") or [{"name": spec["name"], "node": None}])
        self._handles: dict[int, Any] = {}
        self._mine: int | None = None

    def handle(self, index: int):
        if index not in self._handles:
            import ray

            self._handles[index] = ray.get_actor(self.stores[index]["name"], namespace=self.spec["namespace"])
        return self._handles[index]

    def mine(self) -> int:
        """The store this process sends to: one on its own node if any (the bytes then never cross
        the network twice), the same one for the process's life, spread over processes by pid."""
        if self._mine is None:
            ray = sys.modules.get("ray")  # never start or join a Ray to find out (tests call this without)
            try:
                node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None
            except Exception:  # noqa: BLE001 - a worker without a node id: any store
                node = None
            local = [i for i, s in enumerate(self.stores) if s.get("node") == node] or list(range(len(self.stores)))
            self._mine = local[os.getpid() % len(local)]
        return self._mine

    def store(self, pixels: Mapping[str, tuple[np.ndarray, list[bytes]]], rows: int) -> str:
        """Send one decode batch's pixels (holder -> (offsets (rows + 1,), each row's bytes)) to the
        store; returns the batch's key once the store holds them."""
        import ray

        index = self.mine()
        key = f"{index}.{uuid.uuid4().hex}"
        total = sum(int(offsets[-1]) for offsets, _ in pixels.values())
        handle = self.handle(index)
        ray.get(handle.reserve.options(concurrency_group="reserve").remote(total))
        try:
            calls = []
            for holder, (_, cells) in pixels.items():
                for part, chunks in enumerate(_call_parts(cells)):
                    calls.append(handle.add.remote(key, holder, part, *chunks))
            ray.get(calls)
            ray.get(handle.seal.remote(key, {h: o for h, (o, _) in pixels.items()}, rows, total))
        except BaseException:
            handle.release.remote(total)
            raise
        return key

    def fetch(self, needs: Mapping[str, Iterable[str]]) -> dict[str, dict[str, Any] | BaseException]:
        """``needs``: key -> the holder metrics wanted. Returns key -> {holder: {"offsets", "data"}}
        (those holders only: another node's objects are pulled only when needed), or the exception
        that lost the key."""
        import ray

        out: dict[str, dict[str, Any] | BaseException] = {}
        lookups = {}
        for key in needs:
            try:
                lookups[key] = self.handle(_store_index(key)).lookup.remote(key)
            except Exception as exc:  # noqa: BLE001 - that store is gone: its keys are lost
                out[key] = exc
        refs: dict[str, dict[str, Any]] = {}
        for key, lookup in lookups.items():
            try:
                refs[key] = ray.get(lookup)
            except Exception as exc:  # noqa: BLE001 - costs this key's rows only
                out[key] = _unwrap(exc)
        flat = [(key, holder, ref) for key, held in refs.items() for holder, ref in held.items()
                if holder in set(needs[key])]
        try:
            values = ray.get([ref for _, _, ref in flat])
        except Exception:  # noqa: BLE001 - find which key failed, one by one
            values = []
            for key, _, ref in flat:
                try:
                    values.append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001
                    out[key] = _unwrap(exc)
                    values.append(None)
        failed = set(out)
        for (key, holder, _), value in zip(flat, values):
            if key not in failed:
                out.setdefault(key, {})[holder] = value  # type: ignore[index]
        return out

    def done(self, finished: dict[str, list[int]]) -> None:
        """Fire and forget: each store drops its keys whose rows are all done."""
        by_store: dict[int, dict[str, list[int]]] = {}
        for key, rows in finished.items():
            by_store.setdefault(_store_index(key), {})[key] = rows
        for index, part in by_store.items():
            self.handle(index).done.remote(part)


def _store_index(key: str) -> int:
    """The store a key was sent to (``<index>.<uuid>``; a key without an index: store 0)."""
    head, dot, _ = key.partition(".")
    return int(head) if dot and head.isdigit() else 0


def _call_parts(cells: list[bytes]) -> list[list[bytes]]:
    """Split the rows' bytes into chunks of at most CHUNK_BYTES, grouped into calls of at most
    CALL_BYTES of arguments (each argument then travels inline, not through the object store)."""
    calls: list[list[bytes]] = [[]]
    size = 0
    for cell in cells:
        view = memoryview(cell)
        for start in range(0, len(view), CHUNK_BYTES):
            chunk = bytes(view[start:start + CHUNK_BYTES])
            if size + len(chunk) > CALL_BYTES and calls[-1]:
                calls.append([])
                size = 0
            calls[-1].append(chunk)
            size += len(chunk)
    return calls


def _unwrap(exc: BaseException) -> BaseException:
    """The store's own exception (PixelsLost) rather than Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class InProcessPixelStore:
    """A stand-in with ``PixelClient``'s methods, without Ray (unit tests, the transport bench):
    the "objects" are kept in this process; ``put_bytes`` counts what a real store would write to
    the object store (each holder's bytes plus its offsets)."""

    def __init__(self, budget_bytes: int = 0, wait_s: float = WAIT_S):
        self.ledger = PixelLedger(budget_bytes, wait_s)
        self.put_bytes = 0

    def store(self, pixels: Mapping[str, tuple[np.ndarray, list[bytes]]], rows: int) -> str:
        key = uuid.uuid4().hex
        total = sum(int(offsets[-1]) for offsets, _ in pixels.values())
        self.ledger.reserve(total)
        objects = {}
        for holder, (offsets, cells) in pixels.items():
            objects[holder] = holder_object(key, holder, offsets, cells)
            self.put_bytes += objects[holder]["data"].nbytes + objects[holder]["offsets"].nbytes
        self.ledger.hold(key, objects, rows, total, reserved=total)
        return key

    def fetch(self, needs: Mapping[str, Iterable[str]]) -> dict[str, dict[str, Any] | BaseException]:
        out: dict[str, dict[str, Any] | BaseException] = {}
        for key, holders in needs.items():
            try:
                held = self.ledger.lookup(key)
            except PixelsLost as exc:
                out[key] = exc
                continue
            out[key] = {h: held[h] for h in holders if h in held}
        return out

    def done(self, finished: dict[str, list[int]]) -> None:
        self.ledger.done(finished)
