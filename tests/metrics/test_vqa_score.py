"""Parity of VQAScore (CLIP-FlanT5) with t2v_metrics 3.0 goldens, float32 on CPU, rtol 1e-4."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from janus_ray import load_scorer
from janus_ray.errors import ConfigError, InputError, UnknownNameError, WeightsError
from janus_ray.metrics.vqa_score import VQAScorer

RTOL = 1e-4


@pytest.fixture(scope="module")
def scorer(weights_root):
    return load_scorer("vqascore", weights_root)


@pytest.fixture(scope="module")
def scored_cases(weights_root, parity_cases, golden):
    """Cases with a non-null golden: (case_id, image path, prompt, golden score)."""
    images_dir = weights_root.parent / "images"
    return [
        (c["case_id"], images_dir / c["image"], c["prompt"], golden["vqascore"][c["case_id"]])
        for c in parity_cases
        if golden["vqascore"].get(c["case_id"]) is not None
    ]


@pytest.fixture(scope="module")
def batched(scorer, scored_cases):
    """Every case's score from one batched call (what the pipeline does)."""
    return np.array(scorer.score([c[1] for c in scored_cases], [c[2] for c in scored_cases]))


#: Cases scored one at a time in the fast tier (a single VQAScore call costs ~0.5 s on 2 CPUs even
#: with the tiny model: 576 image tokens); the slow tier scores every case one by one.
FAST_SINGLES = 2


@pytest.fixture(scope="module")
def one_by_one(scorer, scored_cases):
    return np.array([scorer.score([path], [prompt])[0] for _, path, prompt, _ in scored_cases])


def relative_report(ids, got, want) -> tuple[float, str]:
    rel = np.abs(np.asarray(got) - np.asarray(want)) / np.abs(np.asarray(want))
    worst = int(np.argmax(rel))
    return float(rel.max()), f"max rel diff {rel.max():.3e} (abs {abs(got[worst] - want[worst]):.3e}) at {ids[worst]}"


def test_metadata():
    assert (VQAScorer.name, VQAScorer.column) == ("vqascore", "VQAScore")
    assert VQAScorer.score_range == (0.0, 1.0) and VQAScorer.higher_is_better
    assert VQAScorer.cuda_dtype == "bfloat16"


def test_token_ids_match_reference(scorer, parity_cases, golden):
    expected = golden["_tokens_vqascore_t5_input"]
    for case in parity_cases:
        assert scorer.input_ids(case["prompt"]) == expected[case["case_id"]], case["case_id"]
    assert scorer.answer_ids == golden["_notes"]["vqascore"]["answer_token_ids"] == [4, 1]
    # resize_token_embeddings(len(tokenizer)): 400 sentencepiece pieces + 100 extra ids, not config's 528
    assert len(scorer.tokenizer) == scorer.vocab_rows == 500
    assert scorer.t5.lm_head.weight.shape[0] == 500


def test_slow_tokenizer_special_token_rules(scorer):
    tok = scorer.tokenizer
    sp = tok.sp
    # The slow tokenizer does not add a second </s> when the text already ends with one.
    assert tok.encode("x</s>") == [*sp.encode("x"), 1]
    # Added tokens split the text; <extra_id_N> eats the whitespace on both sides.
    assert tok.encode("a  <extra_id_0>  b") == [*sp.encode("a"), 499, *sp.encode("b"), 1]
    assert tok.encode("") == [1]


@pytest.mark.slow
def test_scores_one_by_one_match_golden(scored_cases, one_by_one):
    ids = [c[0] for c in scored_cases]
    want = np.array([c[3] for c in scored_cases])
    worst, report = relative_report(ids, one_by_one, want)
    print(f"vqascore one-by-one: {report}")
    np.testing.assert_allclose(one_by_one, want, rtol=RTOL, atol=0, err_msg=report)


def test_scores_in_one_batch_match_golden(scored_cases, batched):
    ids = [c[0] for c in scored_cases]
    want = np.array([c[3] for c in scored_cases])
    worst, report = relative_report(ids, batched, want)
    print(f"vqascore batched: {report}")
    np.testing.assert_allclose(batched, want, rtol=RTOL, atol=0, err_msg=report)


def test_a_few_singles_equal_their_batched_scores(scorer, scored_cases, batched):
    """Padding in a batch changes nothing: the first cases scored alone equal their batched scores."""
    cases = scored_cases[:FAST_SINGLES]
    singles = np.array([scorer.score([path], [prompt])[0] for _, path, prompt, _ in cases])
    _, report = relative_report([c[0] for c in cases], singles, batched[:FAST_SINGLES])
    np.testing.assert_allclose(singles, batched[:FAST_SINGLES], rtol=RTOL, atol=0, err_msg=report)


