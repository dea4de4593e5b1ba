"""Shared fixtures: the parity weights root, its cases and golden scores; the `ray` marker.

Tests that start Ray are marked ``ray`` (explicitly, or here when they use a Ray fixture), so
``python -m pytest -m "not ray"`` is the fast tier.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PARITY_DIR = Path(__file__).parent / "fixtures" / "parity"
WEIGHTS_ROOT = PARITY_DIR / "weights"
IMAGES_DIR = PARITY_DIR / "images"


def load_cases() -> list[dict]:
    with (PARITY_DIR / "cases.jsonl").open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_golden() -> dict:
    return json.loads((PARITY_DIR / "golden.json").read_text(encoding="utf-8"))


#: fixtures that start Ray: a test using one (directly or through another fixture) is a `ray` test
RAY_FIXTURES = {"local_ray", "ray_head", "own_ray", "killing_ray"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return WEIGHTS_ROOT


@pytest.fixture(scope="session")
def parity_cases() -> list[dict]:
    return load_cases()


@pytest.fixture(scope="session")
def golden() -> dict:
    return load_golden()
