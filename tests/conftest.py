"""Shared fixtures: the parity weights root, its cases and golden scores."""

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


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return WEIGHTS_ROOT


@pytest.fixture(scope="session")
def parity_cases() -> list[dict]:
    return load_cases()


@pytest.fixture(scope="session")
def golden() -> dict:
    return load_golden()
