"""Input discovery: the layouts our users have, prompt files, and the validate report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from janus_ray.errors import ConfigError, InputError
from janus_ray.manifest import (
    GENEVAL,
    HF_CSV,
    HF_JSONL,
    JANUS,
    SIDECAR,
    build_manifest,
    load_prompts,
    scan_folder,
    validate_report,
)

PROMPTS = [f"prompt number {i}" for i in range(10)]


def img(path: Path, color=(255, 0, 0)) -> Path:
    """A tiny real image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return path


def rel_paths(scan) -> list[str]:
    return [row.rel_path for row in scan.rows]


# --- prompt files ------------------------------------------------------------------------------


def test_load_prompts_object_and_bare_list(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"prompts": ["a cat", "a dog"]}))
    (tmp_path / "b.json").write_text(json.dumps(["a cat", "a dog"]))
    assert load_prompts(tmp_path / "a.json") == ["a cat", "a dog"]
    assert load_prompts(str(tmp_path / "b.json")) == ["a cat", "a dog"]


def test_load_prompts_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"Prompt file not found: .*nope\.json"):
        load_prompts(tmp_path / "nope.json")


def test_load_prompts_bad_json_names_line_and_column(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"prompts": [\n  "a",\n  "b",,\n]}')
    with pytest.raises(InputError, match=r"not valid JSON: .* at line 3, column 7"):
        load_prompts(path)


def test_load_prompts_object_without_prompts_key(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"captions": ["a"]}))
    with pytest.raises(InputError, match=r"no 'prompts' key \(keys: 'captions'\)"):
        load_prompts(path)


def test_load_prompts_wrong_top_level_type(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('"a cat"')
    with pytest.raises(InputError, match=r"a JSON list of strings; got a JSON str"):
        load_prompts(path)


def test_load_prompts_prompts_not_a_list(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"prompts": "a cat"}))
    with pytest.raises(InputError, match=r"'prompts' is a str, not a list"):
        load_prompts(path)


def test_load_prompts_non_string_entry_names_index(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(["a", "b", 7]))
    with pytest.raises(InputError, match=r"prompt at index 2 is not a string \(got int: 7\)"):
        load_prompts(path)


