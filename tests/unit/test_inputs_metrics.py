"""Prompts and checkpoints as users really have them (issue 10, cases 10 and 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from janus_ray import load_scorer
from janus_ray.errors import InputError, WeightsError

from ..conftest import IMAGES_DIR

IMAGE = IMAGES_DIR / "astronaut.jpg"


# --- case 10: ITMScore and the tokenizer's <image> token -------------------------------------------


@pytest.fixture(scope="module")
def itm(weights_root):
    return load_scorer("itmscore", weights_root)


def test_case10_itm_prompt_with_literal_image_token_fails_with_a_reason(itm):
    assert itm.tokenizer.convert_tokens_to_ids("<image>") >= itm.model.embeddings.word_embeddings.num_embeddings
    with pytest.raises(InputError, match=r"itmscore: the prompt contains '<image>', a token the text "
                                         r"embedding has no row for \(\d+ rows\): 'a photo of <image> here'"):
        itm.score([IMAGE], ["a photo of <image> here"])


@pytest.mark.parametrize("prompt", ["<image>", "two <image> <image> tokens", "A PHOTO <image>"])
def test_itm_out_of_vocabulary_prompts_fail_only_their_row_in_a_batch(itm, prompt):
    """In the pipeline a batch that raises is rescored row by row: only the bad row fails."""
    from janus_ray.actors.metric_actor import MetricActor

    actor = MetricActor.__new__(MetricActor)
    actor.scorer, actor.keys = itm, ["itmscore"]
    pixels = itm.preprocess([IMAGE, IMAGE, IMAGE]).numpy()
    prompts = np.array(["an astronaut", prompt, "a rocket"], dtype=object)
    scores = {"itmscore": np.full(3, np.nan)}
    errors = ["", "", ""]
    actor._score_rows([0, 1, 2], pixels, prompts, scores, errors)
    assert errors[0] == errors[2] == "" and "a token the text embedding has no row for" in errors[1]
    assert np.isfinite(scores["itmscore"][[0, 2]]).all() and np.isnan(scores["itmscore"][1])
    # the good rows score as they do alone
    np.testing.assert_allclose(scores["itmscore"][[0, 2]], itm.score([IMAGE, IMAGE], ["an astronaut", "a rocket"]),
                               rtol=1e-5)


def test_itm_angle_brackets_that_are_not_the_token_still_score(itm):
    assert np.isfinite(itm.score([IMAGE], ["an <img> tag and a <b>bold</b> word"])[0])


# --- case 11: any one alias of the tied embedding -----------------------------------------------------


def _checkpoint_folder(tmp_path, weights_root, keep_alias: str | None, tamper: str | None = None,
                       fmt: str = "safetensors"):
    """A clip-flant5 folder whose checkpoint keeps only ``keep_alias`` of the tied embedding."""
    from safetensors.torch import save_file

    source = weights_root / "clip-flant5-xxl"
    state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
    shared = state["shared.weight"]
    aliases = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "embed_tokens.weight")
    state = {k: v.clone() for k, v in state.items() if k not in aliases}
    if keep_alias:
        state[keep_alias] = shared.clone()
    if tamper:
        state[tamper] = shared.clone() + 1.0
    model_dir = tmp_path / "clip-flant5-xxl"
    model_dir.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json"):
        (model_dir / name).symlink_to(source / name)
    if fmt == "safetensors":
        save_file(state, str(model_dir / "model.safetensors"))
    else:
        torch.save(state, model_dir / "pytorch_model.bin")
    (tmp_path / "clip-vit-large-patch14-336").symlink_to(weights_root / "clip-vit-large-patch14-336")
    return tmp_path


@pytest.fixture(scope="module")
def vqa_reference(weights_root):
    return load_scorer("vqascore", weights_root).score([IMAGE], ["an astronaut on a horse"])[0]


def test_case11_hub_bot_safetensors_with_only_decoder_embed_tokens_loads(tmp_path, weights_root, vqa_reference):
    root = _checkpoint_folder(tmp_path, weights_root, "decoder.embed_tokens.weight")
    got = load_scorer("vqascore", root).score([IMAGE], ["an astronaut on a horse"])[0]
    assert got == pytest.approx(vqa_reference, rel=1e-6)


@pytest.mark.parametrize("alias,fmt", [("encoder.embed_tokens.weight", "safetensors"),
                                       ("embed_tokens.weight", "bin")])
def test_any_single_alias_of_the_tied_embedding_is_accepted(tmp_path, weights_root, vqa_reference, alias, fmt):
    root = _checkpoint_folder(tmp_path, weights_root, alias, fmt=fmt)
    got = load_scorer("vqascore", root).score([IMAGE], ["an astronaut on a horse"])[0]
    assert got == pytest.approx(vqa_reference, rel=1e-6)


def test_a_disagreeing_alias_is_still_refused_naming_both(tmp_path, weights_root):
    root = _checkpoint_folder(tmp_path, weights_root, "decoder.embed_tokens.weight",
                              tamper="encoder.embed_tokens.weight")
    with pytest.raises(WeightsError, match=r"(de|en)coder\.embed_tokens\.weight differs from (de|en)coder\.embed_tokens\.weight"):
        load_scorer("vqascore", root)


def test_no_embedding_at_all_is_refused(tmp_path, weights_root):
    root = _checkpoint_folder(tmp_path, weights_root, None)
    with pytest.raises(WeightsError, match=r"checkpoint has no shared\.weight"):
        load_scorer("vqascore", root)
