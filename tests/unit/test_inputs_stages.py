"""Inputs that used to kill a run (issue 10, cases 1, 7, 8, 9), tested on the stages without Ray."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from janus_ray.actors import decode_stage as decode_module
from janus_ray.actors.decode_stage import DecodeStage, pixel_column, row_pixels, shape_column, stage_error_column, todo_column
from janus_ray.actors.journal import KILLED_TWICE, CrashJournal
from janus_ray.actors.metric_actor import MetricActor, output_column
from janus_ray.images import ImageSizeError, check_image_size, open_image, preprocessing_pixels
from janus_ray.results import atomic_write, render_csv, render_json, score_columns, write_folder_results

from ..conftest import IMAGES_DIR, WEIGHTS_ROOT

GOOD = str(IMAGES_DIR / "astronaut.jpg")


def save(path: Path, size: tuple[int, int]) -> str:
    Image.new("RGB", size, (90, 120, 30)).save(path)
    return str(path)


def make_stage(metrics, max_pixels=178_956_970, journal_dir=None) -> DecodeStage:
    spec = {m: {"scorer": m, "weights_root": str(WEIGHTS_ROOT), "options": {}} for m in metrics}
    return DecodeStage(spec, max_pixels=max_pixels, journal_dir=journal_dir)


def make_batch(paths, metrics, todo=True, row_ids=None) -> dict:
    n = len(paths)
    out = {"image_path": np.array(paths, dtype=object), "decode_error": np.array([""] * n, dtype=object),
           "row_id": np.array(row_ids if row_ids is not None else range(n), dtype=np.int64)}
    out.update({todo_column(m): np.array([todo] * n) for m in metrics})
    return out


# --- case 1a: the size guard bounds what every transform allocates -------------------------------


def test_preprocessing_pixels_of_the_two_reported_shapes():
    # CLIP's shortest-side resize to 336: 60000x2 becomes 10,080,000 x 336.
    assert preprocessing_pixels(60000, 2, 336, square_pad=False)[0] == 10_080_000 * 336
    # VQAScore's square padding of 1x100000 alone is 1e10 pixels (40 GB as float32).
    assert preprocessing_pixels(1, 100000, 336, square_pad=True)[0] >= 100000 * 100000
    assert preprocessing_pixels(512, 512, 336)[0] == 512 * 512  # an ordinary image: itself


def test_case1_huge_aspect_images_fail_their_rows_before_any_allocation(tmp_path):
    wide = save(tmp_path / "wide.png", (60000, 2))
    tall = save(tmp_path / "tall.png", (1, 100000))
    metrics = ["clipscore", "vqascore"]
    out = make_stage(metrics)(make_batch([wide, GOOD, tall], metrics))
    errors = list(out["decode_error"])
    assert errors[0].startswith("image too large") and "60000x2 image (aspect ratio 30000:1)" in errors[0]
    assert "square padding (60000x60000)" in errors[0]  # VQAScore's is the largest here
    assert "1x100000 image" in errors[2] and "over the limit of 178956970" in errors[2]
    assert errors[1] == "" and len(out[pixel_column("clipscore")][1]) > 0
    clip_only = make_stage(["clipscore"])(make_batch([wide], ["clipscore"]))
    assert "shortest side resized to 336 (10080000x336)" in clip_only["decode_error"][0]


@pytest.mark.parametrize("metrics,size,max_pixels,rejected", [
    (["clipscore"], (40, 2000), 1_000_000, True),  # tiny file (80 kpx), 5.6 Mpx once resized
    (["imagereward"], (2000, 40), 1_000_000, True),  # torchvision's shortest-side resize too
    (["vqascore"], (400, 4000), 10_000_000, True),  # square padding (16 Mpx) is the big one
    (["clipscore", "itmscore"], (400, 4000), 10_000_000, False),  # no square padding without VQA
    (["hpsv2"], (300, 600), 10_000_000, False),  # ordinary sizes pass
])
def test_the_guard_follows_the_enabled_transforms(tmp_path, metrics, size, max_pixels, rejected):
    path = save(tmp_path / "x.png", size)
    out = make_stage(metrics, max_pixels=max_pixels)(make_batch([path], metrics))
    assert out["decode_error"][0].startswith("image too large") is rejected, out["decode_error"][0]


def test_open_image_default_guard_covers_every_scorer_and_reads_only_the_header(tmp_path):
    path = save(tmp_path / "strip.png", (3000, 3))
    with pytest.raises(ImageSizeError, match=r"strip\.png: 3000x3 image"):
        open_image(path, max_pixels=100_000_000)
    with pytest.raises(Image.DecompressionBombError):  # ImageSizeError is one: old handlers still catch it
        check_image_size(1, 100000, 178_956_970)
    assert open_image(path, max_pixels=None).size == (3000, 3)


# --- case 1b: no input is retried forever --------------------------------------------------------


class ActorDied(BaseException):
    """Stands in for the process dying: escapes every `except Exception`, like os._exit would."""


def test_case1_a_batch_that_kills_the_decode_actor_is_split_and_the_killer_row_fails(tmp_path, monkeypatch):
    killer = save(tmp_path / "killer.png", (8, 8))
    real_open = decode_module.open_image

    def dying_open(path, *args, **kwargs):
        if path.endswith("killer.png"):
            raise ActorDied
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(decode_module, "open_image", dying_open)
    metrics = ["hpsv2"]
    paths = [GOOD, killer, str(IMAGES_DIR / "chelsea_rgba.png")]
    batch = make_batch(paths, metrics, row_ids=[40, 41, 42])
    journal = tmp_path / "journal"
    deaths = 0
    for _attempt in range(5):  # Ray Data: a new actor, the same batch, again and again
        try:
            out = make_stage(metrics, journal_dir=str(journal))(dict(batch))
            break
        except ActorDied:
            deaths += 1
    assert deaths == 2  # once as a batch, once alone: then it is not run again
    assert list(out["decode_error"]) == ["", f"decoding: {KILLED_TWICE}", ""]
    assert len(out[pixel_column("hpsv2")][0]) > 0 and len(out[pixel_column("hpsv2")][2]) > 0
    assert not any(journal.rglob("*-*"))  # every entry removed once the batch is done


def test_a_batch_entry_left_by_a_dead_actor_means_row_by_row(tmp_path):
    """The journal's states, set up by hand: the batch died before; row 41 died alone before."""
    journal_dir = tmp_path / "j"
    journal = CrashJournal(journal_dir, "decode")
    journal.begin(journal.batch_key([41, 40]))
    journal.begin(journal.row_key(41))
    out = make_stage(["hpsv2"], journal_dir=str(journal_dir))(
        make_batch([GOOD, GOOD], ["hpsv2"], row_ids=[40, 41]))
    assert list(out["decode_error"]) == ["", f"decoding: {KILLED_TWICE}"]
    assert list(journal.dir.iterdir()) == []


