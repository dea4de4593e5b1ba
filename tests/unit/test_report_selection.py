"""Which folders a report compares: run.json at the output root, result folders given directly,
and the old glob as a warned fallback (janus_ray.report.data.select, results.write_run_record)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from janus_ray.errors import InputError
from janus_ray.report import add_report_subcommand, build_report
from janus_ray.report.data import StaleDiscoveryWarning, load_all, select, unique_names
from janus_ray.results import RUN_RECORD, write_folder_results, write_run_record


def _results(out_dir: Path, offset: float = 0.0, n: int = 8) -> Path:
    """A result folder with one metric column (no images needed for the numbers)."""
    table = pd.DataFrame({
        "prompt_idx": np.arange(n), "prompt": [f"prompt {i}" for i in range(n)],
        "image_path": [f"{i}.png" for i in range(n)], "sample": 0, "error": None,
        "CLIPScore": np.linspace(0.2, 0.3, n) + offset,
    })
    meta = {"metrics": {"clipscore": {"column": "CLIPScore", "higher_is_better": True}}}
    write_folder_results(table, out_dir, ["CLIPScore"], meta)
    return out_dir


def test_run_record_lists_the_folders_with_absolute_paths(tmp_path):
    path = write_run_record(tmp_path, [("in/a", tmp_path / "a"), (tmp_path / "b", tmp_path / "b")])
    document = json.loads(path.read_text(encoding="utf-8"))
    assert path == tmp_path / RUN_RECORD and document["output_root"] == str(tmp_path.resolve())
    assert [f["results"] for f in document["folders"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert all(Path(f["input"]).is_absolute() for f in document["folders"])
    assert document["janus_ray_version"] and datetime.fromisoformat(document["time"]).tzinfo is not None


def test_run_record_excludes_stale_folders_and_finds_other_parents(tmp_path):
    root = tmp_path / "root"
    a = _results(root / "a")
    _results(root / "stale", 0.5)  # an earlier run's folder under the same root
    elsewhere = _results(tmp_path / "other" / "b", 0.01)
    write_run_record(root, [(a, a), (elsewhere, elsewhere)])
    selection = select([root])
    assert selection.source == "run.json" and selection.result_dirs == [a.resolve(), elsewhere.resolve()]
    assert selection.out_dir == root.resolve() and selection.names == ["a", "b"]
    folders, baseline = load_all(root, None)
    assert [f.name for f in folders] == ["a", "b"] and baseline == "a"


def test_root_without_run_record_falls_back_to_the_glob_with_a_warning(tmp_path):
    _results(tmp_path / "a")
    _results(tmp_path / "b")
    with pytest.warns(StaleDiscoveryWarning, match="has no run.json"):
        selection = select([tmp_path])
    assert selection.source == "discovered" and [d.name for d in selection.result_dirs] == ["a", "b"]


def test_run_record_naming_a_vanished_folder_is_an_input_error(tmp_path):
    a = _results(tmp_path / "a")
    write_run_record(tmp_path, [(a, a), (tmp_path / "gone", tmp_path / "gone")])
    with pytest.raises(InputError, match="lists result folder.*without janus_eval_scores.parquet.*gone"):
        select([tmp_path])
    (tmp_path / RUN_RECORD).write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="is not a janus-ray run record"):
        select([tmp_path])


def test_result_folders_given_directly(tmp_path):
    x = _results(tmp_path / "runs" / "one" / "out")
    y = _results(tmp_path / "runs" / "two" / "out", 0.02)
    selection = select([x, y])
    assert selection.source == "arguments" and selection.names == ["one/out", "two/out"]
    assert selection.out_dir == (tmp_path / "runs").resolve()
    with pytest.raises(InputError, match="hold\\(s\\) no janus_eval_scores.parquet"):
        select([x, tmp_path / "runs"])
    with pytest.raises(InputError, match="does not exist"):
        select([tmp_path / "nope"])


def test_unique_names_extend_by_parents_only_where_needed():
    assert unique_names([Path("/r/a/x"), Path("/r/b/x"), Path("/r/c/y")]) == ["a/x", "b/x", "y"]


def test_cli_takes_folders_and_writes_the_methods_json(tmp_path, capsys):
    x, y = _results(tmp_path / "x"), _results(tmp_path / "y", 0.01)
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "rep"
    args = parser.parse_args(["report", str(x), str(y), "--baseline", "x", "--out", str(out), "--resamples", "99"])
    assert args.func(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.json", "report.html", "report.md"]
    table = pd.read_csv(out / "comparison.csv").set_index("folder")
    assert table.loc["y", "mean_diff"] == pytest.approx(0.01) and table.loc["y", "n_pairs"] == 8
    methods = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    import numpy
    import scipy

    assert methods["versions"]["scipy"] == scipy.__version__ and methods["versions"]["numpy"] == numpy.__version__
    assert methods["unit"].startswith("prompt") and methods["correction"]["method"] == "holm"
    assert methods["folders_from"] == "arguments" and methods["test"]["monte_carlo"]["n_resamples"] == 99


def test_cli_prints_the_fallback_warning(tmp_path, capsys):
    _results(tmp_path / "a")
    _results(tmp_path / "b", 0.01)
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(tmp_path)])
    assert args.func(args) == 0
    assert "warning: Report:" in capsys.readouterr().err and "no run.json: earlier runs" in (tmp_path / "report.html").read_text()


def test_build_report_on_a_run_root_uses_the_record(tmp_path):
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b", 0.01)
    _results(tmp_path / "stale", 1.0)
    write_run_record(tmp_path, [(a, a), (b, b)])
    paths = build_report(tmp_path, n_resamples=99)
    assert set(pd.read_csv(paths[2])["folder"]) == {"a", "b"}
    assert "the run record run.json" in paths[0].read_text(encoding="utf-8")


def test_reporting_some_of_a_runs_folders_into_its_root_warns_that_the_runs_report_is_replaced(tmp_path):
    """`janus-ray report out/varA` writes to out/ by default, over the run's report of all its folders."""
    import warnings

    a, b = _results(tmp_path / "a"), _results(tmp_path / "b", 0.01)
    write_run_record(tmp_path, [(a, a), (b, b)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select([a])  # no report there yet: nothing replaced, no warning
        (tmp_path / "report.html").write_text("the run's report")
        select([a, b])  # the run's own folders: the same report again, no warning
        select([a], out_dir=tmp_path / "elsewhere")  # --out: nothing replaced
    with pytest.warns(UserWarning, match="replacing .*report.html.*, the report of the run's 2 folder.*with a report of 1 folder.*--out"):
        selection = select([a])
    assert selection.out_dir == tmp_path.resolve()


def test_the_baseline_may_be_given_as_a_path_of_the_result_or_image_folder(tmp_path):
    """New user's trial: `--baseline runs/x` (a path, as folders are given everywhere else) was
    refused; only the bare name was accepted."""
    from janus_ray.errors import ConfigError

    root = tmp_path / "root"
    inputs = tmp_path / "images"
    a, b = _results(root / "a"), _results(root / "b", 0.01)
    write_run_record(root, [(inputs / "a", a), (inputs / "b", b)])
    assert load_all(root, "b")[1] == "b"
    assert load_all(root, str(b) + "/")[1] == "b"
    assert load_all(root, str(inputs / "b"))[1] == "b"
    with pytest.raises(ConfigError, match=r"baseline 'c' is not a result folder; folders: a, b \(give one of these"):
        load_all(root, "c")


def test_the_default_baseline_is_the_first_folder_with_rows(tmp_path):
    """New user's trial: an empty folder (0 images) sorted first became the baseline, and every
    comparison read 'no paired data'."""
    root = tmp_path / "root"
    empty = _results(root / "a_empty", n=0)
    b, c = _results(root / "b"), _results(root / "c", 0.01)
    write_run_record(root, [(empty, empty), (b, b), (c, c)])
    folders, baseline = load_all(root, None)
    assert [f.name for f in folders] == ["a_empty", "b", "c"] and baseline == "b"


def test_a_moved_or_copied_output_root_reports_its_own_folders(tmp_path):
    """New user's trial: run.json's absolute paths made `report` fail on a moved output root
    ("lists result folder(s) without ...") and silently report the original's folders on a copy."""
    import shutil

    from janus_ray.errors import InputError

    root = tmp_path / "root"
    a, b = _results(root / "a"), _results(root / "b", 0.01)
    outside = _results(tmp_path / "elsewhere" / "c", 0.02)
    write_run_record(root, [(a, a), (b, b), (outside, outside)])
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    assert select([moved]).result_dirs == [moved / "a", moved / "b", outside.resolve()]
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.rmtree(copy / "b")
    with pytest.raises(InputError, match=str(copy / "b")):
        select([copy])


def test_cli_refuses_an_out_that_is_a_file_in_one_line(tmp_path):
    """A new user's trial: `report ROOT --out afile` ended in a FileExistsError traceback."""
    from janus_ray.errors import ConfigError

    x, y = _results(tmp_path / "x"), _results(tmp_path / "y", 0.01)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(x), str(y), "--out", str(tmp_path / "afile")])
    with pytest.raises(ConfigError, match=r"--out .*afile is a file, not a directory"):
        args.func(args)
    args = parser.parse_args(["report", str(x), str(y), "--out", str(tmp_path / "afile" / "sub")])
    with pytest.raises(ConfigError, match=r"Cannot create --out directory .*afile/sub: Not a directory"):
        args.func(args)


