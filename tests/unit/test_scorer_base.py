"""The base scorer's shared plumbing: option checking, autocast, the text-feature cache."""

from __future__ import annotations

import pytest
import torch

from janus_ray.errors import ConfigError
from janus_ray.metrics import get_scorer_class, list_scorers, load_scorer
from janus_ray.metrics.base import TextFeatureCache


def test_every_scorer_declares_its_options_and_fills_defaults():
    assert get_scorer_class("clipscore").check_options({}) == {"text_cache_size": 4096}
    assert get_scorer_class("itmscore").check_options({}) == {"legacy_itc_sigmoid": False}
    assert get_scorer_class("vqascore").check_options({}) == {"model": "clip-flant5-xxl", "attn_implementation": "eager"}
    assert get_scorer_class("imagereward").check_options({}) == {"checkpoint": None}
    assert get_scorer_class("hpsv2").check_options({}) == {}
    for name in list_scorers():
        with pytest.raises(ConfigError, match=f"{name}: unknown option\\(s\\) typo; accepted: "):
            get_scorer_class(name).check_options({"typo": 1})


def test_a_bad_option_value_names_the_option_and_what_it_must_be():
    with pytest.raises(ConfigError, match=r"clipscore: option text_cache_size must be a non-negative integer, got -1\."):
        get_scorer_class("clipscore").check_options({"text_cache_size": -1})
    with pytest.raises(ConfigError, match=r"itmscore: option legacy_itc_sigmoid must be True or False, got 'yes'\."):
        get_scorer_class("itmscore").check_options({"legacy_itc_sigmoid": "yes"})


def test_instances_keep_the_given_options_and_the_checked_settings(tmp_path):
    scorer = load_scorer("dummy", tmp_path, sleep_s=0)
    assert scorer.options == {"sleep_s": 0} and scorer.settings["image_size"] == 16


def test_autocast_only_for_a_reduced_dtype(tmp_path):
    with load_scorer("dummy", tmp_path, dtype="float32").autocast():
        assert not torch.is_autocast_enabled("cpu")
    with load_scorer("dummy", tmp_path, dtype="bfloat16").autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_text_feature_cache_encodes_each_distinct_prompt_once_and_stays_bounded():
    calls: list[list[str]] = []

    def encode(prompts: list[str]) -> torch.Tensor:
        calls.append(list(prompts))
        return torch.tensor([[float(len(p)), float(ord(p[0]))] for p in prompts])

    cache = TextFeatureCache(encode, size=2)
    rows = cache(["ab", "c", "ab"])
    assert calls == [["ab", "c"]] and rows.tolist() == [[2, 97], [1, 99], [2, 97]]
    assert cache(["c", "dd"]).tolist() == [[1, 99], [2, 100]] and calls[-1] == ["dd"]
    assert list(cache) == ["c", "dd"]  # least recently used ("ab") evicted
    uncached = TextFeatureCache(encode, size=0)
    uncached(["x"])
    assert len(uncached) == 0


def test_normalise_arrays_into_a_reused_buffer_equals_a_fresh_batch_and_refuses_mixed_shapes():
    import numpy as np

    from janus_ray.metrics.base import PixelBuffer
    from tests.conftest import WEIGHTS_ROOT

    transform = get_scorer_class("pickscore").build_image_transform(WEIGHTS_ROOT)
    rng = np.random.default_rng(0)
    big = [rng.integers(0, 256, (3, 224, 224), dtype=np.uint8) for _ in range(5)]
    small = big[:2][::-1]
    expected = {n: torch.cat([transform.normalise(torch.from_numpy(a)[None]) for a in batch])
                for n, batch in (("big", big), ("small", small))}
    buffer = PixelBuffer()
    first = transform.normalise_arrays(big, "cpu", buffer)
    assert torch.equal(first, expected["big"])
    second = transform.normalise_arrays(small, "cpu", buffer)  # a smaller batch reuses the storage
    assert torch.equal(second, expected["small"]) and second.data_ptr() == first.data_ptr()
    assert torch.equal(transform.normalise_arrays(big, "cpu"), expected["big"])  # no buffer: a fresh tensor
    with pytest.raises(ValueError, match=r"normalise_arrays: image 1 gives pixels of shape \(3, 224, 224\), "
                                         r"image 0 \(3, 112, 112\); a batch needs one shape"):
        transform.normalise_arrays([big[0][:, :112, :112].copy(), big[1]], "cpu")
