"""The tiny parity fixtures rewritten in each REAL on-disk format (``shared/real-checkpoints.md``).

For every format two weights roots are written under ``tmp_path`` from the same tensors:

* ``real``: the published checkpoint's format (bf16 sharded ``pytorch_model-0000k-of-0000n.bin``,
  legacy ``position_ids`` buffers, old feature-extractor config, no ``tokenizer.json`` ...);
* ``rounded``: the fixture's own format with its weights rounded the way the real format stores
  them (bf16 / fp16 values kept in fp32 files), so both roots hold the same numbers.

Each scorer is loaded from both at float32 and must give the same scores: the format changes how
the files are read, never what is computed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from janus_ray import load_scorer

#: each test writes and loads a checkpoint in another on-disk format (seconds each)
pytestmark = pytest.mark.slow

PARITY = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
FIXTURE = PARITY / "weights"
IMAGES = PARITY / "images"
VQA = "clip-flant5-xxl"
CLIP = "clip-vit-large-patch14-336"
BLIP2 = "blip2-itm-vit-g"
TOWER_PREFIX = "vision_tower.vision_tower."


def cases() -> list[dict]:
    lines = (PARITY / "cases.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()][:6]


def rounded(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors rounded to ``dtype`` and stored back in their own dtype (fp32)."""
    return {k: v.to(dtype).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


def cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def copy_root(target: Path) -> Path:
    shutil.copytree(FIXTURE, target)
    return target


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def vqa_state() -> dict[str, torch.Tensor]:
    """The fixture CLIP-FlanT5 state_dict with the vision tower inside, as the published checkpoint."""
    state = torch.load(FIXTURE / VQA / "pytorch_model.bin", map_location="cpu", weights_only=True)
    if not any(k.startswith(TOWER_PREFIX) for k in state):
        vision = load_file(FIXTURE / CLIP / "model.safetensors")
        state.update({TOWER_PREFIX + k: v for k, v in vision.items() if k.startswith("vision_model.")})
    return state


# ----- writers of the real formats -----------------------------------------------------------------
def write_vqa_real(root: Path, state: dict[str, torch.Tensor]) -> None:
    """bf16 sharded pytorch_model-0000k-of-0000n.bin + index, transformers 4.31 config and tokenizer."""
    folder = root / VQA
    (folder / "pytorch_model.bin").unlink()
    (folder / "added_tokens.json").unlink(missing_ok=True)
    state = cast(state, torch.bfloat16)
    shared = state["shared.weight"]
    state.pop("embed_tokens.weight", None)  # DeepSpeed's 16-bit gather skips the duplicate module
    state["encoder.embed_tokens.weight"] = state["decoder.embed_tokens.weight"] = shared
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for k, shard_names in enumerate(shards, start=1):
        shard = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
        torch.save({n: state[n] for n in shard_names}, folder / shard)
        weight_map.update({n: shard for n in shard_names})
    write_json(folder / "pytorch_model.bin.index.json", {"metadata": {"total_size": 0}, "weight_map": weight_map})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="t5", torch_dtype="bfloat16", transformers_version="4.31.0")
    write_json(folder / "config.json", config)
    tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in ("added_tokens_decoder", "legacy", "extra_special_tokens"):
        tok.pop(key, None)
    write_json(folder / "tokenizer_config.json", tok)


