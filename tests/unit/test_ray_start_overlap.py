"""The embedded Ray starts while the driver scans (when it is sure to be needed) and is shut down in
the background once the stream is done (issue 9: the pipeline's fixed start and stop costs). No Ray
runs here: ``janus_ray.stream.connect`` / ``disconnect`` are replaced by stand-ins that record the
calls, and the Ray stream by the in-process one."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import janus_ray.pipeline as pipeline
import janus_ray.stream as ray_side
from janus_ray.config import RunConfig
from janus_ray.errors import JanusRayError, WeightsError
from janus_ray.pipeline import Stages, evaluate, starts_ray_early
from janus_ray.plan import ClusterShape
from janus_ray.stream import Connection, stream_in_process
from tests.integration.conftest import WEIGHTS_ROOT, build_inputs


@pytest.fixture
def fake_ray(monkeypatch):
    """A local 2-CPU run whose Ray start and stop are recorded (thread names), the stream in-process."""
    class Calls(list):
        imports: list[str] = []

    calls = Calls()  # (connect / disconnect, thread name); .imports: the threads that imported Ray Data
    calls.imports = []
    up = [False]

    def connect(address):
        calls.append(("connect", threading.current_thread().name))
        up[0] = True
        return Connection(joined=False, address=None, autoscaler_config=None)

    def disconnect():
        time.sleep(0.2)  # a shutdown takes a while: ray_is_up must wait for it
        calls.append(("disconnect", threading.current_thread().name))
        up[0] = False

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_side, "local_shape", lambda gpu_memory_gb=None: ClusterShape.uniform(0, 0.0, 2.0))
    monkeypatch.setattr(ray_side, "connect", connect)
    monkeypatch.setattr(ray_side, "disconnect", disconnect)
    monkeypatch.setattr(ray_side, "stream_scores", stream_in_process)
    monkeypatch.setattr(pipeline, "ray_is_up", lambda: up[0])
    # which thread imports Ray Data (without importing it here)
    monkeypatch.setattr(pipeline, "import_ray_data", lambda: calls.imports.append(threading.current_thread().name))
    yield calls


def config_for(inputs, **overrides) -> RunConfig:
    values = {"folders": [str(f) for f in inputs["folders"][-2:]], "weights_root": str(WEIGHTS_ROOT),
              "prompt_json": str(inputs["prompt_json"]), "metrics": ["dummy"], **overrides}
    return RunConfig(**values)


def test_a_new_local_run_starts_ray_on_the_main_thread_while_the_folders_are_scanned(tmp_path, monkeypatch, fake_ray):
    inputs = build_inputs(tmp_path)
    ray_starting = threading.Event()
    real_connect, real_scan = ray_side.connect, pipeline.build_manifest

    def connect(address):
        ray_starting.set()
        return real_connect(address)

    def build_manifest(*args, **kwargs):
        # run in sequence (scan, then Ray) this waits in vain and the run fails
        if not ray_starting.wait(timeout=10):
            raise AssertionError("the folders were scanned before Ray started")
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(ray_side, "connect", connect)
    monkeypatch.setattr(pipeline, "build_manifest", build_manifest)
    log = io.StringIO()
    result = evaluate(config_for(inputs, resume=False), log, stages=Stages())
    assert result.n_rows > 0
    assert fake_ray[0] == ("connect", threading.main_thread().name)
    # Ray Data is imported by the scan's thread while Ray starts, not after ray.init on the main thread
    [importer] = fake_ray.imports
    assert importer.startswith("janus-ray-scan")
    assert " to score, resume cache hits: 0" in log.getvalue()


def test_an_embedded_ray_the_run_started_is_shut_down_on_the_main_thread_after_the_stream(tmp_path, fake_ray):
    inputs = build_inputs(tmp_path)
    evaluate(config_for(inputs), io.StringIO(), stages=Stages())  # a new cache: Ray starts early
    assert [name for name, _ in fake_ray] == ["connect", "disconnect"]
    # not a background thread: the main thread must not touch Ray objects while it goes down
    assert fake_ray[1][1] == threading.main_thread().name
    # a partly cached rerun starts Ray after reading the cache (in the stream) and stops it too
    fake_ray.clear()
    evaluate(config_for(inputs), io.StringIO(), stages=Stages())
    assert fake_ray == []  # fully cached: no Ray at all
    log = io.StringIO()
    evaluate(config_for(inputs, metrics=["dummy", "pickscore"]), log, stages=Stages())
    assert "resume cache hits: " in log.getvalue() and " 0 to score" not in log.getvalue()
    assert [name for name, _ in fake_ray] == ["connect", "disconnect"]


def test_ray_is_started_early_only_when_it_is_sure_to_be_needed_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(pipeline, "ray_is_up", lambda: False)
    config = RunConfig(folders=[str(tmp_path)], weights_root=str(WEIGHTS_ROOT), metrics=["dummy"],
                       cache_dir=str(tmp_path / "cache"))
    config.resolve_names()
    assert starts_ray_early(config, Stages())  # resume on, no cache yet
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "part-0001.parquet").write_bytes(b"")
    assert not starts_ray_early(config, Stages())  # a cache to read first: maybe nothing is left
    config.resume = False
    assert starts_ray_early(config, Stages())
    assert not starts_ray_early(config, Stages(stream_scores=stream_in_process))
    assert not starts_ray_early(config, Stages(plan=lambda c, s: None))
    config.ray_address = "ray-head:6379"
    assert not starts_ray_early(config, Stages())  # a joined cluster: connected to when planning
    config.ray_address = None
    monkeypatch.setenv("RAY_ADDRESS", "ray-head:6379")  # inside a Ray job
    assert not starts_ray_early(config, Stages())
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(pipeline, "ray_is_up", lambda: True)  # the caller's own Ray
    assert not starts_ray_early(config, Stages())


def test_a_missing_weight_file_fails_before_ray_starts(tmp_path, fake_ray):
    inputs = build_inputs(tmp_path)
    (tmp_path / "no-weights").mkdir()
    with pytest.raises(WeightsError):
        evaluate(config_for(inputs, weights_root=str(tmp_path / "no-weights"), metrics=["pickscore"]),
                 io.StringIO(), stages=Stages())
    assert fake_ray == []


def test_the_fused_pool_on_one_node_starts_its_actors_without_waiting_for_all_of_them():
    from janus_ray.stream import pool_start_wait_s

    assert pool_start_wait_s(fused=True, alive_nodes=1, timeout_s=600.0, embedded=True) == -1  # asynchronous
    # every other pool keeps the bounded wait that ends a run whose pool cannot be placed
    assert pool_start_wait_s(fused=True, alive_nodes=3, timeout_s=600.0) == 600
    assert pool_start_wait_s(fused=False, alive_nodes=1, timeout_s=90.5) == 90
    # a joined one-node cluster may have its CPUs held by another job: the bound stays
    assert pool_start_wait_s(fused=True, alive_nodes=1, timeout_s=600.0, embedded=False) == 600


def test_a_scan_error_after_the_early_start_stops_that_ray_again(tmp_path, fake_ray):
    inputs = build_inputs(tmp_path)
    inputs["prompt_json"].write_text("{not json", encoding="utf-8")  # read by the scan, not by validate()
    with pytest.raises(JanusRayError):
        evaluate(config_for(inputs, resume=False), io.StringIO(), stages=Stages())
    assert [name for name, _ in fake_ray] == ["connect", "disconnect"]


def test_a_cluster_address_nothing_answers_on_is_refused_at_once(tmp_path):
    """A new user's trial: --ray-address 127.0.0.1:1 left Ray retrying for minutes ("Failed to connect
    to GCS"); now one error naming the address, before ray.init."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on (bound, then released)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(JanusRayError, match=rf"Cannot reach a Ray cluster at 127.0.0.1:{port} \("):
        ray_side.check_reachable(f"127.0.0.1:{port}")
    inputs = build_inputs(tmp_path)
    with pytest.raises(JanusRayError, match="Cannot reach a Ray cluster"):
        evaluate(config_for(inputs, ray_address=f"127.0.0.1:{port}"), io.StringIO(), stages=Stages())
    for address in ("auto", "ray://head:10001"):  # left to Ray
        ray_side.check_reachable(address)


