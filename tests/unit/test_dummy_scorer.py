"""The dummy scorer: deterministic, costs on demand, faults on demand, and kept apart from the metrics."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from janus_ray.config import DEFAULT_METRICS
from janus_ray.errors import ConfigError
from janus_ray.metrics import get_scorer_class, list_scorers, load_scorer
from janus_ray.metrics.dummy import DummyScorer, hash_score


def images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("L", (30, 40), 128)]


def test_scores_are_a_deterministic_hash_of_pixels_and_prompt(tmp_path):
    scorer = load_scorer("dummy", tmp_path)  # reads no weight file
    first = scorer.score(images(), ["a", "b"])
    assert first == load_scorer("dummy", tmp_path).score(images(), ["a", "b"])
    assert all(0 <= s < 1 for s in first) and first[0] != first[1]
    assert scorer.score(images()[:1], ["another prompt"]) != first[:1]
    pixels = scorer.image_transform(images()[0])
    assert pixels.shape == (3, 16, 16) and pixels.dtype == np.float32
    assert first[0] == pytest.approx(hash_score(pixels, "a"), rel=1e-6)  # float32 on the way out


def test_it_is_a_test_scorer_not_a_metric():
    assert "dummy" not in list_scorers() and "dummy" in list_scorers(include_testing=True)
    assert "dummy" not in DEFAULT_METRICS
    assert get_scorer_class("dummy").metadata()["testing_only"] is True
    assert not any(get_scorer_class(name).testing_only for name in list_scorers())


def test_fail_on_prompt_raises_for_a_batch_holding_that_prompt(tmp_path):
    scorer = load_scorer("dummy", tmp_path, fail_on_prompt="boom")
    with pytest.raises(RuntimeError, match="fail_on_prompt 'boom' matched prompt 'a boom here'"):
        scorer.score(images(), ["fine", "a boom here"])
    assert len(scorer.score(images(), ["fine", "also fine"])) == 2


def test_sleep_s_costs_that_long_per_image(tmp_path):
    scorer = load_scorer("dummy", tmp_path, sleep_s=0.05)
    started = time.perf_counter()
    scorer.score(images(), ["a", "b"])
    assert time.perf_counter() - started >= 0.1


def test_model_mb_allocates_that_much(tmp_path):
    assert load_scorer("dummy", tmp_path, model_mb=2).weights.numel() * 4 == 2 * 2**20


@pytest.mark.slow  # a fresh interpreter importing torch: seconds of CPU
def test_die_on_prompt_ends_the_process_once_with_a_marker(tmp_path):
    marker = tmp_path / "died.txt"
    script = (
        "import sys; from PIL import Image; from janus_ray.metrics import load_scorer; "
        f"s = load_scorer('dummy', {str(tmp_path)!r}, die_on_prompt='x', die_once_file={str(marker)!r}); "
        "print(s.score([Image.new('RGB', (8, 8))], ['x marks']))"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert first.returncode == 1 and marker.read_text().startswith("killed dummy actor pid")
    # the marker now exists: a restarted actor scores the same batch
    again = load_scorer("dummy", tmp_path, die_on_prompt="x", die_once_file=str(marker))
    assert len(again.score([Image.new("RGB", (8, 8))], ["x marks"])) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": 1}, "dummy: unknown option(s) colour; accepted: image_size"),
        ({"sleep_s": -1}, "dummy: option sleep_s must be a non-negative number, got -1."),
        ({"image_size": 0}, "dummy: option image_size must be a positive integer, got 0."),
        ({"fail_on_prompt": ""}, "dummy: option fail_on_prompt must be a non-empty string, got ''."),
        ({"stall_on_prompt": "x"}, "stall_on_prompt and stall_until_file go together"),
        ({"die_once_file": "/tmp/x"}, "die_once_file needs die_on_prompt"),
    ],
)
def test_bad_options_are_rejected_with_a_precise_message(tmp_path, options, message):
    with pytest.raises(ConfigError) as info:
        DummyScorer(tmp_path, **options)
    assert message in str(info.value)
