"""scripts/gpu_check.py --dry-run: the GPU kit's own code on CPU with the tiny fixtures, as CI runs it.

Checks the structure of gpu_check.json / gpu_check.md and that the parity part passes, so what
runs on the scarce GPU has already run once. No figure is asserted (they are CPU numbers of tiny
models); only that every part is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: each test runs scripts/gpu_check.py in a subprocess (a dry run imports torch and every scorer)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
TABLE_KEYS = {"dtype", "batch_size", "images_per_s", "peak_gpu_memory_gb", "weights_gb", "activation_gb_per_image"}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # The dry run takes about a minute on an idle 2-core VM (default budget 110 s); the budget here
    # is larger so that a loaded CI machine does not cut parts. The pipeline under Ray is covered
    # by the end-to-end tests.
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--budget", "240",
                           "--no-pipeline"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    return proc, out


def test_dry_run_exits_zero_and_prints_the_markdown(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert proc.stdout.strip() == md.strip()
    for heading in ("# gpu_check (dry run", "## a. Parity on the device", "## b. Model-only throughput",
                    "## c. Pipeline end to end"):
        assert heading in md
    assert "**PASS**" in md


def test_dry_run_json_structure(dry_run):
    _, out = dry_run
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["dry_run"] is True and report["within_budget"] is True
    machine = report["machine"]
    assert machine["versions"]["torch"] and machine["versions"]["transformers"]
    assert set(machine["importable"]) == {"ray", "open_clip", "ftfy"}

    a = report["parity"]
    assert a["float32_pass"] is True
    scorers = {row["scorer"] for row in a["float32"]}
    assert scorers == {"vqascore", "clipscore", "pickscore", "itmscore", "hpsv2", "hpsv2.1", "imagereward"}
    assert all(row["pass"] and row["option"] == "float32" for row in a["float32"])
    assert {row["option"] for row in a["drift"]} == {"reference"}
    assert {row["dtype"] for row in a["drift"] if row["scorer"] == "vqascore"} == {"bfloat16"}

    b = report["throughput"]
    assert "error" not in b, b
    opt_ins = {f"{m}[{o}]" for m in ("clipscore", "pickscore", "imagereward") for o in ("tf32", "bfloat16")}
    assert set(b["metrics"]) == {"vqascore", "vqascore[sdpa]", "clipscore", "pickscore", "itmscore", "hpsv2",
                                 "imagereward", *opt_ins}
    for label, entry in b["metrics"].items():
        assert "error" not in entry, (label, entry.get("traceback"))
        measured = [row for row in entry["sweep"] if "images_per_s" in row]
        assert measured, label
        assert all(row["images_per_s"] > 0 for row in measured)
    assert b["metrics"]["vqascore"]["dtype"] == "bfloat16" and b["metrics"]["clipscore[bfloat16]"]["dtype"] == "bfloat16"
    assert b["metrics"]["clipscore[tf32]"]["tf32"] is True and b["metrics"]["clipscore"]["tf32"] is False
    assert set(b["vqascore_attention"]) == {"vqascore", "vqascore[sdpa]"}

    assert report["pipeline"] == {"skipped": "--no-pipeline"}


def test_dry_run_cost_table_format_stays_out_of_the_package(dry_run):
    _, out = dry_run
    table = json.loads((out / "measured_costs.json").read_text(encoding="utf-8"))
    assert set(table) == {"gpu", "measured_at", "metrics"}
    assert isinstance(table["gpu"], str) and isinstance(table["measured_at"], str)
    assert set(table["metrics"]) == {"vqascore", "clipscore", "pickscore", "itmscore", "hpsv2", "hpsv2.1", "imagereward"}
    for metric, row in table["metrics"].items():
        assert set(row) == TABLE_KEYS, metric
        assert isinstance(row["batch_size"], int) and isinstance(row["dtype"], str)
        assert all(isinstance(row[k], float) for k in TABLE_KEYS - {"dtype", "batch_size"}), metric
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["table_written"] == str(out / "measured_costs.json")


def test_no_gpu_without_dry_run_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 2 and "no CUDA device: run with --dry-run on CPU" in proc.stderr


def test_write_table_refused_in_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--write-table", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=REPO)
    assert proc.returncode == 2 and "--write-table needs a GPU run" in proc.stderr
