"""Processes that end without Python's interpreter teardown once their work is done.

Why: a process that has imported torch, transformers, pandas, pyarrow and Ray spends a measurable
time at exit destroying every module and object it holds, work the operating system does anyway
when the process ends. Measured on the 2-core VM: 1.2-1.5 CPU seconds for a Ray actor process
holding the PickScore scorer, 0.5-0.7 s for the ``janus-ray eval`` driver (pandas, Ray, Ray Data
and the report's libraries loaded), after the results were written. Nothing in that teardown
matters: by then the result files are written and closed, the resume cache's last part is
written and fsynced (``stream_phases`` flushes it), an actor's results left it with its last batch
and its journal lines are flushed per write.

Both exits keep what a normal exit does first: non-daemon threads are joined (the report's
thread) and the ``atexit`` hooks registered after the exit hook ran (Ray's among them); then
standard streams and ``logging`` are flushed, and ``os._exit`` ends the process.

* The console script (``janus_ray.cli.run``): ``end_at_exit()`` before ``main()``, handed its exit
  code when ``main()`` returns; a traceback (an uncaught exception) keeps Python's normal exit.
* A Ray actor process: ``install()`` (each Ray Data UDF's ``__init__``) registers the hook in a Ray
  actor process only, never in a driver or a test process; it ends the process only after
  ``actor_ended()`` (each UDF's ``__del__``), i.e. when Ray Data released the actor cleanly
  (``MapWorker.__ray_shutdown__`` drops the UDF once Ray Core finished its tasks and told its
  raylet the exit is intended). Any other way out (a crash, SIGTERM, a failed constructor) keeps
  Python's normal exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable

_state: dict = {"installed": False, "ended": False}


def end_now(code: int = 0) -> None:
    """Flush the standard streams and ``logging``, then ``os._exit(code)``: no interpreter teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream has nothing left to flush
            pass
    logging.shutdown()
    os._exit(code)


def end_at_exit() -> Callable[[int], None]:
    """Register now an ``atexit`` hook that ends the process with ``end_now(code)``, ``code`` being
    what the returned function was last given; never given one (an uncaught exception), the hook
    does nothing and Python exits as usual. Call it before anything else the process registers:
    atexit runs hooks last-in first-out, so every hook registered later (Ray's) runs before it,
    and one registered earlier (``logging``'s own) is covered by ``end_now``'s flush."""
    codes: list[int] = []
    atexit.register(lambda: end_now(codes[-1]) if codes else None)
    return codes.append


# ----- Ray actor processes ------------------------------------------------------------------------
def in_ray_actor() -> bool:
    """Whether this process runs a Ray actor (Ray's runtime context has an actor id). False where
    Ray is not imported or not initialised (a test, the in-process stream) and in a Ray driver."""
    ray = sys.modules.get("ray")
    # is_initialized first: get_runtime_context() in a process without Ray would start one
    if ray is None or not ray.is_initialized():
        return False
    try:
        return ray.get_runtime_context().get_actor_id() is not None
    except Exception:  # noqa: BLE001 - no runtime context: not an actor
        return False


def install() -> bool:
    """Register the actor's exit hook once per process, in a Ray actor process only; return whether
    it is registered."""
    if not _state["installed"] and in_ray_actor():
        atexit.register(_actor_exit)  # registered after Ray's own hook, so it runs before it
        _state["installed"] = True
    return _state["installed"]


def actor_ended() -> None:
    """The UDF was released (its ``__del__``): the process may skip Python's teardown at exit."""
    _state["ended"] = True


class QuickExitWhenReleased:
    """Mixin of the Ray Data UDFs: ``arm_quick_exit()`` at the end of ``__init__`` (``install``);
    ``__del__`` (Ray Data released the UDF) then calls ``actor_ended``. An ``__init__`` that failed
    before arming marks nothing."""

    _quick_exit = False

    def arm_quick_exit(self) -> None:
        self._quick_exit = install()

    def __del__(self) -> None:
        if self._quick_exit:
            actor_ended()


def _actor_exit() -> None:
    # Ray's own exit hook (not run after this one) has nothing left to do in an actor: its core
    # worker was shut down and destroyed before Python's exit began (core_worker_process.cc)
    if _state["ended"]:
        end_now(0)