def test_load_prompts_empty_list(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("[]")
    with pytest.raises(InputError, match="holds no prompts"):
        load_prompts(path)


# --- Janus prompt dirs -------------------------------------------------------------------------


def test_janus_prompt_dirs_zero_padded_first_sample_only(tmp_path):
    run = tmp_path / "outputs_dola"
    img(run / "prompt_0007" / "img_00.jpg")
    img(run / "prompt_0007" / "img_01.jpg")
    img(run / "prompt_2" / "img_00.jpg")
    scan = scan_folder(tmp_path, PROMPTS)
    assert scan.convention == JANUS
    assert [(r.prompt_idx, r.sample, r.prompt) for r in scan.rows] == [
        (2, 0, "prompt number 2"), (7, 0, "prompt number 7")]
    row = scan.rows[1]
    assert row.rel_path == "outputs_dola/prompt_0007/img_00.jpg"
    assert row.image_path == str((run / "prompt_0007" / "img_00.jpg").absolute())
    assert row.folder == str(tmp_path) and row.error is None
    assert scan.dropped == {"extra sample": ["outputs_dola/prompt_0007/img_01.jpg"]}
    assert any("1 extra sample(s) ignored" in w for w in scan.warnings)


def test_janus_all_samples(tmp_path):
    for name in ("img_00.jpg", "img_01.jpg", "img_02.jpg"):
        img(tmp_path / "out_dola" / "prompt_3" / name)
    scan = scan_folder(tmp_path, PROMPTS, all_samples=True)
    assert [(r.prompt_idx, r.sample) for r in scan.rows] == [(3, 0), (3, 1), (3, 2)]
    assert scan.dropped == {}


def test_janus_batch_slug_dirs(tmp_path):
    batch = tmp_path / "generated_samples_batch"
    img(batch / "4_a-red-cat" / "00.jpg")
    img(batch / "4_a-red-cat" / "01.jpg")
    img(batch / "0012_two_dogs" / "00.jpg")
    scan = scan_folder(tmp_path, PROMPTS + ["p10", "p11", "p12"])
    assert [(r.prompt_idx, r.rel_path) for r in scan.rows] == [
        (4, "generated_samples_batch/4_a-red-cat/00.jpg"),
        (12, "generated_samples_batch/0012_two_dogs/00.jpg")]
    assert scan.rows[1].prompt == "p12"


def test_janus_batch_timestamped_names(tmp_path):
    slug = tmp_path / "generated_samples_batch" / "1_slug"
    img(slug / "img_20250101-120000_00.jpg")
    img(slug / "img_20250101-120000_01.jpg")
    scan = scan_folder(tmp_path, PROMPTS, all_samples=True)
    assert [(r.prompt_idx, r.sample) for r in scan.rows] == [(1, 0), (1, 1)]
    assert scan_folder(tmp_path, PROMPTS).rows[0].rel_path.endswith("_00.jpg")


def test_janus_duplicates_keep_first_in_path_order(tmp_path):
    img(tmp_path / "b_run" / "prompt_1" / "img_00.jpg")
    img(tmp_path / "a_run" / "prompt_01" / "img_00.png")
    scan = scan_folder(tmp_path, PROMPTS)
    assert rel_paths(scan) == ["a_run/prompt_01/img_00.png"]
    assert scan.dropped == {"duplicate": ["b_run/prompt_1/img_00.jpg"]}
    assert any("1 duplicate image(s) dropped" in w for w in scan.warnings)


def test_janus_index_out_of_range_kept_as_failed(tmp_path):
    img(tmp_path / "run" / "prompt_57" / "img_00.jpg")
    img(tmp_path / "run" / "prompt_1" / "img_00.jpg")
    scan = scan_folder(tmp_path, PROMPTS)
    row = scan.rows[-1]
    assert (row.prompt_idx, row.prompt) == (57, None)
    assert row.error == "prompt index 57 out of range (prompt list has 10)"
    assert any("outside the prompt list (10 prompts)" in w for w in scan.warnings)


def test_janus_needs_prompt_json(tmp_path):
    img(tmp_path / "run" / "prompt_1" / "img_00.jpg")
    with pytest.raises(InputError, match="--prompt-json is required for this layout"):
        scan_folder(tmp_path, None)


def test_janus_stray_files_and_own_outputs(tmp_path):
    img(tmp_path / "run" / "prompt_1" / "img_00.jpg")
    img(tmp_path / "run" / "prompt_1" / "grid.jpg")  # no sample number
    img(tmp_path / "cover.png")  # not in a prompt dir
    img(tmp_path / ".thumbs" / "prompt_2" / "img_00.jpg")  # hidden: ignored
    img(tmp_path / "janus_eval_scores.png")  # our own output name: ignored
    scan = scan_folder(tmp_path, PROMPTS)
    assert rel_paths(scan) == ["run/prompt_1/img_00.jpg"]
    assert scan.dropped == {"no sample number": ["run/prompt_1/grid.jpg"],
                            "outside prompt dirs": ["cover.png"]}
    assert scan.images_found == 3


def test_image_extensions_case_insensitive(tmp_path):
    img(tmp_path / "run" / "prompt_1" / "img_00.JPG")
    img(tmp_path / "run" / "prompt_2" / "img_00.webp")
    (tmp_path / "run" / "prompt_3").mkdir()
    (tmp_path / "run" / "prompt_3" / "img_00.npy").write_bytes(b"x")
    assert [r.prompt_idx for r in scan_folder(tmp_path, PROMPTS).rows] == [1, 2]


# --- Hugging Face metadata ---------------------------------------------------------------------


def test_metadata_jsonl(tmp_path):
    img(tmp_path / "a.png")
    img(tmp_path / "sub" / "b.png")
    img(tmp_path / "unlisted.png")
    lines = [{"file_name": "sub/b.png", "prompt": "a dog"}, {"file_name": "a.png", "text": "a cat"},
             {"file_name": "gone.png", "prompt": "lost"}, {"file_name": "a.png", "prompt": "again"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    scan = scan_folder(tmp_path, None)
    assert scan.convention == HF_JSONL
    assert [(r.prompt_idx, r.rel_path, r.prompt, r.error) for r in scan.rows] == [
        (0, "sub/b.png", "a dog", None), (1, "a.png", "a cat", None),
        (2, "gone.png", "lost", "file not found")]
    assert scan.dropped == {"duplicate entry": ["a.png"], "not in metadata": ["unlisted.png"]}


def test_metadata_jsonl_bad_line(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "prompt": "x"}\n{oops\n')
    with pytest.raises(InputError, match=r"metadata\.jsonl, line 2: invalid JSON"):
        scan_folder(tmp_path, None)


def test_metadata_csv_text_column_with_comma_and_quote(tmp_path):
    img(tmp_path / "a.jpg")
    img(tmp_path / "b.jpg")
    tricky = 'a "red" cat, sitting\non a mat'
    with (tmp_path / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerows([["file_name", "text"], ["b.jpg", tricky], ["a.jpg", "plain"]])
    scan = scan_folder(tmp_path, None)
    assert scan.convention == HF_CSV
    assert [(r.prompt_idx, r.rel_path, r.prompt) for r in scan.rows] == [
        (0, "b.jpg", tricky), (1, "a.jpg", "plain")]
    assert scan.warnings == []


def test_metadata_csv_missing_columns(tmp_path):
    img(tmp_path / "a.jpg")
    (tmp_path / "metadata.csv").write_text("file_name,caption\na.jpg,x\n")
    with pytest.raises(InputError, match="found columns: file_name, caption"):
        scan_folder(tmp_path, None)


def test_prompt_list_ignored_for_self_describing_layouts(tmp_path):
    img(tmp_path / "a.jpg")
    (tmp_path / "metadata.csv").write_text("file_name,prompt\na.jpg,x\n")
    assert any("prompt list is not used" in w for w in scan_folder(tmp_path, PROMPTS).warnings)


# --- GenEval and sidecar -----------------------------------------------------------------------


def test_geneval(tmp_path):
    for idx, prompt in ((0, "a photo of a bench"), (12, "two cats")):
        d = tmp_path / f"{idx:05d}"
        img(d / "grid.png")
        for s in range(3):
            img(d / "samples" / f"{s:04d}.png")
        (d / "metadata.jsonl").write_text(json.dumps({"tag": "t", "prompt": prompt}) + "\n")
    scan = scan_folder(tmp_path, None)
    assert scan.convention == GENEVAL
    assert [(r.prompt_idx, r.sample, r.prompt) for r in scan.rows] == [
        (0, 0, "a photo of a bench"), (12, 0, "two cats")]
    assert len(scan.dropped["extra sample"]) == 4 and "duplicate" not in scan.dropped
    # a new user's trial: validate said "images found: 8, rows: 2" without a word on the grids
    assert scan.dropped["geneval grid"] == ["00000/grid.png", "00012/grid.png"]
    text, ok = validate_report([scan])
    assert "GenEval grid images ignored (<idx>/grid.png): 2" in text and ok
    full = scan_folder(tmp_path, None, all_samples=True)
    assert [(r.prompt_idx, r.sample) for r in full.rows][:3] == [(0, 0), (0, 1), (0, 2)]
    assert full.rows[2].rel_path == "00000/samples/0002.png"


def test_sidecar_txt(tmp_path):
    img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("  a cat\n on a mat \n\n", encoding="utf-8")
    img(tmp_path / "b.jpg")  # no .txt
    scan = scan_folder(tmp_path, None)
    assert scan.convention == SIDECAR
    assert [(r.rel_path, r.prompt_idx, r.prompt) for r in scan.rows] == [
        ("a.png", None, "  a cat\n on a mat \n"), ("b.jpg", None, None)]
    assert any("1 image(s) without a prompt" in w and "b.jpg" in w for w in scan.warnings)


# --- folder-level behaviour --------------------------------------------------------------------


def test_mixed_conventions_raise(tmp_path):
    img(tmp_path / "run" / "prompt_1" / "img_00.jpg")
    img(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("a prompt")
    with pytest.raises(InputError, match=rf"{tmp_path.name} matches more than one input layout: "
                                         r"janus-prompt-dirs .*; sidecar-txt"):
        scan_folder(tmp_path, PROMPTS)


def test_unknown_layout_and_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan_folder(empty, PROMPTS).convention == "empty"
    img(tmp_path / "flat" / "a.png")
    with pytest.raises(InputError, match="no known layout"):
        scan_folder(tmp_path / "flat", PROMPTS)
    with pytest.raises(InputError, match="Input folder not found"):
        scan_folder(tmp_path / "missing", PROMPTS)


def test_build_manifest_limit_and_duplicate_folders(tmp_path):
    for i in range(5):
        img(tmp_path / "f" / "run" / f"prompt_{i}" / "img_00.jpg")
    [scan] = build_manifest([tmp_path / "f"], PROMPTS, limit=2)
    assert [r.prompt_idx for r in scan.rows] == [0, 1]
    with pytest.raises(InputError, match="given twice"):
        build_manifest([tmp_path / "f", str(tmp_path / "f") + "/"], PROMPTS)
    with pytest.raises(ConfigError, match="limit"):
        build_manifest([tmp_path / "f"], PROMPTS, limit=0)


# --- validate report ---------------------------------------------------------------------------


def test_validate_report_flags_corrupt_image_and_missing_prompt(tmp_path):
    good = tmp_path / "good"
    img(good / "a.png")
    (good / "a.txt").write_text("a cat")
    bad = tmp_path / "bad"
    img(bad / "a.png")
    (bad / "a.txt").write_text("a cat")
    (bad / "b.jpg").write_bytes(b"not an image")
    (bad / "b.txt").write_text("a dog")
    img(bad / "c.png")  # no prompt
    truncated = (good / "a.png").read_bytes()
    (bad / "d.png").write_bytes(truncated[: len(truncated) // 2])
    (bad / "d.txt").write_text("a bird")
    text, ok = validate_report(build_manifest([good, bad], None))
    assert not ok
    assert "convention: sidecar-txt" in text
    assert "images without a prompt: 1 (c.png)" in text
    assert "unreadable images: 2 (b.jpg: UnidentifiedImageError" in text and "d.png: " in text
    assert text.count("status: ok") == 1 and text.count("status: PROBLEMS") == 1
    # new user's trial: the unreadable and prompt-less rows were counted as rows to score
    assert text.endswith("PROBLEMS FOUND in 1 of 2 folder(s), 2 row(s) to score (3 of 5 row(s) will be "
                         "recorded as failed).")
    assert "rows: 4, to score: 1, recorded as failed: 3" in text
    good_text, good_ok = validate_report(build_manifest([good], None))
    assert good_ok and good_text.endswith("OK: 1 folder(s), 1 row(s) to score.")
    _, unchecked_ok = validate_report(build_manifest([bad], None), check_images=False)
    assert not unchecked_ok  # the missing prompt alone is a problem


def test_an_empty_or_blank_prompt_is_recorded_as_such_in_every_layout(tmp_path):
    """A new user's trial: an empty prompt read "missing prompt", and a metadata folder counted the
    list's empty prompt among the "prompts without an image"."""
    prompts = ["a dog", "", "a cat"]
    janus = tmp_path / "janus"
    for i in range(3):
        img(janus / "run" / f"prompt_{i}" / "img_00.png")
    meta = tmp_path / "meta"
    for i in range(3):
        img(meta / f"{i}.png")
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"{i}.png", "prompt": p})
                                                   for i, p in enumerate(["a dog", "  ", "a cat"])) + "\n")
    sidecar = tmp_path / "sidecar"
    img(sidecar / "x.png")
    (sidecar / "x.txt").write_text("\n")
    for folder in (janus, meta, sidecar):
        scan = scan_folder(folder, prompts)
        empty = [r for r in scan.rows if r.error == "empty prompt"]
        assert len(empty) == 1 and empty[0].prompt is None, (folder, scan.rows)
        text, ok = validate_report([scan])
        assert "images with an empty prompt: 1" in text and not ok
        assert "images without a prompt: 0" in text
        if scan.prompts_without_image is not None and folder != sidecar:
            assert scan.prompts_without_image == 0  # the list's "" is not an image missing here


def test_with_a_prompt_list_self_describing_layouts_index_rows_by_the_list(tmp_path):
    """A new user's trial: with --prompt-json, a metadata folder's prompt_idx was its line number and a
    sidecar folder's was empty, so joining result files on prompt_idx paired different prompts."""
    prompts = ["a dog", "a cat", "a cow"]
    meta = tmp_path / "meta"
    for name in ("x.png", "y.png", "z.png"):
        img(meta / name)
    lines = [{"file_name": "x.png", "prompt": "a cow"}, {"file_name": "y.png", "prompt": "not listed"},
             {"file_name": "z.png", "prompt": "a dog"}]
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    scan = scan_folder(meta, prompts)
    assert [(r.prompt_idx, r.prompt) for r in scan.rows] == [(0, "a dog"), (2, "a cow"), (None, "not listed")]
    assert [(r.prompt_idx, r.prompt) for r in scan_folder(meta, None).rows] == [
        (0, "a cow"), (1, "not listed"), (2, "a dog")]  # no list: the metadata line, as before
    sidecar = tmp_path / "sidecar"
    img(sidecar / "q.png")
    (sidecar / "q.txt").write_text("a cat\n")
    assert [(r.prompt_idx, r.prompt) for r in scan_folder(sidecar, prompts).rows] == [(1, "a cat")]


def test_a_prompt_that_differs_from_the_list_only_by_spaces_or_unicode_form_is_warned_about(tmp_path):
    """A new user's trial: a trailing space, a double space and NFD 'café' silently dropped pairs."""
    import unicodedata

    prompts = ["a red apple", "a big  dog", "café au lait", "a blue car"]
    for name in ("a.png", "b.png", "c.png", "d.png"):
        img(tmp_path / name)
    texts = ["a red apple ", "a big dog", unicodedata.normalize("NFD", "café au lait"), "a blue car"]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f, "prompt": t})
                                                       for f, t in zip(("a.png", "b.png", "c.png", "d.png"), texts)))
    scan = scan_folder(tmp_path, prompts)
    # matched after normalising (as the report pairs them), each still scored with its own text
    assert [(r.prompt_idx, r.prompt) for r in scan.rows] == [(0, texts[0]), (1, texts[1]), (2, texts[2]), (3, texts[3])]
    warning = next(w for w in scan.warnings if "differ from a prompt of the list" in w)
    assert warning.startswith(f"{tmp_path}: 3 prompt(s) differ from a prompt of the list only by spaces or Unicode form")
    assert "'a red apple ' vs 'a red apple'" in warning
    assert "'cafe\\u0301 au lait' vs 'caf\\xe9 au lait'" in warning  # escaped: the two forms look alike
    assert scan.prompts_without_image == 0
    assert not any("differ from a prompt" in w for w in scan_folder(tmp_path, None).warnings)