def write_clip_real(root: Path) -> None:
    """pytorch_model.bin only (fp32) with legacy position_ids; old integer-size feature-extractor config."""
    folder = root / CLIP
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    text_positions = config["text_config"].get("max_position_embeddings", 77)
    vision = config["vision_config"]
    vision_positions = (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    state["text_model.embeddings.position_ids"] = torch.arange(text_positions).expand((1, -1)).clone()
    state["vision_model.embeddings.position_ids"] = torch.arange(vision_positions).expand((1, -1)).clone()
    torch.save(state, folder / "pytorch_model.bin")
    # The legacy full-dict config era: *_config_dict beside the resolved dicts, quick_gelu spelled out.
    config["text_config_dict"] = {**config["text_config"], "hidden_act": "quick_gelu"}
    config["vision_config_dict"] = {**config["vision_config"], "hidden_act": "quick_gelu"}
    config["transformers_version"] = "4.21.0.dev0"
    write_json(folder / "config.json", config)
    pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    legacy = {
        "crop_size": pre["crop_size"]["height"],
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": pre["image_mean"],
        "image_std": pre["image_std"],
        "resample": 3,
        "size": pre["size"]["shortest_edge"],
    }
    write_json(folder / "preprocessor_config.json", legacy)


def write_hps(root: Path, dtype_on_disk: torch.dtype, *, real: bool) -> None:
    for name in ("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt"):
        path = root / "HPSv2" / name
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        new = cast(state, torch.float16) if real else rounded(cast(state, torch.float32), torch.float16)
        torch.save({"state_dict": new}, path)


def write_imagereward(root: Path, *, real: bool) -> None:
    path = root / "ImageReward" / "ImageReward.pt"
    state = {k: v.float() if v.is_floating_point() else v for k, v in torch.load(path, weights_only=True).items()}
    key = "blip.text_encoder.embeddings.position_ids"
    if real:
        med = json.loads((root / "ImageReward" / "med_config.json").read_text(encoding="utf-8"))
        state.setdefault(key, torch.arange(med["max_position_embeddings"]).expand((1, -1)).clone())
    else:
        state.pop(key, None)
    torch.save(state, path)


# ----- the two roots -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("formats")
    real, reference = copy_root(base / "real"), copy_root(base / "rounded")
    state = vqa_state()
    write_vqa_real(real, state)
    # The rounded reference keeps the fixture's single fp32 pytorch_model.bin.
    torch.save(rounded(state, torch.bfloat16), reference / VQA / "pytorch_model.bin")
    write_clip_real(real)
    (real / BLIP2 / "tokenizer.json").unlink()
    write_hps(real, torch.float16, real=True)
    write_hps(reference, torch.float16, real=False)
    write_imagereward(real, real=True)
    write_imagereward(reference, real=False)
    return real, reference


def scores(name: str, root: Path) -> dict[str, np.ndarray]:
    scorer = load_scorer(name, root, device="cpu", dtype="float32")
    chosen = cases()
    out = scorer.score_variants([IMAGES / c["image"] for c in chosen], [c["prompt"] for c in chosen])
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("name", ["vqascore", "clipscore", "itmscore", "hpsv2", "hpsv2.1", "imagereward"])
def test_real_format_scores_like_the_fixture_format(roots, name):
    real, reference = roots
    got, expected = scores(name, real), scores(name, reference)
    assert set(got) == set(expected)
    for key in expected:
        assert np.isfinite(expected[key]).all()
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-7, err_msg=f"{name}:{key}")


def test_real_vqa_format_is_what_the_checkpoint_notes_say(roots):
    """The written variant really is the published layout (so the test above tests that layout)."""
    real, _ = roots
    folder = real / VQA
    assert not (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists()
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text(encoding="utf-8"))["weight_map"]
    assert sorted(set(index.values())) == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    assert "embed_tokens.weight" not in index and any(k.startswith(TOWER_PREFIX) for k in index)
    shard = torch.load(folder / "pytorch_model-00001-of-00002.bin", weights_only=True)
    assert {v.dtype for v in shard.values() if v.is_floating_point()} == {torch.bfloat16}
    assert json.loads((folder / "config.json").read_text())["model_type"] == "t5"
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert "added_tokens_decoder" not in tok and "legacy" not in tok
    assert not (real / CLIP / "model.safetensors").exists()
    assert json.loads((real / CLIP / "preprocessor_config.json").read_text())["size"] == 336
    assert not (real / BLIP2 / "tokenizer.json").exists()


def test_vqa_tower_from_the_legacy_clip_folder(tmp_path):
    """A CLIP-FlanT5 checkpoint without tower keys takes the tower from the CLIP folder: the legacy
    ``pytorch_model.bin`` with ``position_ids`` buffers must give the fixture safetensors' scores."""
    real, reference = copy_root(tmp_path / "real"), copy_root(tmp_path / "rounded")
    without_tower = {k: v for k, v in vqa_state().items() if not k.startswith(TOWER_PREFIX)}
    for root in (real, reference):
        torch.save(without_tower, root / VQA / "pytorch_model.bin")
    write_clip_real(real)
    got, expected = scores("vqascore", real), scores("vqascore", reference)
    np.testing.assert_allclose(got["vqascore"], expected["vqascore"], rtol=0, atol=1e-9)
