"""Parity of ITMScore (BLIP-2 ITM P(match)) with the transformers 4.49 reference goldens."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_ray import load_scorer
from janus_ray.errors import ConfigError, WeightsError
from janus_ray.metrics.blip2_itm import ITMScorer

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"

ATOL = 1e-5
KEY = "itmscore"
LEGACY_KEY = "itm_sigmoid_diag"


@pytest.fixture(scope="module")
def scorer(weights_root):
    return load_scorer("itmscore", weights_root)


@pytest.fixture(scope="module")
def legacy_scorer(weights_root):
    return load_scorer("itmscore", weights_root, legacy_itc_sigmoid=True)


def scored_cases(parity_cases, golden, key=KEY):
    return [c for c in parity_cases if golden[key].get(c["case_id"]) is not None]


def image_path(case):
    return IMAGES_DIR / case["image"]


def assert_close(got: dict[str, float], want: dict[str, float], atol=ATOL):
    diffs = {cid: abs(got[cid] - want[cid]) for cid in want}
    worst = max(diffs, key=diffs.get)
    print(f"max abs diff {diffs[worst]:.3g} ({worst})")
    assert diffs[worst] <= atol, f"max abs diff {diffs[worst]:.3g} at {worst}; all: {diffs}"


def test_goldens_cover_every_case(parity_cases, golden):
    assert len(scored_cases(parity_cases, golden)) == len(parity_cases)
    assert len(scored_cases(parity_cases, golden, LEGACY_KEY)) == len(parity_cases)


@pytest.mark.slow  # one model call per case (the batched test checks the same goldens fast)
def test_one_by_one(scorer, parity_cases, golden):
    cases = scored_cases(parity_cases, golden)
    got = {c["case_id"]: scorer.score([image_path(c)], [c["prompt"]])[0] for c in cases}
    assert_close(got, {c["case_id"]: golden[KEY][c["case_id"]] for c in cases})


def test_one_batch(scorer, parity_cases, golden):
    cases = scored_cases(parity_cases, golden)
    outputs = scorer.score_variants([image_path(c) for c in cases], [c["prompt"] for c in cases])
    assert set(outputs) == {KEY}  # no legacy variant unless asked for
    got = dict(zip([c["case_id"] for c in cases], outputs[KEY]))
    assert_close(got, {c["case_id"]: golden[KEY][c["case_id"]] for c in cases})
    assert all(0.0 < s < 1.0 for s in outputs[KEY])


def test_token_ids(scorer, parity_cases, golden):
    reference = golden["_tokens_blip2_bert"]
    tokens = scorer.tokenize([c["prompt"] for c in parity_cases])
    for case, ids, mask in zip(parity_cases, tokens["input_ids"].tolist(), tokens["attention_mask"].tolist()):
        # padding='max_length' to 35: the golden lists the unpadded ids
        assert len(ids) == 35
        length = sum(mask)
        assert ids[:length] == reference[case["case_id"]], case["case_id"]
        assert set(ids[length:]) <= {scorer.tokenizer.pad_token_id}
        assert ids[0] == scorer.tokenizer.cls_token_id  # first token stays [CLS]
    long_case = next(i for i, c in enumerate(parity_cases) if c["case_id"] == "astronaut_long")
    assert sum(tokens["attention_mask"][long_case].tolist()) == 35  # truncated, ends with [SEP]


def reference_pixels(image: Image.Image) -> np.ndarray:
    """transformers 4.49 BlipImageProcessor maths, written out independently (after convert('RGB'))."""
    rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    scaled = (np.asarray(rgb).astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((scaled - mean) / std).transpose(2, 0, 1)


def test_pixels_match_reference_processor(weights_root, parity_cases):
    transform = pickle.loads(pickle.dumps(ITMScorer.build_image_transform(weights_root)))
    for name in sorted({c["image"] for c in parity_cases}):
        with Image.open(IMAGES_DIR / name) as img:
            img.load()
            pixels = transform(img)
            expected = reference_pixels(img)
        assert pixels.dtype == np.float32 and pixels.shape == (3, 224, 224)
        np.testing.assert_array_equal(pixels, expected, err_msg=name)


def test_rgba_alpha_is_dropped_not_composited(weights_root):
    # Fully transparent red: convert('RGB') keeps red; HF's own convert would give white.
    transform = ITMScorer.build_image_transform(weights_root)
    pixels = transform(Image.new("RGBA", (32, 32), (255, 0, 0, 0)))
    np.testing.assert_array_equal(pixels, reference_pixels(Image.new("RGB", (32, 32), (255, 0, 0))))


@pytest.mark.slow  # one model call per case (the batched test checks the same goldens fast)
def test_legacy_itc_variant(legacy_scorer, scorer, parity_cases, golden):
    assert ITMScorer.variant_columns == {}
    assert scorer.variant_columns == {}
    assert legacy_scorer.variant_columns == {LEGACY_KEY: "ITM_legacy_ITC_sigmoid"}
    cases = scored_cases(parity_cases, golden, LEGACY_KEY)
    outputs = legacy_scorer.score_variants([image_path(c) for c in cases], [c["prompt"] for c in cases])
    assert set(outputs) == {KEY, LEGACY_KEY}
    ids = [c["case_id"] for c in cases]
    assert_close(dict(zip(ids, outputs[LEGACY_KEY])), {i: golden[LEGACY_KEY][i] for i in ids})
    assert_close(dict(zip(ids, outputs[KEY])), {i: golden[KEY][i] for i in ids})
    single = {
        c["case_id"]: legacy_scorer.score_variants([image_path(c)], [c["prompt"]])[LEGACY_KEY][0] for c in cases[:4]
    }
    assert_close(single, {i: golden[LEGACY_KEY][i] for i in single})


def test_empty_batch(legacy_scorer):
    assert legacy_scorer.score_variants([], []) == {KEY: [], LEGACY_KEY: []}


def test_unknown_option_rejected(weights_root):
    with pytest.raises(ConfigError, match="legacy_itc"):
        load_scorer("itmscore", weights_root, legacy_itc=True)


def test_corrupt_weights_named(weights_root, tmp_path):
    folder = tmp_path / "blip2-itm-vit-g"
    shutil.copytree(weights_root / "blip2-itm-vit-g", folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_scorer("itmscore", tmp_path)


def test_alias(weights_root):
    from janus_ray.metrics import resolve_name

    assert resolve_name("blip2-itm") == ("itmscore", {})
    assert ITMScorer.metadata()["range"] == [0.0, 1.0] and ITMScorer.cuda_dtype == "float16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("dtype", "atol"), [("float32", 1e-4), (None, 5e-3)])
def test_cuda_precision(weights_root, parity_cases, golden, dtype, atol):
    """CUDA fp32 ~ goldens; default fp16 autocast (the reference's policy) within fp16 rounding."""
    cases = parity_cases
    cuda_scorer = load_scorer("itmscore", weights_root, device="cuda", dtype=dtype, legacy_itc_sigmoid=True)
    outputs = cuda_scorer.score_variants([image_path(c) for c in cases], [c["prompt"] for c in cases])
    ids = [c["case_id"] for c in cases]
    for key in (KEY, LEGACY_KEY):
        assert_close(dict(zip(ids, outputs[key])), {i: golden[key][i] for i in ids}, atol=atol)
