"""Inputs that generators and people really produce (issue 10, cases 2-6): every readable image is
found, every pair is keyed by its prompt, nothing is silently dropped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image, features

from janus_ray.cli import main
from janus_ray.errors import InputError
from janus_ray.manifest import (
    HF_CSV,
    HF_JSONL,
    JANUS,
    SIDECAR,
    build_manifest,
    image_extensions,
    scan_folder,
    validate_folders,
)

PROMPTS = [f"prompt number {i}" for i in range(10)]


def img(path: Path, size=(4, 4), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 10, 10)).save(path, format=fmt)
    return path


# --- case 2: directory symlinks ------------------------------------------------------------------


def test_case2_prompt_folders_that_are_directory_symlinks_are_scanned(tmp_path):
    data = tmp_path / "data" / "gen"
    for i in range(3):
        img(data / f"prompt_{i:04d}" / "img_00.png")
    run = tmp_path / "run"
    run.mkdir()
    for i in range(3):
        (run / f"prompt_{i:04d}").symlink_to(data / f"prompt_{i:04d}", target_is_directory=True)
    scan = scan_folder(run, PROMPTS)
    assert scan.convention == JANUS
    assert [(r.prompt_idx, r.rel_path) for r in scan.rows] == [
        (i, f"prompt_{i:04d}/img_00.png") for i in range(3)]
    assert scan.rows[0].image_path == str(run / "prompt_0000" / "img_00.png")


def test_symlinked_subtree_and_a_symlink_loop_end(tmp_path):
    """Variant: a whole run folder linked in (two levels), plus a link back up that would loop."""
    real = tmp_path / "store" / "outputs_dola"
    img(real / "prompt_5" / "00.jpg")
    img(real / "prompt_6" / "00.jpg")
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / "outputs_dola").symlink_to(real, target_is_directory=True)
    (real / "prompt_5" / "loop").symlink_to(folder, target_is_directory=True)
    scan = scan_folder(folder, PROMPTS)
    assert [r.rel_path for r in scan.rows] == ["outputs_dola/prompt_5/00.jpg", "outputs_dola/prompt_6/00.jpg"]


# --- case 3: every format Pillow opens, content sniffing -----------------------------------------


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_case3_avif_images_are_found_and_scored(tmp_path):
    for i in range(2):
        img(tmp_path / "run" / f"prompt_{i}" / "img_00.avif")
    scan = scan_folder(tmp_path, PROMPTS)
    assert scan.images_found == 2
    assert [r.rel_path for r in scan.rows] == ["run/prompt_0/img_00.avif", "run/prompt_1/img_00.avif"]


def test_image_extensions_come_from_pillow_not_a_hand_list():
    exts = image_extensions()
    Image.init()
    readable = {e for e, f in Image.registered_extensions().items() if f in Image.OPEN}
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".gif", ".bmp", ".qoi", ".tga", ".jp2"} & readable <= exts
    assert ".pdf" not in exts and ".h5" not in exts  # save-only / stub formats have no pixels


@pytest.mark.parametrize("name,fmt", [("img_00", "PNG"), ("img_00.image", "JPEG"), ("img_00.PNG_", "WEBP")])
def test_an_image_with_an_unknown_or_no_extension_is_found_by_its_content(tmp_path, name, fmt):
    img(tmp_path / "run" / "prompt_1" / name, fmt=fmt)
    (tmp_path / "run" / "prompt_2").mkdir(parents=True)
    (tmp_path / "run" / "prompt_2" / "img_00.dat").write_bytes(b"\x00\x01 not an image at all")
    scan = scan_folder(tmp_path, PROMPTS)
    assert [(r.prompt_idx, r.rel_path) for r in scan.rows] == [(1, f"run/prompt_1/{name}")]
    assert scan.images_found == 1


def test_a_file_with_an_image_extension_that_cannot_be_decoded_is_a_counted_reported_row(tmp_path):
    img(tmp_path / "run" / "prompt_0" / "img_00.png")
    (tmp_path / "run" / "prompt_1").mkdir()
    (tmp_path / "run" / "prompt_1" / "img_00.avif").write_bytes(b"garbage, not AVIF")
    scan = scan_folder(tmp_path, PROMPTS)
    assert scan.images_found == 2 and len(scan.rows) == 2
    text, ok = validate_folders([tmp_path], PROMPTS)
    assert not ok and "unreadable images: 1 (run/prompt_1/img_00.avif: " in text


# --- case 4: sidecar (and metadata) folders pair by prompt text, then sample order -----------------


def _sidecar_folder(root: Path, prompts: list[str], seed: int) -> Path:
    for i, prompt in enumerate(prompts):
        img(root / f"{seed}_{i:03d}.png")
        (root / f"{seed}_{i:03d}.txt").write_text(prompt, encoding="utf-8")
    return root


def test_case4_two_sidecar_folders_over_50_prompts_pair_by_prompt_text(tmp_path):
    prompts = [f"a picture of thing {i}" for i in range(50)]
    a = _sidecar_folder(tmp_path / "a", prompts, 1)
    b = _sidecar_folder(tmp_path / "b", list(reversed(prompts)), 2)  # other names, other order
    scans = build_manifest([a, b], None)
    keys = [{(r.prompt, r.sample) for r in scan.rows} for scan in scans]
    assert len(keys[0]) == len(keys[1]) == 50  # no (-1, 0) placeholder: 50 distinct keys per folder
    assert len(keys[0] & keys[1]) == 50  # every prompt pairs across the folders
    assert all(scan.convention == SIDECAR for scan in scans)


def test_repeated_prompts_are_numbered_as_samples_in_every_self_describing_layout(tmp_path):
    """Variant: 3 images of one prompt + 1 of another, as sidecar, jsonl and csv folders."""
    texts = ["a red cube", "a red cube", "a blue ball", "a red cube"]
    side = tmp_path / "side"
    for i, text in enumerate(texts):
        img(side / f"s{i}.png")
        (side / f"s{i}.txt").write_text(text)
    jsonl = tmp_path / "jsonl"
    csv_dir = tmp_path / "csv"
    for folder in (jsonl, csv_dir):
        for i in range(4):
            img(folder / f"x{i}.jpg")
    (jsonl / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f"x{i}.jpg", "prompt": t}) for i, t in enumerate(texts)))
    (csv_dir / "metadata.csv").write_text("file_name,text\n" + "".join(f"x{i}.jpg,{t}\n" for i, t in enumerate(texts)))
    for folder, convention in ((side, SIDECAR), (jsonl, HF_JSONL), (csv_dir, HF_CSV)):
        scan = scan_folder(folder, None, all_samples=True)
        assert scan.convention == convention
        got = sorted((r.prompt, r.sample) for r in scan.rows)
        assert got == [("a blue ball", 0), ("a red cube", 0), ("a red cube", 1), ("a red cube", 2)], folder
        # new user's trial: without --all-samples these layouts scored every sample, unlike prompt
        # folders and the README: now the first of each prompt (listing order, path order for sidecars)
        first = scan_folder(folder, None)
        assert sorted((r.prompt, r.sample) for r in first.rows) == [("a blue ball", 0), ("a red cube", 0)], folder
        assert len(first.dropped["extra sample"]) == 2
        assert min(r.rel_path for r in scan.rows if r.prompt == "a red cube") in {r.rel_path for r in first.rows}


def test_metadata_sample_order_is_listing_order(tmp_path):
    for name in ("z.png", "a.png"):
        img(tmp_path / name)
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "z.png", "prompt": "p"}\n{"file_name": "a.png", "prompt": "p"}\n')
    scan = scan_folder(tmp_path, None, all_samples=True)
    assert {r.rel_path: r.sample for r in scan.rows} == {"z.png": 0, "a.png": 1}
    assert [r.rel_path for r in scan_folder(tmp_path, None).rows] == ["z.png"]  # the first listed


# --- case 5: 1-based sample numbers ----------------------------------------------------------------


def test_case5_one_based_sample_numbers_score_the_lowest_numbered_image(tmp_path):
    for i in range(3):
        for s in range(1, 5):
            img(tmp_path / "run" / f"prompt_{i:04d}" / f"img_{s:02d}.png")
    scan = scan_folder(tmp_path, PROMPTS)
    assert [(r.prompt_idx, r.sample, r.rel_path) for r in scan.rows] == [
        (i, 0, f"run/prompt_{i:04d}/img_01.png") for i in range(3)]
    assert len(scan.dropped["extra sample"]) == 9
    full = scan_folder(tmp_path, PROMPTS, all_samples=True)
    assert [(r.sample, r.rel_path.rsplit("/", 1)[1]) for r in full.rows if r.prompt_idx == 2] == [
        (0, "img_01.png"), (1, "img_02.png"), (2, "img_03.png"), (3, "img_04.png")]


@pytest.mark.parametrize("names,first", [
    (["7.jpg", "12.jpg", "9.jpg"], "7.jpg"),  # numbers neither 0- nor 1-based, not zero-padded
    (["sample_10.png", "sample_2.png"], "sample_2.png"),  # numeric, not lexicographic, order
    (["final.png"], "final.png"),  # a prompt's only image is its first sample, whatever its name
])
def test_a_prompts_first_sample_is_its_lowest_numbered_or_only_image(tmp_path, names, first):
    for name in names:
        img(tmp_path / "generated_samples_batch" / "3_a-slug" / name)
    scan = scan_folder(tmp_path, PROMPTS)
    assert [(r.prompt_idx, r.sample, r.rel_path.rsplit("/", 1)[1]) for r in scan.rows] == [(3, 0, first)]


def test_a_folder_holding_images_but_yielding_no_row_is_an_error(tmp_path):
    img(tmp_path / "run" / "prompt_0" / "grid.png")
    img(tmp_path / "run" / "prompt_0" / "cover.png")  # two unnumbered images: no sample order
    with pytest.raises(InputError, match=r"holds 2 image\(s\) but none can be scored: 2 image\(s\) "
                                         r"ignored: the file name does not end with a sample number"):
        build_manifest([tmp_path], PROMPTS)
    text, ok = validate_folders([tmp_path], PROMPTS)
    assert not ok and "none can be scored" in text


# --- case 6: prompts without an image ----------------------------------------------------------------


def test_case6_prompt_json_with_1600_prompts_and_folders_covering_800(tmp_path, capsys):
    prompts = [f"prompt {i}" for i in range(1600)]
    prompt_json = tmp_path / "prompt.json"
    prompt_json.write_text(json.dumps({"prompts": prompts}))
    folder = tmp_path / "variant"
    for i in range(0, 1600, 2):
        d = folder / "run" / f"prompt_{i:04d}"
        d.mkdir(parents=True)
        Image.new("RGB", (2, 2)).save(d / "img_00.png")
    [scan] = build_manifest([folder], prompts)
    assert scan.prompts_without_image == 800
    assert any("800 of 1600 prompt(s) in the prompt list have no image here (indices 1, 3, 5, 7, 9, "
               "... (795 more))" in w for w in scan.warnings)
    code = main(["validate", str(folder), "--prompt-json", str(prompt_json)])
    out = capsys.readouterr().out
    assert code == 1 and "prompts without an image: 800" in out and "status: PROBLEMS" in out


def test_prompts_without_image_by_text_in_a_metadata_folder_and_none_without_a_list(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "metadata.csv").write_text("file_name,prompt\na.png,prompt number 3\n")
    assert scan_folder(tmp_path, PROMPTS).prompts_without_image == 9
    assert scan_folder(tmp_path, None).prompts_without_image is None


# --- validate: every problem, every folder, before any model ---------------------------------------


def test_validate_reports_every_folder_problem_instead_of_stopping_at_the_first(tmp_path, capsys):
    mixed = tmp_path / "mixed"
    img(mixed / "run" / "prompt_1" / "img_00.jpg")
    img(mixed / "x.png")
    (mixed / "x.txt").write_text("a prompt")
    wide = tmp_path / "wide"
    img(wide / "run" / "prompt_1" / "img_00.png", size=(60000, 2))
    img(wide / "run" / "prompt_2" / "img_00.png")
    prompt_json = tmp_path / "p.json"
    prompt_json.write_text(json.dumps(PROMPTS[:3]))
    code = main(["validate", str(mixed), str(wide), "--prompt-json", str(prompt_json)])
    out = capsys.readouterr().out
    assert code == 1
    assert "matches more than one input layout" in out
    assert ("images too large to preprocess: 1 (run/prompt_1/img_00.png: " in out
            and "60000x2 image (aspect ratio 30000:1)" in out)
    assert "prompts without an image: 1" in out
    assert out.rstrip().endswith("PROBLEMS FOUND in 2 of 2 folder(s), 1 row(s) to score (1 of 2 row(s) will be "
                                 "recorded as failed).")


@pytest.mark.slow  # a fresh interpreter importing torch: seconds of CPU
def test_validate_imports_no_model_code(tmp_path):
    """`validate` must answer before any model loads: no model library is even imported (torch is,
    by the package's own import)."""
    import subprocess
    import sys

    img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a cat")
    code = ("import sys; from janus_ray.cli import main; rc = main(['validate', %r]); "
            "print(rc, 'open_clip' in sys.modules, 'transformers' in sys.modules)" % str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0 False False", out.stderr[-2000:]
