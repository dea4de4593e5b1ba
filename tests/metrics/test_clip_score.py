"""CLIPScore parity with the reference goldens (transformers 4.49 CLIPModel + CLIPProcessor, fp32)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from janus_ray import load_scorer
from janus_ray.errors import ConfigError, WeightsError

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"
ATOL = 1e-5


@pytest.fixture(scope="module")
def scorer(weights_root):
    return load_scorer("clipscore", weights_root)


@pytest.fixture(scope="module")
def scored_cases(parity_cases, golden):
    return [c for c in parity_cases if golden["clipscore"].get(c["case_id"]) is not None]


def check_close(ids, got, golden_scores, atol=ATOL):
    expected = np.array([golden_scores[i] for i in ids])
    diff = np.abs(np.array(got) - expected)
    worst = int(diff.argmax())
    assert diff.max() <= atol, f"max |diff| {diff.max():.3g} at {ids[worst]} (atol {atol})"
    print(f"max |diff| = {diff.max():.3g} ({ids[worst]})")


@pytest.mark.slow  # one model call per case (the batched test checks the same goldens fast)
def test_every_case_one_by_one(scorer, scored_cases, golden):
    scorer.clear_text_cache()
    got = [scorer.score([IMAGES_DIR / c["image"]], [c["prompt"]])[0] for c in scored_cases]
    check_close([c["case_id"] for c in scored_cases], got, golden["clipscore"])


def test_all_cases_in_one_batch(scorer, scored_cases, golden):
    scorer.clear_text_cache()
    got = scorer.score([IMAGES_DIR / c["image"] for c in scored_cases], [c["prompt"] for c in scored_cases])
    check_close([c["case_id"] for c in scored_cases], got, golden["clipscore"])


def test_token_ids_match_reference(scorer, parity_cases, golden):
    expected = golden["_tokens_clip_hf"]
    for case in parity_cases:
        ids = scorer.tokenize([case["prompt"]])["input_ids"][0].tolist()
        assert ids == expected[case["case_id"]], case["case_id"]


def test_prompt_dedup_and_cache_do_not_change_scores(scorer, parity_cases):
    by_id = {c["case_id"]: c for c in parity_cases}
    images = [IMAGES_DIR / by_id[i]["image"] for i in ("astronaut_caption", "coffee_caption", "tiny")]
    prompt = by_id["astronaut_caption"]["prompt"]
    long_prompt = by_id["astronaut_long"]["prompt"]
    scorer.clear_text_cache()
    separately = [scorer.score([img], [prompt])[0] for img in images[:2]]
    scorer.clear_text_cache()
    # same prompt twice in one batch, next to a longer one (forces padding of the short prompt)
    batched = scorer.score(images, [prompt, prompt, long_prompt])
    alone_long = scorer.score([images[2]], [long_prompt])[0]  # now served from the cache
    np.testing.assert_allclose(batched[:2], separately, rtol=0, atol=1e-6)
    assert batched[0] != batched[1]  # different images, same text row
    scorer.clear_text_cache()
    np.testing.assert_allclose(alone_long, scorer.score([images[2]], [long_prompt])[0], rtol=0, atol=1e-6)


def test_text_cache_is_bounded(weights_root):
    small = load_scorer("clipscore", weights_root, text_cache_size=2)
    small.score([IMAGES_DIR / "tiny_17x9.png"] * 3, ["a", "b", "c"])
    assert list(small._text_cache) == ["b", "c"]


def test_image_transform_is_picklable_and_matches(scorer):
    from PIL import Image

    clone = pickle.loads(pickle.dumps(scorer.image_transform))
    with Image.open(IMAGES_DIR / "chelsea_rgba.png") as img:
        img.load()
        pixels = clone(img)
    assert pixels.dtype == np.float32 and pixels.shape == (3, 336, 336)
    np.testing.assert_array_equal(pixels, scorer.image_transform(img))


def test_metadata(scorer):
    meta = scorer.metadata()
    assert (meta["name"], meta["column"], meta["range"], meta["higher_is_better"]) == (
        "clipscore",
        "CLIPScore",
        [-1.0, 1.0],
        True,
    )
    assert scorer.score_variants([], []) == {"clipscore": []}


def test_missing_weights_and_bad_options(tmp_path, weights_root):
    with pytest.raises(WeightsError, match="clip-vit-large-patch14-336"):
        load_scorer("clipscore", tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        load_scorer("clipscore", weights_root, bogus=1)
