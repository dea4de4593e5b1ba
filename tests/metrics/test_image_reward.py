"""ImageReward parity with image-reward 1.5 (golden key ``imagereward``), tokens, and strict loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from janus_ray import load_scorer
from janus_ray.errors import WeightsError
from janus_ray.metrics.image_reward import ImageRewardScorer

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"
ATOL = 1e-5


@pytest.fixture(scope="module")
def scorer(weights_root):
    return load_scorer("imagereward", weights_root)


def scored_cases(parity_cases, golden, key="imagereward"):
    cases = [c for c in parity_cases if golden[key].get(c["case_id"]) is not None]
    assert cases, f"no non-null golden values under {key!r}"
    return cases


def assert_close(case_ids, scores, expected):
    diffs = {cid: abs(s - e) for cid, s, e in zip(case_ids, scores, expected)}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= ATOL, f"max |diff| {diffs[worst]:.3g} at {worst}; all: {diffs}"
    print(f"max |diff| = {diffs[worst]:.3g} ({worst})")


def test_metadata():
    assert ImageRewardScorer.name == "imagereward"
    assert ImageRewardScorer.column == "ImageReward"
    assert ImageRewardScorer.score_range == (None, None)
    assert ImageRewardScorer.higher_is_better is True
    assert ImageRewardScorer.cuda_dtype == "float32"


def test_each_case_one_by_one(scorer, parity_cases, golden):
    cases = scored_cases(parity_cases, golden)
    scores = [scorer.score([IMAGES_DIR / c["image"]], [c["prompt"]])[0] for c in cases]
    assert_close([c["case_id"] for c in cases], scores, [golden["imagereward"][c["case_id"]] for c in cases])


def test_all_cases_in_one_batch(scorer, parity_cases, golden):
    cases = scored_cases(parity_cases, golden)
    scores = scorer.score([IMAGES_DIR / c["image"] for c in cases], [c["prompt"] for c in cases])
    assert len(scores) == len(cases)
    assert_close([c["case_id"] for c in cases], scores, [golden["imagereward"][c["case_id"]] for c in cases])


def test_rgb_converted_input_matches_variant(scorer, parity_cases, golden):
    """Converting to RGB BEFORE the resize is the reference's `__variant_pil_rgb`, not its score."""
    key = "imagereward__variant_pil_rgb"
    cases = scored_cases(parity_cases, golden, key)
    images = [Image.open(IMAGES_DIR / c["image"]).convert("RGB") for c in cases]
    scores = scorer.score(images, [c["prompt"] for c in cases])
    assert_close([c["case_id"] for c in cases], scores, [golden[key][c["case_id"]] for c in cases])
    # The original-mode resize must matter for these cases (otherwise they test nothing).
    for case_id in ("palette", "rgba", "sixteen_bit"):
        assert abs(golden[key][case_id] - golden["imagereward"][case_id]) > 1e-3


def test_token_ids_match_reference(scorer, parity_cases, golden):
    expected = golden["_tokens_imagereward_bert"]
    tokens = scorer.tokenize([c["prompt"] for c in parity_cases])
    assert tokens["input_ids"].shape == (len(parity_cases), 35)
    cls_id = scorer.tokenizer.cls_token_id
    for case, ids, mask in zip(parity_cases, tokens["input_ids"], tokens["attention_mask"]):
        assert ids[mask.bool()].tolist() == expected[case["case_id"]], case["case_id"]
        assert ids[0].item() == cls_id  # [CLS] stays first: ImageReward never swaps in [ENC]
        assert (ids[~mask.bool()] == scorer.tokenizer.pad_token_id).all()


def test_blip_special_tokens(scorer):
    vocab = len(scorer.tokenizer.get_vocab()) - 2
    assert scorer.tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [vocab, vocab + 1]


def test_image_transform_is_picklable_and_keeps_original_mode(scorer):
    transform = pickle.loads(pickle.dumps(scorer.image_transform))
    palette = Image.open(IMAGES_DIR / "chelsea_palette.png")
    assert palette.mode == "P"
    pixels = transform(palette)
    assert pixels.dtype == np.float32 and pixels.shape == (3, 224, 224)
    np.testing.assert_array_equal(pixels, scorer.image_transform(palette))
    assert not np.array_equal(pixels, transform(palette.convert("RGB")))


def tmp_weights_root(weights_root: Path, tmp_path: Path, state_dict: dict) -> Path:
    """A weights root whose ImageReward.pt is ``state_dict``; every other file is a symlink."""
    root = tmp_path / "weights"
    (root / "ImageReward").mkdir(parents=True)
    for item in (weights_root / "ImageReward").iterdir():
        if item.name != "ImageReward.pt":
            (root / "ImageReward" / item.name).symlink_to(item)
    (root / "bert-base-uncased").symlink_to(weights_root / "bert-base-uncased", target_is_directory=True)
    torch.save(state_dict, root / "ImageReward" / "ImageReward.pt")
    return root


def original_state_dict(weights_root: Path) -> dict:
    return torch.load(weights_root / "ImageReward" / "ImageReward.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "removed",
    [
        "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight",
        "blip.visual_encoder.blocks.0.attn.qkv.bias",
        "mlp.layers.7.bias",
        "blip.text_proj.weight",  # unused by score() but part of the reference module
    ],
)
def test_missing_key_raises(weights_root, tmp_path, removed):
    state_dict = original_state_dict(weights_root)
    del state_dict[removed]
    root = tmp_weights_root(weights_root, tmp_path, state_dict)
    with pytest.raises(WeightsError) as info:
        load_scorer("imagereward", root)
    message = str(info.value)
    assert str(root / "ImageReward" / "ImageReward.pt") in message
    assert "missing keys (1)" in message and removed in message


def test_unexpected_key_raises(weights_root, tmp_path):
    state_dict = original_state_dict(weights_root)
    state_dict["blip.itm_head.weight"] = torch.zeros(2, 32)
    root = tmp_weights_root(weights_root, tmp_path, state_dict)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): blip\.itm_head\.weight"):
        load_scorer("imagereward", root)


def test_wrong_shape_raises(weights_root, tmp_path):
    state_dict = original_state_dict(weights_root)
    state_dict["mlp.layers.6.weight"] = torch.zeros(16, 63)
    root = tmp_weights_root(weights_root, tmp_path, state_dict)
    with pytest.raises(WeightsError, match="mlp|head"):
        load_scorer("imagereward", root)


def test_without_vision_config_expects_vit_large(weights_root, tmp_path):
    """Absent vision_config.json means BLIP ViT-L/16: the tiny fixture checkpoint then cannot load."""
    root = tmp_weights_root(weights_root, tmp_path, original_state_dict(weights_root))
    (root / "ImageReward" / "vision_config.json").unlink()
    assert ImageRewardScorer.build_image_transform(root).image_size == 224
    with pytest.raises(WeightsError, match="BLIP ViT-L/16 defaults") as info:
        load_scorer("imagereward", root)
    assert "blip.visual_encoder.blocks.10.attn.qkv.weight" in str(info.value)


def test_corrupt_checkpoint_raises(weights_root, tmp_path):
    root = tmp_weights_root(weights_root, tmp_path, {})
    (root / "ImageReward" / "ImageReward.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="ImageReward.pt"):
        load_scorer("imagereward", root)


def test_missing_weights_root(tmp_path):
    with pytest.raises(WeightsError, match="MISSING"):
        load_scorer("imagereward", tmp_path)
