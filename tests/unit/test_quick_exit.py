"""janus_ray.quick_exit and the console script: the exit code, printed lines and later atexit hooks
survive the exit without interpreter teardown; an uncaught exception keeps Python's normal exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_end_at_exit_keeps_the_code_the_buffered_output_and_later_hooks_but_skips_the_teardown():
    done = run_python("""
        import atexit, sys
        atexit.register(print, "registered before: would run after the exit hook")
        from janus_ray.quick_exit import end_at_exit
        set_code = end_at_exit()
        atexit.register(print, "registered after: runs before the exit hook")
        class Teardown:
            def __del__(self):
                print("teardown ran")
        keep = Teardown()
        print("main's line, still in the pipe's buffer")
        set_code(3)
        sys.exit(0)  # the code handed over wins: it is what main() returned
    """)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["main's line, still in the pipe's buffer",
                                        "registered after: runs before the exit hook"]


def test_without_a_code_the_exit_is_pythons_own():
    done = run_python("""
        import sys
        from janus_ray.quick_exit import end_at_exit
        end_at_exit()
        class Teardown:
            def __del__(self):
                print("teardown ran")
        keep = Teardown()
        raise RuntimeError("uncaught")
    """)
    assert done.returncode == 1
    assert "RuntimeError: uncaught" in done.stderr and done.stdout.strip() == "teardown ran"


@pytest.mark.parametrize("argv, code, last_line", [(["list"], 0, None),
                                                  (["validate", "/no/such/folder"], 1, "PROBLEMS FOUND in 1 of 1 folder(s)"),
                                                  (["report", "/no/such/folder"], 2, "janus-ray: error:")])
def test_the_console_script_exits_with_mains_code_and_all_its_output(argv, code, last_line):
    """stdout into a pipe is block-buffered: its last line arrives only if the quick exit flushed it."""
    done = subprocess.run([sys.executable, "-m", "janus_ray", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    if code == 0:
        assert "pickscore" in done.stdout
    else:
        assert (done.stdout + done.stderr).strip().splitlines()[-1].startswith(last_line)


def test_the_installed_entry_point_is_run():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "janus-ray"]
    assert script.value == "janus_ray.cli:run"


def test_a_reader_that_leaves_early_ends_the_console_script_without_a_traceback():
    done = subprocess.run(f"{sys.executable} -m janus_ray list | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