def test_cli_refuses_an_out_it_cannot_write_into_before_the_statistics(tmp_path, monkeypatch):
    """A second new user's trial: `report ... --out <immutable dir>` ended in a PermissionError traceback."""
    import janus_ray.results
    from janus_ray.errors import ConfigError

    x, y = _results(tmp_path / "x"), _results(tmp_path / "y", 0.01)
    out = tmp_path / "locked"
    out.mkdir()
    monkeypatch.setattr(janus_ray.results, "unwritable_reason",
                        lambda d: "Operation not permitted" if Path(d) == out else None)
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(x), str(y), "--out", str(out)])
    with pytest.raises(ConfigError, match=r"Cannot write to --out directory .*locked: Operation not permitted"):
        args.func(args)


def test_a_report_written_elsewhere_with_out_still_names_the_runs_output_root(tmp_path):
    """A new user's trial (stop 14): `janus-ray report ROOT --out DIR` said "Output root: DIR"."""
    from html import escape

    a, b = _results(tmp_path / "run" / "a"), _results(tmp_path / "run" / "b", 0.01)
    write_run_record(tmp_path / "run", [(a, a), (b, b)])
    html = build_report(tmp_path / "run", n_resamples=99, out_dir=tmp_path / "elsewhere")[0]
    assert html.parent == (tmp_path / "elsewhere").resolve()
    page = html.read_text(encoding="utf-8")
    assert f"Output root: <code>{escape(str((tmp_path / 'run').resolve()))}</code>" in page


def test_cli_a_report_file_it_cannot_replace_is_one_line(tmp_path):
    """A new user's trial (stop 14): report.html made a directory beforehand ended `report` (and
    `eval`) in an IsADirectoryError traceback."""
    from janus_ray.errors import ConfigError

    x, y = _results(tmp_path / "x"), _results(tmp_path / "y", 0.01)
    (tmp_path / "out" / "report.html").mkdir(parents=True)
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(x), str(y), "--out", str(tmp_path / "out"), "--resamples", "9"])
    with pytest.raises(ConfigError, match=r"Cannot write the report: \[Errno 21\] Is a directory: .*report\.html'\."):
        args.func(args)
