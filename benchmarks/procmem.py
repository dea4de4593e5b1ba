"""Peak memory of a process and all its descendants (a Ray driver, its GCS, raylet and workers).

Sampled every ``interval`` seconds (PSS every ``pss_every``-th sample: reading smaps_rollup of a
few GB-sized processes costs milliseconds each, which on a small machine would perturb the timing) with psutil (a dependency of Ray; Ray also vendors it in
``ray/thirdparty_files``, which is used when psutil itself is not installed):

* ``rss``: the sum of every process's resident set. Over-counts pages shared between processes
  (the torch libraries each worker maps, Ray's shared-memory object store).
* ``pss``: the sum of proportional set sizes (``/proc/<pid>/smaps_rollup``, Linux): each shared
  page split between the processes mapping it, i.e. the memory the tree really takes. None where
  the kernel does not provide it.

Sampling misses peaks shorter than ``interval``; model loading and scoring last much longer.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path


def import_psutil():
    """psutil, or Ray's vendored copy, or None."""
    try:
        import psutil

        return psutil
    except ImportError:
        pass
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        return None
    vendored = Path(spec.origin).parent / "thirdparty_files"
    if not (vendored / "psutil").is_dir():
        return None
    sys.path.append(str(vendored))  # appended: never shadows an installed package
    try:
        import psutil

        return psutil
    except ImportError:
        return None


def _pss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def peak_rss_self_bytes() -> int:
    """This process's own peak resident set (getrusage ru_maxrss; KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class TreeSampler:
    """Samples the memory of ``pid`` and its descendants in a background thread until ``stop()``."""

    def __init__(self, pid: int, interval: float = 1.0, pss_every: int = 3):
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.psutil = import_psutil()
        self.peak_rss = 0
        self.peak_pss: int | None = None
        self.peak_processes = 0
        self.samples = 0
        self.cpu_seconds: dict[int, float] = {}  # last cumulative user+system seconds seen per pid
        self.names: dict[int, str] = {}  # last process title seen per pid (Ray workers retitle themselves)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        if self.psutil is not None:
            self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return self.result()

    def result(self) -> dict:
        return {
            "peak_rss_mb": round(self.peak_rss / 2**20, 1) if self.samples else None,
            "peak_pss_mb": round(self.peak_pss / 2**20, 1) if self.peak_pss is not None else None,
            "peak_processes": self.peak_processes,
            "samples": self.samples,
            # CPU seconds of every process of the tree (the last second of each process is missed)
            "tree_cpu_s": round(sum(self.cpu_seconds.values()), 1) if self.samples else None,
            "cpu_s_by_process": self.cpu_by_kind(),
            "method": (
                f"psutil {self.psutil.__version__}: sum over the process and all its descendants, sampled every "
                f"{self.interval} s (rss = sum of resident sets, over-counts shared pages; pss, every "
                f"{self.interval * self.pss_every:g} s = sum of proportional set sizes from /proc/<pid>/smaps_rollup)"
                if self.psutil is not None
                else "psutil unavailable: not measured"
            ),
        }

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds per kind of process (``process_kind``), largest first: where the tree's CPU went."""
        kinds: dict[str, float] = {}
        for pid, seconds in self.cpu_seconds.items():
            kind = "root" if pid == self.pid else process_kind(self.names.get(pid, ""))
            kinds[kind] = kinds.get(kind, 0.0) + seconds
        return {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}

    def _run(self) -> None:
        psutil = self.psutil
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            rss, pss = 0, 0
            pss_ok = self.samples % self.pss_every == 0
            for process in processes:
                try:
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    self.cpu_seconds[process.pid] = times.user + times.system
                    try:
                        title = " ".join(process.cmdline()[:2])[:120]
                    except psutil.ZombieProcess:
                        title = ""
                    if not title:  # exited, not yet reaped: no command line (raised, or empty), a name left
                        title = self.names.get(process.pid) or process.name()
                    if not title.startswith("ray::IDLE") or not self.names.get(process.pid, "").startswith("ray::"):
                        self.names[process.pid] = title  # a worker's last task or actor, not its idle spells
                except psutil.Error:
                    continue
                if not pss_ok:
                    continue
                value = _pss_bytes(process.pid)
                if value is None:
                    pss_ok = False
                else:
                    pss += value
            self.samples += 1
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(processes))
            if pss_ok:
                self.peak_pss = max(self.peak_pss or 0, pss)
            self._stop.wait(self.interval)


def process_kind(title: str) -> str:
    """A short kind for a process title: Ray's own daemons by name, Ray workers by their task or
    actor (``ray::MapWorker(MapBatches(FusedStage))``), anything else by its program."""
    if title.startswith("ray::"):
        return title.split()[0].split(".")[0][:60]
    for daemon in ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env", "monitor.py", "agent"):
        if daemon in title:
            return daemon
    return (title.split()[0].rsplit("/", 1)[-1] if title else "?")[:40]


def run_sampled(command: list[str], env: dict | None = None, interval: float = 1.0, log_path: Path | None = None,
                timeout: float | None = None) -> dict:
    """Run ``command`` to completion; return its wall seconds, exit code and the tree's peak memory."""
    import subprocess

    stdout = open(log_path, "w", encoding="utf-8") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid, interval).start()
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait()
        wall = time.perf_counter() - started
        memory = sampler.stop()
    finally:
        if log_path:
            stdout.close()
    return {"wall_s": wall, "returncode": returncode, "memory": memory}
