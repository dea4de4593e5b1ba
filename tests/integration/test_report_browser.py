"""The report end to end: a synthetic scored output root (written with results.write_folder_results,
real images on disk) -> report.html / report.md / comparison.csv, opened in headless Chromium."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from janus_ray.report import build_report
from janus_ray.report import build as report_build
from janus_ray.report.data import load_all
from janus_ray.report.gallery import Thumbs
from tools.screenshot import dump_dom, find_chromium, loaded_images, screenshot
from tools.synthetic import make_synthetic_run

N_FOLDERS, N_PROMPTS, N_METRICS = 3, 10, 6


def _need_chromium() -> None:
    if find_chromium() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed, and CI=true: install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium); the browser test needs it")


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """Results in <root>/results/<variant> (--output-dir), images in <root>/<variant>."""
    return make_synthetic_run(tmp_path_factory.mktemp("report"), N_FOLDERS, N_PROMPTS, output_dir=True)


@pytest.fixture(scope="module")
def report(run_root):
    return build_report(run_root, seed=0, n_resamples=300)


def test_writes_the_three_files(run_root, report):
    assert [p.name for p in report] == ["report.html", "report.md", "comparison.csv", "comparison.json"]
    assert all(p.parent == run_root.resolve() and p.stat().st_size > 0 for p in report)
    table = pd.read_csv(report[2])
    assert len(table) == N_FOLDERS * N_METRICS  # PickScore_scaled is a rescaling, not a metric of its own
    assert set(table["n_resamples"]) == {300}
    assert table["holm_p"].notna().sum() == (N_FOLDERS - 1) * N_METRICS
    markdown = report[1].read_text(encoding="utf-8")
    assert "## Mean [95% CI]" in markdown and "## Paired difference" in markdown and "mean rank" in markdown


def test_html_is_self_contained_escaped_and_small(report):
    html = report[0].read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # no JavaScript, and the prompt's <script> is escaped
    assert "&lt;script&gt;alert(" in html
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert srcs and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    assert "http://" not in html and "https://" not in html
    assert "image file not found" not in html  # images found through meta.config.folders (--output-dir)
    assert len(html.encode()) < report_build.MAX_HTML_BYTES
    assert "at most 160 px" in " ".join(html.split())  # the size cap is stated in the footer


def test_images_are_found_in_results_written_into_the_folders(tmp_path):
    root = make_synthetic_run(tmp_path, 2, 4)
    folders, baseline = load_all(root, None)
    assert baseline == folders[0].name
    assert all(f.image_file(p) is not None for f in folders for p in f.table["image_path"])


def test_thumbnails_respect_the_budget(tmp_path):
    image = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 400, 3), dtype=np.uint8)).save(image)
    thumbs = Thumbs(budget=10**6)
    tag = thumbs.html(image, "x")
    assert 'width="107" height="160"' in tag  # 160 px long side
    assert "not embedded" in Thumbs(budget=100).html(image, "x")
    assert "not found" in thumbs.html(None, "x")


def test_grids_are_dropped_when_the_page_would_exceed_the_cap(monkeypatch, tmp_path):
    monkeypatch.setattr(report_build, "MAX_HTML_BYTES", 1)
    html = build_report(make_synthetic_run(tmp_path, 2, 4), n_resamples=50)[0].read_text(encoding="utf-8")
    assert "Image grids left out" in html and "data:image/jpeg" not in html and 'id="summary"' in html


@pytest.mark.slow  # starts headless Chromium
def test_report_renders_in_chromium_with_every_image_loaded(report, tmp_path):
    _need_chromium()
    html = report[0]
    dom = dump_dom(html)
    for table_id in ("summary", "paired", "ranks"):
        assert f'id="{table_id}"' in dom
    assert "significant" in dom
    loaded, total = loaded_images(html)
    expected = html.read_text(encoding="utf-8").count("<img ")
    assert total == expected > 2 * N_METRICS  # the charts and the thumbnails
    assert loaded == total
    png = screenshot(html, tmp_path / "report.png")
    with Image.open(png) as shot:
        assert shot.size == (1400, 2400)
        assert np.asarray(shot.convert("L")).std() > 10  # not a blank page


def test_cli_subcommand_builds_the_report(tmp_path):
    import argparse

    from janus_ray.report import add_report_subcommand

    root = make_synthetic_run(tmp_path, 2, 4)
    parser = argparse.ArgumentParser()
    add_report_subcommand(parser.add_subparsers(dest="command", required=True))
    baseline = sorted(p.name for p in root.iterdir() if p.is_dir())[1]
    args = parser.parse_args(["report", str(root), "--baseline", baseline, "--resamples", "50", "--seed", "1"])
    assert args.func(args) == 0
    table = pd.read_csv(root / "comparison.csv")
    assert set(table["baseline"]) == {baseline} and set(table["n_resamples"]) == {50} and set(table["seed"]) == {1}
