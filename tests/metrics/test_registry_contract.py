"""The scorer contract, checked once for every registered scorer, and the registry's names.

No Ray: scorers are plain Python objects. Each scorer is loaded once for the module.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from janus_ray import list_scorers, load_scorer
from janus_ray.errors import ConfigError, InputError, JanusRayError, UnknownNameError, WeightsError
from janus_ray.metrics import ALIASES, get_scorer_class, resolve_name, scorer_options
from janus_ray.metrics.base import Scorer

IMAGES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "images"
PATHS = [IMAGES_DIR / "astronaut.jpg", IMAGES_DIR / "chelsea.webp", IMAGES_DIR / "rocket_tall.jpg"]
PROMPTS = ["an astronaut", "a cat on a sofa", "an astronaut"]  # a repeated prompt on purpose
#: fixture image per PIL mode (the originals, opened without conversion)
MODE_FILES = {"RGBA": "chelsea_rgba.png", "L": "camera_gray.png", "P": "chelsea_palette.png"}


@pytest.fixture(scope="module", params=list_scorers())
def scorer(request, weights_root) -> Scorer:
    return load_scorer(request.param, weights_root)


def test_metadata_is_complete(scorer):
    cls = type(scorer)
    assert cls.name in list_scorers()
    assert get_scorer_class(cls.name) is cls
    assert isinstance(cls.column, str) and cls.column
    assert isinstance(cls.higher_is_better, bool)
    assert isinstance(cls.score_range, tuple) and len(cls.score_range) == 2
    low, high = cls.score_range
    if low is not None and high is not None:
        assert low < high
    assert isinstance(cls.reference, str) and cls.reference.strip()
    meta = cls.metadata()
    assert meta["name"] == cls.name and meta["column"] == cls.column
    assert meta["higher_is_better"] is cls.higher_is_better
    assert meta["range"] == list(cls.score_range)
    assert meta["reference"] == cls.reference


def test_columns_are_unique_across_scorers():
    columns = [c for name in list_scorers() for c in get_scorer_class(name).output_columns().values()]
    assert len(columns) == len(set(columns)), columns


def test_rows_in_equal_scores_out_as_floats(scorer):
    outputs = scorer.score_variants(PATHS, PROMPTS)
    assert set(outputs) == set(type(scorer).output_columns(**scorer.options))
    for key, values in outputs.items():
        assert isinstance(values, list) and len(values) == len(PATHS), key
        assert all(type(v) is float and math.isfinite(v) for v in values), (key, values)
    low, high = type(scorer).score_range
    for value in outputs[scorer.name]:
        assert low is None or value >= low
        assert high is None or value <= high
    assert scorer.score(PATHS, PROMPTS) == outputs[scorer.name]


def test_empty_input_gives_empty_lists(scorer):
    assert scorer.score([], []) == []
    variants = scorer.score_variants([], [])
    assert set(variants) == set(type(scorer).output_columns(**scorer.options))
    assert all(values == [] for values in variants.values())


def test_mismatched_lengths_raise_input_error(scorer):
    with pytest.raises(InputError, match="2 images but 1 prompts"):
        scorer.score(PATHS[:2], PROMPTS[:1])
    with pytest.raises(InputError):
        scorer.score(PATHS[:1], [])
    pixels = scorer.preprocess(PATHS[:2])
    with pytest.raises(InputError):
        scorer.score_pixels(pixels, PROMPTS[:3])


def test_image_transform_is_picklable_and_needs_no_model(scorer, weights_root):
    image = Image.open(PATHS[1])
    expected = scorer.image_transform(image)
    assert expected.dtype == np.float32 and expected.ndim == 3 and expected.shape[0] == 3
    restored = pickle.loads(pickle.dumps(scorer.image_transform))
    np.testing.assert_array_equal(restored(image), expected)
    # Built from the class alone (what the CPU decode stage does): the same pixels.
    fresh = type(scorer).build_image_transform(Path(weights_root), **scorer.options)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fresh))(image), expected)


@pytest.mark.parametrize("mode", sorted(MODE_FILES))
def test_pil_images_in_other_modes_are_accepted(scorer, mode):
    image = Image.open(IMAGES_DIR / MODE_FILES[mode])
    assert image.mode == mode
    scores = scorer.score([image, image], ["a cat", "a photo"])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert image.mode == mode  # the caller's image is not converted in place


@pytest.mark.slow  # every scorer twice over the parity images
def test_paths_and_pil_images_give_the_same_scores(scorer):
    from_paths = scorer.score(PATHS, PROMPTS)
    images = []
    for path in PATHS:
        with Image.open(path) as img:
            img.load()
            images.append(img)
    from_images = scorer.score(images, PROMPTS)
    np.testing.assert_allclose(from_images, from_paths, rtol=0, atol=1e-6)
    assert scorer.score([str(p) for p in PATHS], PROMPTS) == pytest.approx(from_paths, abs=1e-6)


# Scorers that do not validate their options (see report): a typo in an option is silently ignored.
_IGNORES_UNKNOWN_OPTIONS: set[str] = set()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason="unknown options are silently ignored"))
        if n in _IGNORES_UNKNOWN_OPTIONS
        else n
        for n in list_scorers()
    ],
)
def test_unknown_option_is_a_config_error(name, weights_root):
    with pytest.raises(ConfigError, match="no_such_option"):
        get_scorer_class(name).required_files(Path(weights_root), no_such_option=1)


# ----- names ------------------------------------------------------------------------------------
def test_unknown_scorer_name_suggests_close_ones_and_lists_all(weights_root):
    with pytest.raises(UnknownNameError) as info:
        load_scorer("clipscor", weights_root)
    message = str(info.value)
    assert "Unknown scorer 'clipscor'" in message
    assert "Did you mean 'clipscore'" in message
    for name in [*list_scorers(), *ALIASES]:
        assert name in message
    assert isinstance(info.value, JanusRayError) and isinstance(info.value, KeyError)
    assert info.value.name == "clipscor"


def test_unknown_scorer_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownNameError) as info:
        get_scorer_class("zzz")
    assert "Did you mean" not in str(info.value)
    assert "Available: " in str(info.value) and "vqascore" in str(info.value)


@pytest.mark.parametrize(
    ("alias", "scorer_name", "options"),
    [
        ("clip-flant5-xxl", "vqascore", {"model": "clip-flant5-xxl"}),
        ("openai:ViT-L-14-336", "clipscore", {}),
        ("blip2-itm", "itmscore", {}),
        ("pickscore-v1", "pickscore", {}),
    ],
)
def test_aliases_resolve_and_load(alias, scorer_name, options, weights_root):
    assert resolve_name(alias) == (scorer_name, options)
    assert scorer_options(alias) == options
    cls = get_scorer_class(alias)
    assert cls is get_scorer_class(scorer_name)
    loaded = load_scorer(alias, weights_root)
    assert type(loaded) is cls and loaded.options == options
    assert len(loaded.score(PATHS[:1], PROMPTS[:1])) == 1


def test_xl_alias_selects_the_xl_folder(weights_root):
    assert resolve_name("clip-flant5-xl") == ("vqascore", {"model": "clip-flant5-xl"})
    # The fixture root has no clip-flant5-xl/: the error must name that folder, not the xxl one.
    with pytest.raises(WeightsError, match="clip-flant5-xl/"):
        load_scorer("clip-flant5-xl", weights_root)


def test_resolve_name_returns_a_copy_of_alias_options():
    _, options = resolve_name("clip-flant5-xxl")
    options["model"] = "changed"
    assert resolve_name("clip-flant5-xxl")[1] == {"model": "clip-flant5-xxl"}
