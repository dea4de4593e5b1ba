"""Result files: per-folder CSV / JSON / parquet, the summary, and atomic writes. No Ray, no models."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from janus_ray import results
from janus_ray.results import (
    BASE_COLUMNS,
    ID_COLUMNS,
    RESULT_STEM,
    atomic_write,
    column_means,
    format_summary_table,
    score_columns,
    write_folder_results,
    write_summary,
)

TRICKY_PROMPTS = [
    "a cat, a dog, and a bird",
    'a sign that says "hello"',
    "first line\nsecond line",
    "crlf\r\ninside",
    "  leading and trailing spaces  ",
    "café ☕ — ünïcödé",
    "semi;colon\ttab",
]
NO_PROMPT_IMAGE = f"{len(TRICKY_PROMPTS):05d}.png"
COLUMNS = score_columns(["HPSv2Score", "CLIPScore", "PickScore", "PickScore_scaled"])


def make_table(prompts=TRICKY_PROMPTS) -> pd.DataFrame:
    """A per-image table shaped as the pipeline builds it (Int64 ids, None for absent text)."""
    n = len(prompts)
    table = pd.DataFrame(
        {
            "prompt_idx": pd.array(range(n), dtype="Int64"),
            "prompt": pd.Series(list(prompts), dtype=object),
            "image_path": [f"{i:05d}.png" for i in range(n)],
            "sample": np.zeros(n, dtype=np.int64),
            "error": pd.Series([None] * n, dtype=object),
        }
    )
    rng = np.random.default_rng(0)
    table["HPSv2Score"] = rng.uniform(0.2, 0.3, n)
    table["CLIPScore"] = rng.uniform(-1, 1, n)
    table["PickScore"] = rng.uniform(0, 1, n)
    table["PickScore_scaled"] = table["PickScore"] * 100
    return table


def read_csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture
def written(tmp_path):
    """Write a table with a failed row and, last, an image without prompt; return (table, paths)."""
    table = make_table([*TRICKY_PROMPTS, "dropped"])
    table.loc[1, "CLIPScore"] = np.nan  # one failed metric
    table.loc[1, "error"] = "clipscore: boom"
    last = len(table) - 1  # stays last once sorted: a missing prompt_idx sorts last
    table.loc[last, "prompt"] = None
    table.loc[last, "prompt_idx"] = pd.NA  # an image with no prompt index
    table.loc[last, ["HPSv2Score", "CLIPScore", "PickScore", "PickScore_scaled"]] = np.nan
    table.loc[last, "error"] = "missing prompt"
    paths = write_folder_results(table, tmp_path / "out", COLUMNS, {"run": "test"})
    return table, paths


# ----- columns ------------------------------------------------------------------------------------
def test_score_columns_order():
    assert score_columns([]) == BASE_COLUMNS
    enabled = ["ZZ_other", "PickScore_scaled", "CLIPScore", "ITM_legacy_ITC_sigmoid", "HPSv2.1Score", "VQAScore"]
    assert score_columns(enabled) == [*BASE_COLUMNS, "HPSv2.1Score", "PickScore_scaled", "ZZ_other", "ITM_legacy_ITC_sigmoid"]
    assert BASE_COLUMNS == ["HPSv2Score", "VQAScore", "CLIPScore", "ITMScore", "PickScore", "ImageReward"]


def test_written_files(written):
    _, paths = written
    assert [p.name for p in paths] == [f"{RESULT_STEM}.csv", f"{RESULT_STEM}.json", f"{RESULT_STEM}.parquet"]
    assert all(p.is_file() for p in paths)


# ----- CSV ----------------------------------------------------------------------------------------
def test_csv_header_and_column_order(written):
    _, paths = written
    header = read_csv_rows(paths[0])[0]
    assert header == [*ID_COLUMNS, *COLUMNS]
    assert header[3:9] == BASE_COLUMNS and header[9:] == ["PickScore_scaled"]


def test_csv_quoting_round_trips_every_prompt(tmp_path):
    table = make_table()
    path = write_folder_results(table, tmp_path, COLUMNS, {})[0]
    rows = read_csv_rows(path)
    body = rows[1:-1]
    assert [row[1] for row in body] == TRICKY_PROMPTS
    assert all(len(row) == len(ID_COLUMNS) + len(COLUMNS) for row in rows)


def test_csv_six_decimals_and_empty_cells(written):
    table, paths = written
    rows = read_csv_rows(paths[0])
    header, body = rows[0], rows[1:-1]
    clip = header.index("CLIPScore")
    for row, expected in zip(body, table["CLIPScore"]):
        if math.isnan(expected):
            assert row[clip] == ""
        else:
            assert row[clip] == f"{expected:.6f}" and len(row[clip].split(".")[1]) == 6
    # The columns of metrics that were not run are present and empty.
    for column in ("VQAScore", "ITMScore", "ImageReward"):
        assert {row[header.index(column)] for row in rows[1:]} == {""}
    # The row without prompt or prompt index: empty cells, not "nan" / "<NA>" / "None".
    no_prompt = next(row for row in body if row[2] == NO_PROMPT_IMAGE)
    assert no_prompt[0] == "" and no_prompt[1] == ""
    assert not any(cell in ("nan", "NaN", "<NA>", "None") for row in rows for cell in row)


def test_csv_decimal_formatting(tmp_path):
    table = make_table(["a", "b", "c", "d"])
    table["CLIPScore"] = [0.1234565, 1.0, -0.5, 1e-9]
    rows = read_csv_rows(write_folder_results(table, tmp_path, COLUMNS, {})[0])
    col = rows[0].index("CLIPScore")
    assert [r[col] for r in rows[1:-1]] == [f"{0.1234565:.6f}", "1.000000", "-0.500000", "0.000000"]


def test_csv_average_row_is_the_mean_over_scored_rows(written):
    table, paths = written
    rows = read_csv_rows(paths[0])
    header, average = rows[0], rows[-1]
    assert average[:3] == ["AVERAGE", "", ""]
    for column in ["HPSv2Score", "CLIPScore", "PickScore", "PickScore_scaled"]:
        expected = table[column].dropna().mean()
        assert average[header.index(column)] == f"{expected:.6f}"
    assert table["CLIPScore"].isna().sum() == 2  # the mean above skipped two rows
    assert average[header.index("VQAScore")] == ""


def test_csv_rows_sorted_by_prompt_then_sample(tmp_path):
    table = make_table(["p0", "p1", "p2"])
    table = table.iloc[[2, 0, 1]].reset_index(drop=True)
    table.loc[0, "prompt_idx"] = pd.NA
    original = table.copy()
    path = write_folder_results(table, tmp_path, COLUMNS, {})[0]
    body = read_csv_rows(path)[1:-1]
    assert [row[0] for row in body] == ["0", "1", ""]  # missing prompt_idx last
    pd.testing.assert_frame_equal(table, original)  # the caller's table is not modified


# ----- JSON ---------------------------------------------------------------------------------------
def strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_json_document(written):
    table, paths = written
    doc = strict_json(paths[1])
    assert set(doc) == {"per_image", "averages", "meta"}
    assert doc["meta"] == {"run": "test"}
    assert len(doc["per_image"]) == len(table)
    first = doc["per_image"][0]
    assert set(first) == {*ID_COLUMNS, *COLUMNS, "sample", "error"}
    assert first["prompt"] == TRICKY_PROMPTS[0] and first["prompt_idx"] == 0 and first["sample"] == 0
    assert first["CLIPScore"] == pytest.approx(table.loc[0, "CLIPScore"], abs=0)
    assert set(doc["averages"]) == set(COLUMNS)


def test_json_null_for_missing_values(written):
    table, paths = written
    doc = strict_json(paths[1])
    by_path = {entry["image_path"]: entry for entry in doc["per_image"]}
    failed = by_path["00001.png"]
    assert failed["CLIPScore"] is None and failed["error"] == "clipscore: boom"
    assert failed["PickScore"] == pytest.approx(table.loc[1, "PickScore"])
    no_prompt = by_path[NO_PROMPT_IMAGE]
    assert no_prompt["prompt"] is None and no_prompt["prompt_idx"] is None
    assert no_prompt["error"] == "missing prompt"
    assert by_path["00000.png"]["error"] is None
    assert by_path["00000.png"]["VQAScore"] is None
    assert doc["averages"]["VQAScore"] is None
    assert doc["averages"]["CLIPScore"] == pytest.approx(table["CLIPScore"].dropna().mean())


def test_json_keeps_unicode_and_newlines(written):
    _, paths = written
    prompts = [entry["prompt"] for entry in strict_json(paths[1])["per_image"]]
    assert "café ☕ — ünïcödé" in prompts and "first line\nsecond line" in prompts
    assert "café ☕" in paths[1].read_text(encoding="utf-8")  # ensure_ascii=False


# ----- parquet ------------------------------------------------------------------------------------
def test_parquet_is_typed(written):
    table, paths = written
    arrow = pq.read_table(paths[2])
    schema = {field.name: field.type for field in arrow.schema}
    assert list(schema) == [*ID_COLUMNS, "sample", *COLUMNS, "error"]
    assert schema["prompt_idx"] == pa.int64() and schema["sample"] == pa.int64()
    assert all(schema[c] == pa.float64() for c in COLUMNS)
    assert pa.types.is_string(schema["error"]) or pa.types.is_large_string(schema["error"])
    frame = pd.read_parquet(paths[2])
    assert str(frame["prompt_idx"].dtype) == "Int64"
    assert frame["prompt_idx"].isna().sum() == 1
    assert frame["CLIPScore"].dtype == np.float64 and frame["CLIPScore"].isna().sum() == 2
    assert frame["VQAScore"].isna().all()
    assert sorted(frame["error"].dropna()) == ["clipscore: boom", "missing prompt"]
    assert frame["prompt"].dropna().tolist() == TRICKY_PROMPTS


def test_parquet_error_column_is_text_even_without_errors(tmp_path):
    # With no failed row every error is None; the column must still be a string column, so that
    # the files of several folders (some with errors) share one schema.
    path = write_folder_results(make_table(["a", "b"]), tmp_path, COLUMNS, {})[2]
    schema = pq.read_schema(path)
    assert pa.types.is_string(schema.field("error").type) or pa.types.is_large_string(schema.field("error").type)
    assert schema.field("prompt").type == schema.field("image_path").type


# ----- atomic writes ------------------------------------------------------------------------------
def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_creates_parents_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "a" / "b" / "file.csv"
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert leftovers(target.parent) == []
    atomic_write(target, b"newer")
    assert target.read_bytes() == b"newer" and leftovers(target.parent) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch, failing):
    target = tmp_path / "scores.csv"
    target.write_bytes(b"old content")

    def boom(*args, **kwargs):
        raise OSError(f"simulated {failing} failure")

    monkeypatch.setattr(results.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(target, b"half-written new content")
    assert target.read_bytes() == b"old content"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_failed_folder_write_keeps_earlier_results(tmp_path, monkeypatch):
    out = tmp_path / "out"
    paths = write_folder_results(make_table(["a"]), out, COLUMNS, {})
    before = {p: p.read_bytes() for p in paths}
    real_replace = os.replace

    def replace_fails_for_json(src, dst):
        if str(dst).endswith(".json"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", replace_fails_for_json)
    with pytest.raises(OSError, match="disk full"):
        write_folder_results(make_table(["b"]), out, COLUMNS, {})
    assert paths[1].read_bytes() == before[paths[1]]  # the JSON is the old one, whole
    assert paths[2].read_bytes() == before[paths[2]]  # not reached
    assert leftovers(out) == []


# ----- summary ------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ["HPSv2Score", "CLIPScore", "PickScore_scaled"]
SUMMARY_ROWS = [
    {"folder": "variant_a", "images": 10, "failed": 0, "means": {"HPSv2Score": 0.25, "CLIPScore": 0.123456789, "PickScore_scaled": 21.5}},
    {"folder": "variant|b", "images": 8, "failed": 2, "means": {"HPSv2Score": 0.5, "CLIPScore": None, "PickScore_scaled": float("nan")}},
]


def test_write_summary_csv_one_row_per_folder(tmp_path):
    paths = write_summary(SUMMARY_ROWS, SUMMARY_COLUMNS, tmp_path)
    assert [p.name for p in paths] == ["summary.csv", "summary.md"]
    rows = read_csv_rows(paths[0])
    assert rows[0] == ["folder", "images", "failed", *SUMMARY_COLUMNS]
    assert rows[1] == ["variant_a", "10", "0", "0.250000", "0.123457", "21.500000"]
    assert rows[2] == ["variant|b", "8", "2", "0.500000", "", ""]
    assert len(rows) == 3
    assert leftovers(tmp_path) == []


def test_write_summary_markdown(tmp_path):
    md = write_summary(SUMMARY_ROWS, SUMMARY_COLUMNS, tmp_path)[1].read_text(encoding="utf-8").splitlines()
    assert md[0] == "| folder | images | failed | HPSv2Score | CLIPScore | PickScore_scaled |"
    assert md[1] == "|---|---|---|---|---|---|"
    assert md[2] == "| variant_a | 10 | 0 | 0.250000 | 0.123457 | 21.500000 |"
    assert md[3] == "| variant\\|b | 8 | 2 | 0.500000 | – | – |"  # pipe escaped, missing shown as a dash
    assert len(md) == 4


def test_column_means_and_terminal_table():
    table = pd.DataFrame({"A": [1.0, np.nan, 3.0], "B": [np.nan, np.nan, np.nan]})
    assert column_means(table, ["A", "B", "C"]) == {"A": 2.0, "B": None, "C": None}
    text = format_summary_table(SUMMARY_ROWS, SUMMARY_COLUMNS).splitlines()
    assert text[0].split() == ["folder", "images", "failed", *SUMMARY_COLUMNS]
    assert text[2].split() == ["variant|b", "8", "2", "0.500000", "-", "-"]


def test_missing_text_in_string_dtype_columns(tmp_path):
    # pandas 3 infers the ``str`` dtype for text, whose missing value is NaN (not None): the CSV
    # must still show an empty cell, not "nan", and JSON null.
    table = make_table(["a", "b"])
    table["prompt"] = pd.Series(["a", None])
    table["error"] = pd.Series([None, "missing prompt"])
    paths = write_folder_results(table, tmp_path, COLUMNS, {})
    body = read_csv_rows(paths[0])[1:-1]
    assert [row[1] for row in body] == ["a", ""]
    per_image = strict_json(paths[1])["per_image"]
    assert [e["prompt"] for e in per_image] == ["a", None]
    assert [e["error"] for e in per_image] == [None, "missing prompt"]


def test_json_values_round_trip_exactly_column_at_a_time():
    import json as _json

    import numpy as _np
    import pandas as _pd

    from janus_ray.results import render_json as _render

    table = _pd.DataFrame({
        "prompt_idx": _pd.array([0, None, 2], dtype="Int64"),
        "prompt": ['a "quoted"\nprompt ☕', None, "x"],
        "image_path": ["a.png", "b.png", "c\\d.png"],
        "sample": _pd.array([0, 1, 0], dtype="Int64"),
        "CLIPScore": [1 / 3, _np.nan, -1e-05],
        "error": [None, "missing prompt", None],
    })
    doc = _json.loads(_render(table, ["CLIPScore"], {"k": [1, 2]}))
    rows = doc["per_image"]
    assert rows[0] == {"prompt_idx": 0, "prompt": 'a "quoted"\nprompt ☕', "image_path": "a.png",
                       "CLIPScore": 1 / 3, "sample": 0, "error": None}
    assert rows[1]["prompt_idx"] is None and rows[1]["CLIPScore"] is None and rows[1]["prompt"] is None
    assert rows[2]["CLIPScore"] == -1e-05 and rows[2]["image_path"] == "c\\d.png"
    assert doc["meta"] == {"k": [1, 2]} and doc["averages"]["CLIPScore"] == (1 / 3 - 1e-05) / 2