def test_a_one_row_batch_that_kills_twice_fails_and_other_stages_keep_their_own_journal(tmp_path):
    journal_dir = tmp_path / "j"
    CrashJournal(journal_dir, "metric-hpsv2").begin(CrashJournal.row_key(7))  # another stage's entry
    decode = CrashJournal(journal_dir, "decode")
    decode.begin(decode.batch_key([7]))  # died once on this one-row batch: run it alone, journaled
    out = make_stage(["hpsv2"], journal_dir=str(journal_dir))(make_batch([GOOD], ["hpsv2"], row_ids=[7]))
    assert list(out["decode_error"]) == [""]


@pytest.fixture(scope="module")
def clip_actor_factory():
    def make(journal_dir=None) -> MetricActor:
        return MetricActor("clipscore", "clipscore", str(WEIGHTS_ROOT), "cpu", None, {}, journal_dir=journal_dir)
    return make


def metric_batch(stage: DecodeStage, paths, prompts, row_ids) -> dict:
    batch = make_batch(paths, ["clipscore"], row_ids=row_ids)
    batch["prompt"] = np.array(prompts, dtype=object)
    batch["has_prompt"] = np.array([True] * len(paths))
    return stage(batch)


def test_case1_a_row_that_kills_the_metric_actor_fails_after_two_deaths(tmp_path, clip_actor_factory):
    stage = make_stage(["clipscore"])
    batch = metric_batch(stage, [GOOD] * 3, ["a cat", "KILLER", "a dog"], [5, 6, 7])
    journal = tmp_path / "j"
    deaths, out = 0, None
    for _attempt in range(5):
        actor = clip_actor_factory(str(journal))
        real = actor.scorer.score_pixels

        def dying(pixels, prompts, real=real):
            if "KILLER" in prompts:
                raise ActorDied
            return real(pixels, prompts)

        actor.scorer.score_pixels = dying
        try:
            out = actor({k: v.copy() for k, v in batch.items()})
            break
        except ActorDied:
            deaths += 1
    assert deaths == 2
    errors = list(out[stage_error_column("clipscore")])
    assert errors == ["", f"scoring: {KILLED_TWICE}", ""]
    scores = out[output_column("clipscore")]
    assert np.isfinite(scores[[0, 2]]).all() and np.isnan(scores[1])


