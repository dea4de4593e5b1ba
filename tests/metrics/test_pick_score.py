"""PickScore parity with the reference goldens (t2v_metrics PickScoreModel on PickScore_v1, fp32).

Golden keys: ``pickscore__t2v_metrics_cosine`` is our primary ``pickscore`` (bare cosine, what
t2v_metrics returns); golden ``pickscore`` = exp(logit_scale) * cosine is our ``pickscore_scaled``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from janus_ray import load_scorer
from janus_ray.errors import WeightsError

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"
# our output key -> (golden key, atol)
GOLDEN_KEYS = {
    "pickscore": ("pickscore__t2v_metrics_cosine", 1e-5),
    "pickscore_scaled": ("pickscore", 1e-4),
}


@pytest.fixture(scope="module")
def scorer(weights_root):
    return load_scorer("pickscore", weights_root)


@pytest.fixture(scope="module")
def scored_cases(parity_cases, golden):
    return [
        c
        for c in parity_cases
        if all(golden[key].get(c["case_id"]) is not None for key, _ in GOLDEN_KEYS.values())
    ]


def check_all_outputs(ids, outputs, golden):
    assert set(outputs) == set(GOLDEN_KEYS)
    report = []
    for key, (golden_key, atol) in GOLDEN_KEYS.items():
        expected = np.array([golden[golden_key][i] for i in ids])
        diff = np.abs(np.array(outputs[key]) - expected)
        worst = int(diff.argmax())
        report.append(f"{key}: max |diff| {diff.max():.3g} at {ids[worst]} (atol {atol})")
        assert diff.max() <= atol, report[-1]
    print("; ".join(report))


def test_every_case_one_by_one(scorer, scored_cases, golden):
    scorer.clear_text_cache()
    outputs = {key: [] for key in GOLDEN_KEYS}
    for case in scored_cases:
        for key, values in scorer.score_variants([IMAGES_DIR / case["image"]], [case["prompt"]]).items():
            outputs[key].extend(values)
    check_all_outputs([c["case_id"] for c in scored_cases], outputs, golden)


def test_all_cases_in_one_batch(scorer, scored_cases, golden):
    scorer.clear_text_cache()
    outputs = scorer.score_variants(
        [IMAGES_DIR / c["image"] for c in scored_cases], [c["prompt"] for c in scored_cases]
    )
    check_all_outputs([c["case_id"] for c in scored_cases], outputs, golden)


def test_token_ids_match_reference(scorer, parity_cases, golden):
    expected = golden["_tokens_pickscore_hf"]
    for case in parity_cases:
        ids = scorer.tokenize([case["prompt"]])["input_ids"][0].tolist()
        assert ids == expected[case["case_id"]], case["case_id"]


def test_padding_token_is_not_pooled(scorer):
    # PickScore_v1 pads with '!' (id 0): the pooled position must stay the first <|endoftext|>.
    tokens = scorer.tokenize(["a cat", "a ginger cat lying on the floor"])
    assert tokens["input_ids"][0].tolist()[-1] == scorer.tokenizer.pad_token_id == 0
    assert int(tokens["input_ids"][0].argmax()) == 3


def test_scaled_is_logit_scale_times_cosine(scorer, golden):
    out = scorer.score_variants([IMAGES_DIR / "astronaut.jpg"], ["an astronaut"])
    factor = float(scorer.logit_scale_exp)
    assert factor == pytest.approx(100.002960, abs=1e-5)  # value the reference notes report
    assert out["pickscore_scaled"][0] == pytest.approx(factor * out["pickscore"][0], rel=1e-6)


def test_prompt_dedup_and_cache_do_not_change_scores(scorer, parity_cases):
    by_id = {c["case_id"]: c for c in parity_cases}
    images = [IMAGES_DIR / by_id[i]["image"] for i in ("gray", "palette", "panorama")]
    prompt = by_id["gray"]["prompt"]
    long_prompt = by_id["astronaut_long"]["prompt"]
    scorer.clear_text_cache()
    separately = [scorer.score_variants([img], [prompt]) for img in images[:2]]
    scorer.clear_text_cache()
    batched = scorer.score_variants(images, [prompt, prompt, long_prompt])
    cached = scorer.score_variants(images[:1], [prompt])  # served from the cache
    for key, atol in (("pickscore", 1e-6), ("pickscore_scaled", 1e-4)):
        np.testing.assert_allclose(batched[key][:2], [s[key][0] for s in separately], rtol=0, atol=atol)
        np.testing.assert_allclose(cached[key][0], separately[0][key][0], rtol=0, atol=atol)


def test_metadata(scorer):
    meta = scorer.metadata()
    assert (meta["name"], meta["column"], meta["range"], meta["variants"]) == (
        "pickscore",
        "PickScore",
        [-1.0, 1.0],
        {"pickscore_scaled": "PickScore_scaled"},
    )
    assert scorer.score_variants([], []) == {"pickscore": [], "pickscore_scaled": []}


def test_checkpoint_with_missing_tensor_is_rejected(tmp_path, weights_root, capfd):
    folder = tmp_path / "PickScore_v1"
    shutil.copytree(weights_root / "PickScore_v1", folder)
    tensors = load_file(folder / "model.safetensors")
    tensors.pop("text_projection.weight")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="text_projection.weight"):
        load_scorer("pickscore", tmp_path)
    # transformers' own LOAD REPORT is not printed: it ends "those params were newly initialized",
    # as if scoring went on (a new user's trial read it after the run's one-line error)
    assert "LOAD REPORT" not in capfd.readouterr().err