def test_prompts_not_in_the_list_are_warned_about_and_geneval_rows_take_the_lists_index(tmp_path):
    """A second new user's trial: a metadata folder's prompt outside the list was scored without a
    word; a GenEval folder's prompt_idx was its own folder number, not the list's index."""
    prompts = ["a red cat", "a blue dog", "a red cat", "two apples"]
    meta = tmp_path / "meta"
    img(meta / "x.png")
    img(meta / "y.png")
    (meta / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "prompt": "a purple horse"}) + "\n"
                                         + json.dumps({"file_name": "y.png", "prompt": "a blue dog"}) + "\n")
    scan = scan_folder(meta, prompts)
    assert [(r.prompt_idx, r.prompt) for r in scan.rows] == [(1, "a blue dog"), (None, "a purple horse")]
    assert any("1 prompt(s) are not in the prompt list ('a purple horse')" in w for w in scan.warnings)
    assert "prompts not in the prompt list (scored; prompt_idx empty): 1" in validate_report([scan])[0]
    assert scan.prompts_without_image_idx == [0, 2, 3]  # "a red cat" (listed twice) and "two apples"
    geneval = tmp_path / "geneval"
    for number, prompt in enumerate(["two apples", "a red cat", "a purple horse"]):
        d = geneval / f"{number:05d}"
        img(d / "samples" / "0000.png")
        (d / "metadata.jsonl").write_text(json.dumps({"prompt": prompt}) + "\n")
    rows = scan_folder(geneval, prompts).rows
    assert [(r.prompt_idx, r.prompt) for r in rows] == [(0, "a red cat"), (3, "two apples"), (None, "a purple horse")]
    assert [r.prompt_idx for r in scan_folder(geneval, None).rows] == [0, 1, 2]  # no list: its own numbers


