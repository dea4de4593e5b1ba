"""The pixel store without Ray: its ledger (hold, lookup, done, the bounded budget wait), the
chunking of the bytes into inline call arguments, and decode -> metric stages through a stand-in
store (same scores as with the pixels in the rows; 'pixels lost' rows when the store lost them)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from janus_ray.actors.decode_stage import (
    DecodeStage,
    pixel_column,
    stage_error_column,
    todo_column,
)
from janus_ray.actors.metric_actor import PIXELS_LOST, MetricActor, output_column
from janus_ray.actors.pixel_store import (
    CALL_BYTES,
    CHUNK_BYTES,
    InProcessPixelStore,
    PixelLedger,
    PixelsLost,
    _call_parts,
)
from janus_ray.columns import pixel_key_column, pixel_row_column

from ..conftest import IMAGES_DIR, WEIGHTS_ROOT

METRICS = ["clipscore", "hpsv2", "hpsv2.1"]


# ----- ledger -------------------------------------------------------------------------------------
def test_a_key_is_dropped_once_all_its_rows_are_done_and_repeated_reports_count_once():
    ledger = PixelLedger(budget_bytes=1000)
    ledger.hold("k", {"m": "obj"}, rows=3, nbytes=300)
    assert ledger.lookup("k") == {"m": "obj"} and ledger.outstanding == 300
    ledger.done({"k": [0, 1]})
    ledger.done({"k": [1, 0]})  # a retried batch reports its rows again
    assert ledger.lookup("k") == {"m": "obj"}
    assert ledger.done({"k": [2]}) == 1
    assert ledger.outstanding == 0 and ledger.summary()["held_keys"] == 0
    with pytest.raises(PixelsLost, match="batch k is not held by the pixel store"):
        ledger.lookup("k")


def test_reserve_waits_while_over_budget_until_rows_are_done():
    ledger = PixelLedger(budget_bytes=500, wait_s=30)
    ledger.hold("k", {"m": 1}, rows=1, nbytes=400)
    threading.Timer(0.3, lambda: ledger.done({"k": [0]})).start()
    waited = ledger.reserve(200)
    assert 0.2 < waited < 10 and ledger.summary()["timeouts"] == 0
    assert ledger.outstanding == 200  # the reservation itself


def test_reserve_waits_at_most_wait_s_when_done_never_comes():
    ledger = PixelLedger(budget_bytes=500, wait_s=0.3)
    ledger.hold("k", {"m": 1}, rows=2, nbytes=400)
    started = time.monotonic()
    ledger.reserve(200)
    assert 0.25 < time.monotonic() - started < 5 and ledger.summary()["timeouts"] == 1


def test_reserve_never_waits_with_nothing_outstanding_or_without_a_budget():
    assert PixelLedger(budget_bytes=10, wait_s=30).reserve(10_000) < 0.1  # one batch over the budget
    ledger = PixelLedger(budget_bytes=0, wait_s=30)
    ledger.hold("k", {"m": 1}, rows=1, nbytes=10**9)
    assert ledger.reserve(10**9) < 0.1


def test_hold_gives_back_its_reservation():
    ledger = PixelLedger(budget_bytes=0)
    ledger.reserve(100)
    ledger.hold("k", {}, rows=1, nbytes=100, reserved=100)
    assert ledger.outstanding == 100
    ledger.release(50)  # never below zero
    ledger.done({"k": [0]})
    assert ledger.outstanding == 0


def test_call_parts_are_inline_sized_and_keep_the_bytes_in_order():
    rng = np.random.default_rng(0)
    cells = [rng.integers(0, 255, size, dtype=np.uint8).tobytes() for size in (0, 150_528, 3 * 336 * 336, 10)] * 30
    calls = _call_parts(cells)
    assert len(calls) > 1
    assert all(len(chunk) <= CHUNK_BYTES for call in calls for chunk in call)
    assert all(sum(map(len, call)) <= CALL_BYTES for call in calls)
    assert b"".join(chunk for call in calls for chunk in call) == b"".join(cells)


# ----- stages through a stand-in store --------------------------------------------------------------
def _rows(paths: list[str]) -> dict:
    n = len(paths)
    out = {"row_id": np.arange(n), "image_path": np.array(paths, dtype=object),
           "prompt": np.array(["a photo of an astronaut"] * n, dtype=object), "has_prompt": np.ones(n, bool),
           "decode_error": np.array([""] * n, dtype=object)}
    out.update({todo_column(m): np.ones(n, bool) for m in METRICS})
    return out


def _chain(store, paths: list[str]) -> dict:
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in METRICS}
    batch = DecodeStage(spec, max_pixels=10_000_000, pixel_store=store)(_rows(paths))
    for k, metric in enumerate(METRICS):
        actor = MetricActor(metric=metric, scorer=metric, weights_root=str(WEIGHTS_ROOT), device="cpu", dtype=None,
                            options={}, pixel_store=store, report_done=k == len(METRICS) - 1)
        batch = actor(batch)
    return batch


PATHS = [str(IMAGES_DIR / "astronaut.jpg"), str(IMAGES_DIR / "coffee_wide.png"), str(IMAGES_DIR / "chelsea_palette.png")]


def test_scores_through_the_store_equal_scores_with_the_pixels_in_the_rows_and_the_store_ends_empty():
    plain = _chain(None, PATHS)
    assert pixel_key_column() not in plain  # without a store: the rows as before
    store = InProcessPixelStore()
    stored = _chain(store, PATHS)
    for column in plain:
        if column.startswith("_jr_out_"):
            np.testing.assert_array_equal(stored[column], plain[column])
            assert np.isfinite(stored[column]).all()
    assert all(stored[stage_error_column(m)][i] == "" for m in METRICS for i in range(len(PATHS)))
    assert all(len(cell) == 0 for m in METRICS for cell in stored[pixel_column(m)])  # no pixels in the rows
    assert list(stored[pixel_row_column()]) == [0, 1, 2] and len(set(stored[pixel_key_column()])) == 1
    # what the store wrote: each holder's pixels once (hpsv2.1 shares hpsv2's) plus offsets
    holders = {"clipscore": 3 * 224 * 224, "hpsv2": 3 * 224 * 224}
    shapes = {m: [tuple(s) for s in plain[f"_jr_pxshape_{m}"]] for m in holders}
    expected = sum(int(np.prod(s)) for m in holders for s in shapes[m]) + len(holders) * 8 * (len(PATHS) + 1)
    assert store.put_bytes == expected
    assert store.ledger.summary()["held_keys"] == 0 and store.ledger.outstanding == 0  # all freed


def test_rows_whose_pixels_the_store_lost_get_a_pixels_lost_error_and_the_rest_are_scored():
    class Forgetful(InProcessPixelStore):
        def fetch(self, needs):
            out = super().fetch(needs)
            return {key: (PixelsLost(f"batch {key} is not held by the pixel store (dropped, or never stored)")
                          if key == self.forget else value) for key, value in out.items()}

    store = Forgetful()
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in METRICS}
    decode = DecodeStage(spec, max_pixels=10_000_000, pixel_store=store)
    first, second = decode(_rows(PATHS[:1])), decode(_rows(PATHS[1:]))
    store.forget = first[pixel_key_column()][0]
    merged = {c: np.concatenate([first[c], second[c]]) for c in first}  # a metric batch spanning two decode batches
    out = MetricActor(metric="clipscore", scorer="clipscore", weights_root=str(WEIGHTS_ROOT), device="cpu", dtype=None,
                      options={}, pixel_store=store)(merged)
    errors = list(out[stage_error_column("clipscore")])
    assert errors[0] == f"{PIXELS_LOST}: PixelsLost: batch {store.forget} is not held by the pixel store (dropped, or never stored)"
    assert errors[1:] == ["", ""] and np.isnan(out[output_column("clipscore")][0])
    assert np.isfinite(out[output_column("clipscore")][1:]).all()


def test_a_store_that_fails_leaves_the_pixels_in_the_rows():
    class Broken(InProcessPixelStore):
        def store(self, pixels, rows):
            raise ConnectionError("store gone")

    out = _chain(Broken(), PATHS[:1])
    assert list(out[pixel_key_column()]) == [""]
    assert np.isfinite(out[output_column("clipscore")]).all() and out[stage_error_column("clipscore")][0] == ""


def test_a_stage_fetches_only_the_holders_it_needs_and_without_a_store_its_rows_are_lost():
    class Recording(InProcessPixelStore):
        def fetch(self, needs):
            self.asked = {key: set(holders) for key, holders in needs.items()}
            return super().fetch(needs)

    store = Recording()
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in METRICS}
    batch = DecodeStage(spec, max_pixels=10_000_000, pixel_store=store)(_rows(PATHS[:2]))
    key = batch[pixel_key_column()][0]
    kwargs = {"weights_root": str(WEIGHTS_ROOT), "device": "cpu", "dtype": None, "options": {}}
    MetricActor(metric="hpsv2.1", scorer="hpsv2.1", pixel_store=store, **kwargs)(batch)
    assert store.asked == {key: {"hpsv2"}}  # HPSv2.1's pixels are HPSv2's; clipscore's are not pulled
    out = MetricActor(metric="clipscore", scorer="clipscore", **kwargs)(batch)
    assert list(out[stage_error_column("clipscore")]) == [f"{PIXELS_LOST}: RuntimeError: no pixel store configured"] * 2


def test_store_count_grows_with_the_decode_actors_and_is_capped():
    from janus_ray.actors.pixel_store import DECODERS_PER_STORE, MAX_STORES, store_count

    assert store_count(1) == 1 and store_count(DECODERS_PER_STORE) == 1
    assert store_count(DECODERS_PER_STORE + 1) == 2
    assert store_count(10_000) == MAX_STORES


def test_summaries_of_several_stores_add_up_and_keep_maxima():
    from janus_ray.actors.pixel_store import merge_summaries

    merged = merge_summaries([{"held_keys": 1, "held_bytes_total": 10, "max_outstanding_bytes": 7},
                              {"held_keys": 0, "held_bytes_total": 5, "max_outstanding_bytes": 9}])
    assert merged == {"stores": 2, "held_keys": 1, "held_bytes_total": 15, "max_outstanding_bytes": 9}


def test_a_key_names_its_store_and_a_client_sends_to_a_store_on_its_own_node():
    from janus_ray.actors.pixel_store import PixelClient, _store_index

    assert _store_index("2.abc") == 2 and _store_index("abc") == 0  # the one-store form
    client = PixelClient({"namespace": "n", "stores": [{"name": "a", "node": "elsewhere"},
                                                        {"name": "b", "node": None}, {"name": "c", "node": None}]})
    # outside a Ray worker the node is unknown (None): one of the stores "on" that node
    assert client.mine() in (1, 2) and client.mine() == client.mine()
    assert PixelClient({"name": "only", "namespace": "n"}).mine() == 0
