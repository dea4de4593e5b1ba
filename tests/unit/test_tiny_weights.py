"""The package's own tiny weights root: real formats, every scorer loads it, deterministic."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from janus_ray.metrics import list_scorers, load_scorer
from janus_ray.tiny_weights import MARKER, clip_bpe, corpus_words, write_tiny_weights_root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_tiny_weights_root(tmp_path_factory.mktemp("tiny") / "weights")


def test_every_scorer_loads_and_scores_the_tiny_root(tiny_root):
    image = Image.new("RGB", (120, 90), (200, 30, 40))
    for name in list_scorers():
        scorer = load_scorer(name, tiny_root)
        scores = scorer.score([image, image], ["a red circle", "two cats on a sofa"])
        assert len(scores) == 2 and all(torch.isfinite(torch.tensor(scores))), name


def test_files_are_in_the_published_formats(tiny_root):
    hps = torch.load(tiny_root / "HPSv2" / "HPS_v2_compressed.pt", weights_only=True)
    assert set(hps) == {"state_dict"} and {t.dtype for t in hps["state_dict"].values()} == {torch.float16}
    reward = torch.load(tiny_root / "ImageReward" / "ImageReward.pt", weights_only=True)
    assert "blip.text_encoder.embeddings.position_ids" in reward and "mlp.layers.0.weight" in reward
    vqa = torch.load(tiny_root / "clip-flant5-xxl" / "pytorch_model.bin", weights_only=True)
    assert vqa["shared.weight"].dtype == torch.bfloat16
    # one tied embedding under three names; lm_head is its own tensor
    assert vqa["encoder.embed_tokens.weight"].data_ptr() == vqa["shared.weight"].data_ptr()
    assert not torch.equal(vqa["lm_head.weight"], vqa["shared.weight"])
    assert any(k.startswith("vision_tower.vision_tower.vision_model.") for k in vqa)
    config = json.loads((tiny_root / "clip-flant5-xxl" / "config.json").read_text())
    assert config["vocab_size"] == vqa["lm_head.weight"].shape[0] and config["model_type"] == "t5"
    assert not (tiny_root / "blip2-itm-vit-g" / "tokenizer.json").exists()  # as the published folder


def test_same_seed_same_bytes_other_seed_other_numbers(tiny_root, tmp_path):
    again = write_tiny_weights_root(tmp_path / "again")
    first = json.loads((tiny_root / MARKER).read_text())["sha256"]
    assert json.loads((again / MARKER).read_text())["sha256"] == first
    other = write_tiny_weights_root(tmp_path / "other", seed=1)
    changed = json.loads((other / MARKER).read_text())["sha256"]
    assert changed["clip-vit-large-patch14-336/model.safetensors"] != first["clip-vit-large-patch14-336/model.safetensors"]
    assert changed["clip-vit-large-patch14-336/vocab.json"] == first["clip-vit-large-patch14-336/vocab.json"]


def test_an_existing_root_with_the_same_seed_is_reused(tiny_root):
    weights = tiny_root / "PickScore_v1" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    write_tiny_weights_root(tiny_root)
    assert weights.stat().st_mtime_ns == before


def test_clip_bpe_layout_puts_endoftext_last_and_merges_in_vocab():
    vocab, merges = clip_bpe(corpus_words(), n_merges=50)
    assert max(vocab.values()) == vocab["<|endoftext|>"] == len(vocab) - 1
    assert vocab["!"] == 0  # PickScore pads with '!' = id 0
    assert all(a + b in vocab for a, b in merges)