def test_limit_keeps_the_same_prompts_in_every_folder(tmp_path):
    """A new user's trial: `--limit 4` over a prompt-folder variant and two metadata variants listing
    their images in other orders compared different prompts, side by side in the summary."""
    texts = [f"prompt {i}" for i in range(6)]
    folders = []
    for name, order in (("first", [0, 1, 2, 3, 4, 5]), ("reversed", [5, 4, 3, 2, 1, 0]), ("shuffled", [3, 0, 5, 1, 4, 2])):
        folder = tmp_path / name
        for i in order:
            img(folder / f"img{i}.png")
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f"img{i}.png", "prompt": texts[i]})
                                                         for i in order) + "\n")
        folders.append(folder)
    for prompts in (None, texts):
        scans = build_manifest(folders, prompts, limit=2)
        kept = [sorted(row.prompt for row in scan.rows) for scan in scans]
        assert kept == [["prompt 0", "prompt 1"]] * 3, (prompts, kept)


def test_limit_takes_the_lists_first_prompts_everywhere_even_when_listed_twice_or_missing(tmp_path):
    """A second new user's trial: `--limit 2` scored indices 0 and 2 (the same text listed twice) in a
    prompt-folder variant, and a metadata variant without prompt 1 made up for it with other prompts."""
    prompts = ["a red cat", "a blue dog", "a red cat", "two apples"]
    janus = tmp_path / "janus"
    for i in range(4):
        img(janus / "run" / f"prompt_{i}" / "img_00.png")
    meta = tmp_path / "meta"
    for name in ("x.png", "y.png"):
        img(meta / name)
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps({"file_name": f, "prompt": p}) for f, p in
                                                   (("x.png", "two apples"), ("y.png", "a red cat"))) + "\n")
    a, b = build_manifest([janus, meta], prompts, limit=2)
    assert [r.prompt_idx for r in a.rows] == [0, 1]
    assert [r.prompt for r in b.rows] == ["a red cat"]  # prompt 1 is not there: fewer rows, no substitute
