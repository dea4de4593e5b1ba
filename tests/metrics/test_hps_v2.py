"""Parity of HPSv2 / HPSv2.1 with hpsv2 1.2.0 on the tiny fixture checkpoints (fp32, CPU)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_ray import load_scorer
from janus_ray.errors import WeightsError
from janus_ray.metrics.hps_v2 import ARCHITECTURE, HPSv2Scorer, HPSv21Scorer, load_model_config

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"

ATOL = 1e-5
VERSIONS = ["hpsv2", "hpsv2.1"]
#: cases where the reference raises (primary golden null): rgba is compared with the reference run
#: on the RGB-converted image (what we compute), hps224 only has to be finite (the reference crashes).
RGB_VARIANT_CASES = {"rgba"}
FINITE_ONLY_CASES = {"hps224"}


@pytest.fixture(scope="module", params=VERSIONS)
def scorer(request, weights_root):
    return load_scorer(request.param, weights_root)


def expected_scores(name: str, cases: list[dict], golden: dict) -> dict[str, float | None]:
    """case_id -> the golden to match, or None where only finiteness is checked."""
    expected = {}
    for case in cases:
        case_id = case["case_id"]
        if golden[name][case_id] is not None:
            expected[case_id] = golden[name][case_id]
        elif case_id in RGB_VARIANT_CASES:
            expected[case_id] = golden[f"{name}__variant_pil_rgb"][case_id]
        else:
            assert case_id in FINITE_ONLY_CASES, f"{name}: unexpected null golden for {case_id}"
            expected[case_id] = None
    return expected


def check_against_golden(name, cases, scores, golden):
    expected = expected_scores(name, cases, golden)
    diffs = {}
    for case, score in zip(cases, scores):
        assert math.isfinite(score), f"{name} {case['case_id']}: non-finite score {score}"
        if expected[case["case_id"]] is not None:
            diffs[case["case_id"]] = abs(score - expected[case["case_id"]])
    worst = max(diffs, key=diffs.get)
    message = f"{name}: max |diff| {diffs[worst]:.3e} at {worst}; all: {diffs}"
    print(message)
    assert diffs[worst] <= ATOL, message
    assert len(diffs) == len(cases) - len(FINITE_ONLY_CASES)


def test_parity_one_by_one(scorer, parity_cases, golden):
    scores = [scorer.score([IMAGES_DIR / c["image"]], [c["prompt"]])[0] for c in parity_cases]
    check_against_golden(scorer.name, parity_cases, scores, golden)


def test_parity_one_batch(scorer, parity_cases, golden):
    scores = scorer.score([IMAGES_DIR / c["image"] for c in parity_cases], [c["prompt"] for c in parity_cases])
    check_against_golden(scorer.name, parity_cases, scores, golden)


def test_token_ids_match_open_clip_reference(scorer, parity_cases, golden):
    reference = golden["_tokens_hpsv2_open_clip"]
    tokens = scorer.tokenize([c["prompt"] for c in parity_cases])
    assert tokens.shape == (len(parity_cases), 77)
    for case, row in zip(parity_cases, tokens.tolist()):
        length = sum(1 for t in row if t != 0)
        assert row[:length] == reference[case["case_id"]], case["case_id"]
        assert all(t == 0 for t in row[length:])
    # '&amp;' is HTML-unescaped to '&' (open_clip, unlike HF's fast CLIP tokenizer)
    assert scorer.tokenize(["Tom &amp; Jerry"]).tolist() == scorer.tokenize(["Tom & Jerry"]).tolist()


def test_hps224_is_letterboxed_to_square(scorer):
    """The reference skips the padding when the longest side is 224 and crashes; we pad."""
    image = Image.open(IMAGES_DIR / "astronaut_224x150.png")
    assert max(image.size) == 224 and image.size[0] != image.size[1]
    pixels = scorer.image_transform(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    black = (-np.array(scorer.image_transform.mean) / np.array(scorer.image_transform.std)).astype(np.float32)
    pad_rows = (224 - image.size[1]) // 2
    np.testing.assert_allclose(pixels[:, :pad_rows, :], np.broadcast_to(black[:, None, None], (3, pad_rows, 224)))
    np.testing.assert_allclose(pixels[:, -pad_rows:, :], np.broadcast_to(black[:, None, None], (3, pad_rows, 224)))


def test_transform_pads_black_left_top_smaller_half(scorer):
    image = Image.open(IMAGES_DIR / "panorama_strip.png")  # 600x48 -> 224x18, pad 206 rows: 103 / 103
    pixels = scorer.image_transform(image)
    assert pixels.shape == (3, 224, 224)
    black = -np.array(scorer.image_transform.mean) / np.array(scorer.image_transform.std)
    new_height = round(48 * 224 / 600)
    top = (224 - new_height) // 2
    assert np.allclose(pixels[:, :top], black[:, None, None], atol=1e-6)
    assert np.allclose(pixels[:, top + new_height :], black[:, None, None], atol=1e-6)
    assert not np.allclose(pixels[:, top], black[:, None], atol=1e-6)


def test_rgba_scored_as_rgb(scorer):
    rgba = Image.open(IMAGES_DIR / "chelsea_rgba.png")
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(scorer.image_transform(rgba), scorer.image_transform(rgba.convert("RGB")))


def test_transform_is_picklable(scorer):
    image = Image.open(IMAGES_DIR / "coffee_wide.png")
    clone = pickle.loads(pickle.dumps(scorer.image_transform))
    np.testing.assert_array_equal(clone(image), scorer.image_transform(image))


def test_text_encoded_once_per_unique_prompt_and_cached(scorer, monkeypatch):
    encoded: list[int] = []
    original = scorer.model.encode_text

    def spy(tokens, normalize=False):
        encoded.append(tokens.shape[0])
        return original(tokens, normalize=normalize)

    monkeypatch.setattr(scorer.model, "encode_text", spy)
    scorer._text_cache.clear()
    image = IMAGES_DIR / "astronaut.jpg"
    prompts = ["a cat", "a dog", "a cat", "a cat"]
    first = scorer.score([image] * 4, prompts)
    assert encoded == [2]
    assert first[0] == first[2] == first[3]
    second = scorer.score([image] * 2, ["a dog", "a cat"])
    assert encoded == [2]  # both cached
    assert second == pytest.approx([first[1], first[0]], abs=1e-7)


def test_metadata_and_precision_policy():
    assert (HPSv2Scorer.name, HPSv2Scorer.column) == ("hpsv2", "HPSv2Score")
    assert (HPSv21Scorer.name, HPSv21Scorer.column) == ("hpsv2.1", "HPSv2.1Score")
    for cls in (HPSv2Scorer, HPSv21Scorer):
        assert cls.higher_is_better and cls.score_range == (-1.0, 1.0) and cls.cuda_dtype == "float16"


def test_versions_load_different_checkpoints(weights_root):
    assert HPSv2Scorer.checkpoint_path(weights_root).name == "HPS_v2_compressed.pt"
    assert HPSv21Scorer.checkpoint_path(weights_root).name == "HPS_v2.1_compressed.pt"


def test_default_architecture_is_vit_h_14_without_config(tmp_path):
    config = load_model_config(tmp_path, "hpsv2")
    assert config["vision_cfg"]["layers"] == 32 and config["text_cfg"]["layers"] == 24
    assert not config.get("quick_gelu", False), f"{ARCHITECTURE} of HPS uses plain GELU"


def test_strict_loading_rejects_missing_keys(weights_root, tmp_path):
    folder = tmp_path / "HPSv2"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((weights_root / "HPSv2" / "open_clip_config.json").read_bytes())
    state_dict = torch.load(weights_root / "HPSv2" / "HPS_v2_compressed.pt", weights_only=True)["state_dict"]
    state_dict.pop("text_projection")
    torch.save({"state_dict": state_dict}, folder / "HPS_v2_compressed.pt")
    with pytest.raises(WeightsError, match=r"(?s)HPS_v2_compressed\.pt.*Missing key.*text_projection"):
        load_scorer("hpsv2", tmp_path)


def test_module_prefixed_checkpoint_loads(weights_root, tmp_path):
    folder = tmp_path / "HPSv2"
    folder.mkdir()
    (folder / "open_clip_config.json").write_bytes((weights_root / "HPSv2" / "open_clip_config.json").read_bytes())
    state_dict = torch.load(weights_root / "HPSv2" / "HPS_v2_compressed.pt", weights_only=True)["state_dict"]
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, folder / "HPS_v2_compressed.pt")
    reference = load_scorer("hpsv2", weights_root).score([IMAGES_DIR / "tiny_17x9.png"], ["a tiny picture"])
    assert load_scorer("hpsv2", tmp_path).score([IMAGES_DIR / "tiny_17x9.png"], ["a tiny picture"]) == reference


def test_float16_autocast_rounds_like_reference_amp(weights_root, parity_cases, golden):
    """dtype float16 = the reference's CUDA autocast (here on CPU): fp16-valued, ~1e-3 off fp32."""
    half = load_scorer("hpsv2", weights_root, dtype="float16")
    assert half.dtype == torch.float16
    assert next(half.model.parameters()).dtype == torch.float32  # weights stay fp32, as in the reference
    cases = [c for c in parity_cases if golden["hpsv2"][c["case_id"]] is not None]
    scores = half.score([IMAGES_DIR / c["image"] for c in cases], [c["prompt"] for c in cases])
    for case, score in zip(cases, scores):
        assert float(np.float16(score)) == score, "the final dot product runs in fp16 under autocast"
        assert score == pytest.approx(golden["hpsv2"][case["case_id"]], abs=2e-3), case["case_id"]
