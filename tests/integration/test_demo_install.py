"""`janus-ray demo` from a plain, non-editable `pip install .` run outside the checkout.

The package must carry everything the demo needs (it writes its own tiny weights). To avoid
reinstalling torch and friends, the fresh venv sees the running interpreter's site-packages through
a .pth file; janus_ray itself is installed into the venv (non-editable) from a copy of the sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

import janus_ray
from janus_ray.demo import PROMPTS, VARIANTS

REPO = Path(janus_ray.__file__).resolve().parents[1]


def _venv_site_packages(venv: Path) -> Path:
    python = venv / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


@pytest.mark.ray
@pytest.mark.timeout(900)
def test_demo_runs_from_a_non_editable_install_outside_the_checkout(tmp_path):
    # Only what a source distribution of the package holds: no tests/, no fixtures.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "janus_ray", source / "janus_ray", ignore=shutil.ignore_patterns("__pycache__"))

    venv = tmp_path / "venv"
    # --without-pip: pip and setuptools come from the running interpreter too (a venv's bundled
    # setuptools may predate the pyproject build this package needs).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = _venv_site_packages(venv)
    # The running interpreter's installed libraries (torch, ray, ...), after the venv's own.
    (site_packages / "_janus_ray_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # nothing is downloaded
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)],
        check=True, env=env, cwd=tmp_path,
    )  # fmt: skip

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import janus_ray; print(janus_ray.__file__)"],
        check=True, capture_output=True, text=True, env=env, cwd=work,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site_packages), f"janus_ray imported from {where}, not the venv"

    demo = work / "demo"
    run = subprocess.run(
        [str(venv / "bin" / "janus-ray"), "demo", "--dir", str(demo)],
        capture_output=True, text=True, env=env, cwd=work, timeout=840,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]

    assert (demo / "weights" / "clip-flant5-xxl" / "pytorch_model.bin").is_file()
    for variant in VARIANTS:
        scores = pd.read_parquet(demo / "variants" / variant / "janus_eval_scores.parquet")
        assert len(scores) == len(PROMPTS)
        for column in ("VQAScore", "CLIPScore", "ITMScore", "HPSv2Score", "HPSv2.1Score", "PickScore", "ImageReward"):
            assert scores[column].notna().all(), (variant, column)
    for name in ("summary.csv", "summary.md", "report.html"):
        assert (demo / "variants" / name).is_file()