# --- case 7: non-finite scores ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_case7_a_non_finite_score_is_a_row_error(bad, clip_actor_factory):
    actor = clip_actor_factory()
    real = actor.scorer.score_pixels

    def with_bad_row(pixels, prompts):
        result = real(pixels, prompts)
        result["clipscore"][1] = bad
        return result

    actor.scorer.score_pixels = with_bad_row
    out = actor(metric_batch(make_stage(["clipscore"]), [GOOD] * 3, ["a", "b", "c"], [0, 1, 2]))
    errors = list(out[stage_error_column("clipscore")])
    assert errors[1] == f"non-finite score (clipscore={bad})" and errors[0] == errors[2] == ""
    assert np.isnan(out[output_column("clipscore")][1]) and np.isfinite(out[output_column("clipscore")][[0, 2]]).all()


def _table(values) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"prompt_idx": pd.array(range(n), dtype="Int64"), "prompt": [f"p{i}" for i in range(n)],
                         "image_path": [f"{i}.png" for i in range(n)], "sample": [0] * n,
                         "error": [None] * n, "CLIPScore": values})


def test_case7_infinite_values_never_break_the_result_writers(tmp_path):
    columns = score_columns(["CLIPScore"])
    table = _table([0.25, float("inf"), float("nan"), -float("inf"), np.float32(0.75)])
    paths = write_folder_results(table, tmp_path, columns, {"note": "x"})
    document = json.loads(paths[1].read_text())
    assert [row["CLIPScore"] for row in document["per_image"]] == [0.25, None, None, None, 0.75]
    assert document["averages"]["CLIPScore"] == pytest.approx(0.5)
    assert "inf" not in render_csv(table, columns).lower()
    json.loads(render_json(table, columns, {}))


# --- case 8: result files respect the umask -----------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_case8_result_files_get_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = write_folder_results(_table([0.1, 0.2]), tmp_path, score_columns(["CLIPScore"]), {})
        atomic_write(tmp_path / "summary.csv", b"x\n")
    finally:
        os.umask(old)
    for path in [*paths, tmp_path / "summary.csv"]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


# --- case 9: the placeholder pixel column keeps the transform's shape --------------------------------


@pytest.mark.parametrize("metrics", [["clipscore", "hpsv2"], ["vqascore", "itmscore", "imagereward"]])
def test_case9_rows_without_pixels_keep_the_column_types_of_rows_with_pixels(metrics):
    """Blocks with and without pixels merge into one batch without turning a column into objects
    of mixed shapes: pixels travel as one bytes cell per row plus an int64 (C, H, W) shape column."""
    stage = make_stage(metrics)
    nothing = stage(make_batch([GOOD, GOOD], metrics, todo=False))  # e.g. every row cached
    decoded = make_stage(metrics)(make_batch([GOOD], metrics))  # a fresh actor, real pixels
    for metric in metrics:
        assert list(nothing[pixel_column(metric)]) == [b"", b""]
        assert nothing[shape_column(metric)].shape == (2, 3) and not nothing[shape_column(metric)].any()
        merged = {key: np.concatenate([nothing[key], decoded[key]]) for key in decoded}  # what Ray does with blocks
        assert merged[shape_column(metric)].dtype == np.int64 and merged[shape_column(metric)].shape == (3, 3)
        pixels = row_pixels(merged, metric, 2)
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[0] == 3


def test_rows_that_fail_to_decode_ship_no_pixels(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = make_stage(["pickscore"])(make_batch([str(bad)], ["pickscore"]))
    assert out["decode_error"][0].startswith("unreadable image")
    assert out[pixel_column("pickscore")][0] == b"" and not out[shape_column("pickscore")].any()


def _png_header(width: int, height: int) -> bytes:
    """A PNG with its IHDR size and no pixel data: what Pillow reads to size the image."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_an_image_past_pillows_own_bomb_limit_is_too_large_not_unreadable(tmp_path):
    """New user's trial: a 100000x100000 PNG header raised Pillow's DecompressionBombError from
    Image.open, before janus-ray's size guard, so it was listed and cached as unreadable bytes
    (never retried) while a 1x100000 one was "too large" (retried under another limit)."""
    from janus_ray.images import ImageSizeError, open_image
    from janus_ray.manifest import validate_folders

    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "a.png").write_bytes(_png_header(100_000, 100_000))
    (folder / "a.txt").write_text("a red cube")
    with pytest.raises(ImageSizeError, match="a.png"):
        open_image(folder / "a.png")
    text, ok = validate_folders([folder], None)
    assert not ok and "images too large to preprocess: 1 (a.png: " in text and "unreadable images: 0" in text