@pytest.mark.parametrize(("address", "message"), [
    ("http://127.0.0.1:8265", "is an HTTP \\(dashboard\\) address, the one `ray job submit` takes"),
    ("not a address::", "is not an address: a Ray cluster is joined by 'auto'"),
    ("head-node", "is not an address"),
    (":6379", "is not an address"),
])
def test_a_malformed_or_http_cluster_address_is_one_line_not_rays_traceback(address, message, tmp_path, monkeypatch):
    """A second new user's trial: these gave Ray's ValueError tracebacks (RAY_ADDRESS=http://HEAD:8265 is
    what the README has users export for submit_job.sh)."""
    with pytest.raises(JanusRayError, match=message):
        ray_side.check_reachable(address)
    monkeypatch.setenv("RAY_ADDRESS", address)
    inputs = build_inputs(tmp_path)
    with pytest.raises(JanusRayError, match=message):
        evaluate(config_for(inputs), io.StringIO(), stages=Stages())


def test_input_folders_without_any_image_are_refused_and_stop_the_early_ray(tmp_path, fake_ray):
    """A new user's trial: eval on an empty folder started Ray, exited 0 (even with --strict) and wrote
    a CSV holding only the AVERAGE row."""
    empty = tmp_path / "empty"
    empty.mkdir()
    config = RunConfig(folders=[str(empty)], weights_root=str(WEIGHTS_ROOT), metrics=["dummy"], resume=False)
    with pytest.raises(JanusRayError, match=r"No images found in any input folder \(.*empty\): nothing to score"):
        evaluate(config, io.StringIO(), stages=Stages())
    assert [name for name, _ in fake_ray] in ([], ["connect", "disconnect"])  # an early Ray is stopped again


