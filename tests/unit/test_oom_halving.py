"""CUDA out-of-memory halves the metric actor's batch (down to 1) instead of a row-by-row retry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from janus_ray.actors.metric_actor import MetricActor


class FakeScorer:
    """Scores = pixel sums; any chunk larger than ``fits`` raises CUDA out-of-memory."""

    def __init__(self, fits: int):
        self.fits, self.calls = fits, []

    def score_uint8(self, pixels, prompts):
        self.calls.append(len(prompts))
        if len(prompts) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"clipscore": [float(p.sum()) for p in pixels]}


def actor(fits: int) -> MetricActor:
    obj = object.__new__(MetricActor)  # no model load
    obj.metric, obj.keys, obj.scorer = "clipscore", ["clipscore"], FakeScorer(fits)
    obj.max_batch, obj.oom_halvings = None, 0
    return obj


def test_out_of_memory_halves_the_batch_and_keeps_every_score(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    a = actor(fits=3)
    pixels = np.arange(10, dtype=np.float32).reshape(10, 1)
    out = a._score_halving_on_oom(list(range(10)), pixels, np.array(["p"] * 10))
    assert out["clipscore"] == [float(i) for i in range(10)]
    assert a.max_batch == 2 and a.oom_halvings == 2  # 10 -> 5 -> 2
    assert a.scorer.calls[:2] == [10, 5]


def test_out_of_memory_at_batch_one_is_a_row_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    a = actor(fits=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        a._score_halving_on_oom([0, 1], np.zeros((2, 1), dtype=np.float32), np.array(["p", "q"]))
    assert a.max_batch == 1
