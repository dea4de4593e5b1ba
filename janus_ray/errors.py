"""Exceptions with precise, user-facing messages (never bare asserts)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class JanusRayError(Exception):
    """Base class of every error janus_ray raises on purpose."""


def actors_load_error(class_name: str, detail: str) -> JanusRayError:
    """The error an actor raised while loading its model, rebuilt on the driver from its class name
    and text (Ray or the result rows carry only text): that class when it is a janus-ray error,
    else ``JanusRayError``; the message says where it was raised."""
    cls = globals().get(class_name)
    cls = cls if isinstance(cls, type) and issubclass(cls, JanusRayError) else JanusRayError
    return cls(f"{detail.strip().rstrip('.')} (raised while the actors loaded their models).")


class UnknownNameError(JanusRayError, KeyError):
    """A user-facing name (metric, scorer, option value) that is not registered."""

    def __init__(self, kind: str, name: str, available: Iterable[str]):
        self.kind, self.name, self.available = kind, name, sorted(available)
        super().__init__(unknown_name_message(kind, name, self.available))

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, available: Iterable[str]) -> str:
    """'unknown <kind> 'x'; did you mean 'y'? available: a, b, c'."""
    available = sorted(available)
    # compared in lower case: 'HPSv2' or 'VQAScore' (the CSV's spelling) should point at 'hpsv2' / 'vqascore'
    lowered = {a.lower(): a for a in reversed(available)}
    close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.5)]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}.{hint} Available: {', '.join(available)}."


class WeightsError(JanusRayError, FileNotFoundError):
    """A weight file is missing or unreadable; the message names the path and the expected layout."""


class ConfigError(JanusRayError, ValueError):
    """Invalid configuration (bad flag combination, bad value)."""


class InputError(JanusRayError, ValueError):
    """Invalid input data: folders, prompt files, manifests."""


class ResultsNotWritten(JanusRayError, OSError):
    """A result file of a scored run could not be written (e.g. an immutable summary.csv in a
    writable folder, which the check before the run cannot see); the message names the file, the
    reason and where the scores are kept."""


class InterruptedAfterWrite(KeyboardInterrupt):
    """Ctrl-C once every result file of the run was written (while the embedded Ray shut down):
    nothing is lost; ``output_root`` holds the results; ``then``: the Future of ``evaluate``'s
    follow-up (the CLI's report), already running, or None."""

    def __init__(self, output_root: str, then=None):
        super().__init__(output_root)
        self.output_root, self.then = output_root, then


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while scoring: ``rows_received`` result rows reached the resume cache in ``cache_dir``
    before it (a KeyboardInterrupt, so that whatever does not know this class still stops)."""

    def __init__(self, rows_received: int, cache_dir: str):
        super().__init__(rows_received, cache_dir)
        self.rows_received, self.cache_dir = rows_received, cache_dir