def test_the_shutdown_waits_for_ray_datas_threads_of_the_stream():
    """A new user's trial: 67 ms after the last batch a Ray Data thread (not the main one) used Ray
    after ray.shutdown, and Ray's fatal "core worker has already been shutdown" ended the run (exit 1)."""
    done = threading.Event()

    def executor_finishing(seconds):
        time.sleep(seconds)
        done.set()

    threading.Thread(target=executor_finishing, args=(0.3,), name="StreamingExecutor-dataset_x", daemon=True).start()
    assert ray_side.quiesce_ray_data(timeout_s=5) == [] and done.is_set()
    stuck = threading.Thread(target=time.sleep, args=(2,), name="ray-data-metadata-prefetch", daemon=True)
    stuck.start()
    assert ray_side.quiesce_ray_data(timeout_s=0.1) == ["ray-data-metadata-prefetch"]  # bounded: never a hang


def test_rays_own_connection_errors_become_one_line(monkeypatch):
    """Something answers on the port but it is no Ray head (or Ray Client times out): Ray raises
    ConnectionError after ~20-30 s; janus-ray says so in one line instead of Ray's traceback."""
    import socket

    import ray

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at the address given.\nmore lines")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(JanusRayError, match=rf"Cannot join the Ray cluster at {address}: Failed to connect to Ray "
                                                r"cluster at the address given. \(a Ray cluster is joined by"):
            ray_side.connect(address)


def test_joining_a_cluster_says_which_one(monkeypatch):
    """A second new user's trial: `--ray-address auto` joined a cluster someone else had started on
    the machine and nothing said so."""
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": False}, {"Alive": True}])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 48.0, "GPU": 8.0})
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="10.0.0.5:6379"))
    assert ray_side.describe_joined("auto") == (
        "joined the Ray cluster at 10.0.0.5:6379 (address given: auto): 2 node(s), 48 CPU(s), 8 GPU(s)")


def test_then_runs_in_another_thread_while_this_one_shuts_the_embedded_ray_down(tmp_path, fake_ray, monkeypatch):
    """The CLI builds the report in ``then``: it overlaps Ray's shutdown, which mostly waits."""
    inputs = build_inputs(tmp_path)
    started = threading.Event()
    real_shutdown = pipeline.shutdown_embedded_ray

    def shutdown():
        # run after the shutdown (as before) this waits in vain and the run fails
        if not started.wait(timeout=10):
            raise AssertionError("then did not start before Ray's shutdown")
        real_shutdown()

    def then(result):
        started.set()
        return threading.current_thread().name, result.n_rows

    monkeypatch.setattr(pipeline, "shutdown_embedded_ray", shutdown)
    result = evaluate(config_for(inputs), io.StringIO(), stages=Stages(), then=then)
    assert [name for name, _ in fake_ray] == ["connect", "disconnect"]
    name, rows = result.then.result(timeout=10)
    assert name != threading.main_thread().name and rows == result.n_rows > 0
    # an error of then is the future's, not the run's
    failing = evaluate(config_for(inputs, resume=False), io.StringIO(), stages=Stages(),
                       then=lambda result: 1 / 0)
    assert isinstance(failing.then.exception(timeout=10), ZeroDivisionError) and failing.n_rows == result.n_rows


def test_preload_runs_in_a_thread_once_the_folders_are_scanned_and_its_errors_are_ignored(tmp_path, fake_ray,
                                                                                                monkeypatch):
    inputs = build_inputs(tmp_path)
    seen = []
    real_scan = pipeline.build_manifest

    def build_manifest(*args, **kwargs):
        seen.append("scan")
        return real_scan(*args, **kwargs)

    def preload():
        thread = threading.current_thread()
        seen.append(("preload", thread.name, thread.daemon))
        raise ImportError("no report extra")

    monkeypatch.setattr(pipeline, "build_manifest", build_manifest)
    for resume in (False, True):  # Ray started early, while scanning; and after reading the cache
        seen.clear()
        result = evaluate(config_for(inputs, resume=resume), io.StringIO(), stages=Stages(), preload=preload)
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result.n_rows > 0 and seen[0] == "scan" and seen[1] == ("preload", "janus-ray-preload", False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_embedded_rays_autoscaler_monitor_is_killed_not_waited_for_and_nothing_else(tmp_path):
    """Ray's shutdown sent the monitor SIGTERM after stopping the GCS, and waited its full second for
    a handler that reports to that GCS. A stand-in child running .../autoscaler/_private/monitor.py
    ignores SIGTERM as that handler effectively does; another child must be left alone."""
    script = tmp_path / "ray" / ray_side.AUTOSCALER_MONITOR
    script.parent.mkdir(parents=True)
    script.write_text("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\n"
                      "time.sleep(60)\n")
    monitor = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert monitor.stdout.readline() == "up\n" and other.stdout.readline() == "up\n"
        assert ray_side.stop_autoscaler_monitor() == [monitor.pid]
        assert monitor.wait(timeout=5) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (monitor, other):
            process.kill()
            process.wait()
