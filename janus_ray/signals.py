"""Ctrl-C held over the steps that must not be cut halfway (no Ray import here)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sigint_deferred(what: str, raise_as: Callable[[], BaseException] = KeyboardInterrupt,
                    stream=sys.stderr) -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block is done, then raise
    ``raise_as()``; a second Ctrl-C raises ``raise_as()`` at once (a step that hangs can still be
    stopped, and the CLI still says what was done: e.g. every result written). ``what`` ends the
    line printed at the first one: "janus-ray: stopping once {what} (Ctrl-C again to stop at once)".

    Why: Ray's start cut halfway leaves its DashboardAgent and RuntimeEnvAgent running for a
    minute (Ray had not yet registered them to stop); its shutdown cut halfway turns the
    KeyboardInterrupt into "Exception ignored in ... _remove" (raised in a gc callback, swallowed)
    and the run exits 0. Only on the main thread with Python's default SIGINT handler (the one that
    raises KeyboardInterrupt); otherwise the block runs as is.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []

    def hold(signum, frame) -> None:
        if caught:
            raise raise_as()
        caught.append(signum)
        print(f"janus-ray: stopping once {what} (Ctrl-C again to stop at once)", file=stream, flush=True)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise raise_as()