@pytest.mark.slow
def test_every_single_equals_its_batched_score(scored_cases, batched, one_by_one):
    _, report = relative_report([c[0] for c in scored_cases], batched, one_by_one)
    np.testing.assert_allclose(batched, one_by_one, rtol=RTOL, atol=0, err_msg=report)


def test_image_transform_pads_with_mean_colour_and_pickles(scorer):
    transform = pickle.loads(pickle.dumps(scorer.image_transform))
    tall = Image.new("RGB", (20, 40), (255, 0, 0))
    pixels = transform(tall)
    assert pixels.shape == (3, 336, 336) and pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, scorer.image_transform(tall))
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    fill = (np.array([122, 116, 104]) / 255 - mean) / std
    np.testing.assert_allclose(pixels[:, 168, 0], fill, rtol=0, atol=1e-6)  # left padding column
    assert pixels[0, 168, 168] > 1.5  # the red image itself in the centre


def test_prompt_with_image_placeholder_is_rejected(scorer):
    with pytest.raises(InputError, match="<image>"):
        scorer.input_ids("a cat <image> on a mat")


def test_unknown_model_option(weights_root):
    with pytest.raises(UnknownNameError, match="vqa model 'clip-flant5-xxxl'.*clip-flant5-xxl"):
        load_scorer("vqascore", weights_root, model="clip-flant5-xxxl")
    with pytest.raises(ConfigError, match="unknown option"):
        load_scorer("vqascore", weights_root, colour="blue")


def test_missing_vision_tower_folder(tmp_path, weights_root):
    (tmp_path / "clip-flant5-xxl").symlink_to(weights_root / "clip-flant5-xxl", target_is_directory=True)
    with pytest.raises(WeightsError, match="clip-vit-large-patch14-336") as info:
        load_scorer("clip-flant5-xxl", tmp_path)
    assert "openai/clip-vit-large-patch14-336" in str(info.value)


def test_float16_is_refused(weights_root):
    with pytest.raises(ConfigError, match="float16"):
        load_scorer("vqascore", weights_root, dtype="float16")


def test_bfloat16_policy_runs(weights_root, scored_cases, batched):
    """bf16 weights (T5 `wo` included) under autocast; CE in fp32. Close to fp32, not equal."""
    bf16 = load_scorer("vqascore", weights_root, dtype="bfloat16")
    assert {p.dtype for p in bf16.t5.parameters()} == {torch.bfloat16}
    assert bf16.t5.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.bfloat16
    scores = np.array(bf16.score([c[1] for c in scored_cases[:4]], [c[2] for c in scored_cases[:4]]))
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    # The score is exp(-NLL) with NLL = -log P ~ 6.6 here; bfloat16 carries 8 significant bits, so
    # the NLL from bf16 logits agrees with fp32's to bf16's relative precision 2**-8 (a score within
    # a few % of fp32), not better: that is the bf16 policy's whole error.
    nll, nll_fp32 = -np.log(scores), -np.log(batched[:4])
    assert np.all(np.abs(nll - nll_fp32) <= 2.0**-8 * nll_fp32), np.abs(nll - nll_fp32) / nll_fp32
    assert not np.array_equal(scores, batched[:4])  # it really ran in bfloat16


def test_sharded_safetensors_checkpoint_without_tower_uses_clip_folder(tmp_path, weights_root, scored_cases):
    """A save_pretrained-style checkpoint (safetensors shards, tied aliases dropped, no vision tower
    keys) loads with the tower from the CLIP folder; the fixture's two copies of the tower are equal."""
    from safetensors.torch import save_file

    source = weights_root / "clip-flant5-xxl"
    state = torch.load(source / "pytorch_model.bin", map_location="cpu", weights_only=True)
    dropped = ("vision_tower.", "encoder.embed_tokens.", "decoder.embed_tokens.", "embed_tokens.")
    state = {k: v.clone() for k, v in state.items() if not k.startswith(dropped)}
    model_dir = tmp_path / "clip-flant5-xxl"
    model_dir.mkdir()
    for name in ("config.json", "spiece.model", "tokenizer_config.json"):
        (model_dir / name).symlink_to(source / name)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(model_dir / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "clip-vit-large-patch14-336").symlink_to(weights_root / "clip-vit-large-patch14-336")

    required = {f.path.name for f in VQAScorer.required_files(tmp_path)}
    assert set(shards) <= required
    scorer = load_scorer("vqascore", tmp_path)
    cases = scored_cases[:3]
    got = np.array(scorer.score([c[1] for c in cases], [c[2] for c in cases]))
    np.testing.assert_allclose(got, [c[3] for c in cases], rtol=RTOL, atol=0)
