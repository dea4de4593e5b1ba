"""A Ray Data actor holding a scorer ends without Python's teardown once Ray Data releases it."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path

import pytest

from janus_ray.actors.fused_stage import FusedStage

pytestmark = pytest.mark.ray


def _touch(path: str) -> None:
    Path(path).write_text(str(os.getpid()), encoding="utf-8")


class _MarkedFused(FusedStage):
    """FusedStage (dummy metric) that leaves a file from an atexit hook registered before the
    stages' quick-exit hook (so it would run after it: only in Python's normal exit) and one from a
    hook registered after it (run before it, in either case). Returns its batches unchanged."""

    def __init__(self, marker_dir: str, weights_root: str):
        atexit.register(_touch, os.path.join(marker_dir, "normal-exit"))
        spec = {"scorer": "dummy", "weights_root": weights_root, "options": {}}
        super().__init__(decode={"metrics": {"dummy": spec}, "max_pixels": None},
                         metrics=[{"metric": "dummy", "device": "cpu", "dtype": None, **spec}], torch_threads=1)
        atexit.register(_touch, os.path.join(marker_dir, "atexit-ran"))
        _touch(os.path.join(marker_dir, "pid"))

    def __call__(self, batch):
        return batch


def test_a_released_actor_skips_the_interpreter_teardown_after_the_atexit_hooks(local_ray, tmp_path):
    ray = local_ray
    markers = tmp_path / "markers"
    markers.mkdir()
    ds = ray.data.range(4).map_batches(_MarkedFused, batch_size=2, compute=ray.data.ActorPoolStrategy(size=1),
                                       fn_constructor_kwargs={"marker_dir": str(markers), "weights_root": str(tmp_path)})
    assert sorted(row["id"] for row in ds.take_all()) == [0, 1, 2, 3]
    pid = int((markers / "pid").read_text())
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the actor process {pid} did not exit within 60 s of the dataset's end")
    assert (markers / "atexit-ran").read_text() == str(pid)  # a normal atexit path: hooks registered later ran
    assert not (markers / "normal-exit").exists()  # ... and the process ended there, before the teardown
