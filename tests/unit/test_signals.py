"""Ctrl-C held over Ray's start and shutdown (a new user's trial, stop 14): cut halfway, Ray's start
left two agents running for a minute and its shutdown swallowed the Ctrl-C (exit 0, "Exception
ignored"). No Ray runs here."""

from __future__ import annotations

import io
import os
import signal
import threading
import types

import pytest

import janus_ray.pipeline
import janus_ray.stream as ray_side
from janus_ray.cli import main
from janus_ray.demo import PROMPTS, make_variant_folders
from janus_ray.errors import InterruptedAfterWrite
from janus_ray.signals import sigint_deferred

from ..conftest import WEIGHTS_ROOT


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler for each test (an earlier test's eval may have left SIG_IGN)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_inside_the_block_is_held_until_it_ends_then_raised():
    log, done = io.StringIO(), []
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred("the step is done", stream=log):
            ctrl_c()
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert log.getvalue() == "janus-ray: stopping once the step is done (Ctrl-C again to stop at once)\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once_and_raise_as_names_what_is_raised():
    done = []
    with pytest.raises(KeyboardInterrupt) as raised:
        with sigint_deferred("x", stream=io.StringIO()):
            ctrl_c()
            ctrl_c()
            done.append("not reached")
    assert done == [] and type(raised.value) is KeyboardInterrupt
    with pytest.raises(InterruptedAfterWrite) as raised:
        with sigint_deferred("x", raise_as=lambda: InterruptedAfterWrite("/runs/out"), stream=io.StringIO()):
            ctrl_c()
    assert raised.value.output_root == "/runs/out"
    # the second Ctrl-C too (a new user's trial: after the results were written, a double Ctrl-C said
    # "interrupted before any score arrived")
    with pytest.raises(InterruptedAfterWrite) as raised:
        with sigint_deferred("x", raise_as=lambda: InterruptedAfterWrite("/runs/out"), stream=io.StringIO()):
            ctrl_c()
            ctrl_c()
            done.append("not reached")
    assert done == [] and raised.value.output_root == "/runs/out"
    with sigint_deferred("x", stream=io.StringIO()):  # no Ctrl-C: nothing raised
        pass


def test_off_the_main_thread_the_block_runs_as_is():
    seen = []

    def body():
        with sigint_deferred("x", stream=io.StringIO()):
            seen.append(signal.getsignal(signal.SIGINT) is signal.default_int_handler)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [True]


def test_a_ctrl_c_while_the_embedded_ray_starts_stops_that_ray_once_it_is_up(monkeypatch):
    import ray

    calls = []
    up = [False]

    def init(**kwargs):
        ctrl_c()  # the user's Ctrl-C lands while ray.init is still starting processes
        calls.append("init finished")
        up[0] = True

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: up[0])
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray_side, "disconnect", lambda: calls.append("disconnect"))
    with pytest.raises(KeyboardInterrupt):
        ray_side.connect(None)
    assert calls == ["init finished", "disconnect"]


@pytest.mark.parametrize("report", [True, False])
def test_a_ctrl_c_as_the_run_ends_says_every_score_is_written(tmp_path, monkeypatch, capsys, report):
    folders = make_variant_folders(tmp_path / "variants", PROMPTS[:2])
    root = tmp_path / "out"

    def interrupted(config, **kwargs):
        raise InterruptedAfterWrite(str(root))

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", interrupted)
    argv = ["eval", str(folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy", "--output-dir", str(root)]
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(argv + ([] if report else ["--no-report"])) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert f"janus-ray: interrupted as the run ended; every score is written under {root}" in err
    assert (f"`janus-ray report {root}` builds the report." in err) is report
    assert "before any score arrived" not in err


def test_a_ctrl_c_as_the_run_ends_still_finishes_and_lists_the_report_being_built(tmp_path, monkeypatch, capsys):
    """The trial: the process exited while the report's thread was inside matplotlib's C++ code and
    aborted (exit 134, a C++ stack trace). The report's thread is waited for and its files listed."""
    from janus_ray.pipeline import in_thread

    folders = make_variant_folders(tmp_path / "variants", PROMPTS[:2])
    root = tmp_path / "out"
    report = in_thread(lambda: [root / "report.html", root / "report.md"])

    def interrupted(config, **kwargs):
        raise InterruptedAfterWrite(str(root), report)

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", interrupted)
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(["eval", str(folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy",
                     "--output-dir", str(root)]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert f"janus-ray: interrupted as the run ended; every score is written under {root}.\n" in err
    assert f"[janus-ray] report: {root / 'report.html'}\n[janus-ray] report: {root / 'report.md'}" in err


def test_a_report_that_cannot_be_written_is_a_warning_not_a_failed_eval(tmp_path, monkeypatch, capsys):
    """The trial: report.html made a directory beforehand ended the eval with IsADirectoryError's
    traceback and exit 1, though every score was written."""
    import janus_ray.report
    from janus_ray.pipeline import in_thread

    folders = make_variant_folders(tmp_path / "variants", PROMPTS[:2])

    def evaluate(config, **kwargs):
        result = types.SimpleNamespace(n_failed=0, output_root=tmp_path)
        result.then = in_thread(kwargs["then"], result)
        return result

    def unwritable(root, *args, **kwargs):
        raise IsADirectoryError(21, "Is a directory", str(root / "report.html"))

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", evaluate)
    monkeypatch.setattr(janus_ray.report, "build_report", unwritable)
    assert main(["eval", str(folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy"]) == 0
    err = capsys.readouterr().err
    assert f"[janus-ray] warning: no comparison report: [Errno 21] Is a directory: '{tmp_path / 'report.html'}'" in err
    assert "Traceback" not in err
