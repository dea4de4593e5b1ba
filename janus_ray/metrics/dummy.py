"""A test and benchmark scorer: no model, a deterministic score, any cost you ask for, faults on demand.

``score = blake2b(float32 pixel bytes + prompt) / 2**64`` in [0, 1): the same image and prompt
always give the same number, through any pipeline layout, so a test can compare a run with
direct scoring exactly. It reads no weight file.

It stands in for a real scorer where the model is not the point: the fast driver tests, the
overhead and driver benchmarks (``sleep_s`` / ``busy_s`` per image, ``load_s`` and ``model_mb`` at
load give a chosen cost), and fault injection through its options, so that no test-only hook sits
in the production actors:

* ``fail_on_prompt``: raise (a Python exception, caught by the actor) for a batch holding a prompt
  containing this text -- the actor's per-row retry then isolates that row;
* ``die_on_prompt``: end the process (``os._exit``) on such a batch, as a crashed actor would;
  with ``die_once_file`` it dies only while that file does not exist, and creates it first (so a
  restarted actor goes on);
* ``stall_on_prompt`` + ``stall_until_file``: wait until that file exists before scoring such a
  batch (a run that cannot finish before the test lets it);
* ``fail_on_load``: raise a ``WeightsError`` with this text when the model loads (in the actor's
  constructor), as a checkpoint that does not match its model does.

Not one of the six metrics: not in ``DEFAULT_METRICS``, listed apart by ``janus-ray list``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from janus_ray.errors import ConfigError, WeightsError
from janus_ray.metrics.base import Option, PixelTransform, Scorer, non_negative_number, optional_text, positive_int
from janus_ray.metrics.weights import RequiredFile

if TYPE_CHECKING:  # annotations only: importing a scorer module must not import torch
    import torch

DEFAULT_IMAGE_SIZE = 16


@dataclass(frozen=True)
class DummyTransform(PixelTransform):
    """PIL image -> float32 CHW array in [0, 1]: RGB, bilinear resize to ``size`` x ``size``
    (``to_uint8``: the resized RGB as uint8 CHW; ``normalise``: / 255)."""

    size: int = DEFAULT_IMAGE_SIZE

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        rgb = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        import torch
        return pixels.to(torch.float32) / 255.0


def hash_score(pixels: np.ndarray, prompt: str) -> float:
    """The dummy score of one image: its float32 pixel bytes and the prompt, hashed to [0, 1)."""
    digest = hashlib.blake2b(np.ascontiguousarray(pixels, dtype=np.float32).tobytes() + prompt.encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "little") / 2**64


class DummyScorer(Scorer):
    """Deterministic hash score with a configurable cost and fault injection (tests, benchmarks)."""

    name: ClassVar[str] = "dummy"
    column: ClassVar[str] = "DummyScore"
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float | None, float | None]] = (0.0, 1.0)
    reference: ClassVar[str] = "none: a hash of the pixels and the prompt (test and benchmark scorer, not a metric)"
    testing_only: ClassVar[bool] = True
    accepted_options: ClassVar[dict[str, Option]] = {
        "image_size": Option(DEFAULT_IMAGE_SIZE, positive_int),
        **{key: Option(0.0, non_negative_number) for key in ("sleep_s", "busy_s", "load_s", "model_mb")},
        **{key: Option(None, optional_text) for key in (
            "fail_on_prompt", "die_on_prompt", "die_once_file", "stall_on_prompt", "stall_until_file",
            "fail_on_load")},
    }  # fmt: skip

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        checked = super().check_options(options)
        if (checked["stall_on_prompt"] is None) != (checked["stall_until_file"] is None):
            raise ConfigError("dummy: stall_on_prompt and stall_until_file go together.")
        if checked["die_once_file"] and not checked["die_on_prompt"]:
            raise ConfigError("dummy: die_once_file needs die_on_prompt.")
        return checked

    @classmethod
    def required_files(cls, weights_root: Path, **options: Any) -> list[RequiredFile]:
        cls.check_options(options)
        return []

    @classmethod
    def build_image_transform(cls, weights_root: Path, **options: Any) -> DummyTransform:
        return DummyTransform(cls.check_options(options)["image_size"])

    def load(self) -> None:
        import torch
        if self.settings["fail_on_load"]:
            raise WeightsError(f"Cannot load scorer 'dummy': {self.settings['fail_on_load']}")
        if self.settings["load_s"]:
            time.sleep(self.settings["load_s"])
        # A simulated model: that many MB really allocated (and touched) on the device.
        n = int(self.settings["model_mb"] * 2**20) // 4
        self.weights = torch.ones(n, dtype=torch.float32, device=self.device) if n else None

    def _inject_faults(self, prompts: list[str]) -> None:
        s = self.settings
        if s["stall_on_prompt"] and any(s["stall_on_prompt"] in p for p in prompts):
            while not os.path.exists(s["stall_until_file"]):
                time.sleep(0.05)
        if s["die_on_prompt"] and any(s["die_on_prompt"] in p for p in prompts):
            marker = s["die_once_file"]
            if marker is None or not os.path.exists(marker):
                if marker is not None:
                    Path(marker).write_text(f"killed dummy actor pid {os.getpid()}\n", encoding="utf-8")
                os._exit(1)
        if s["fail_on_prompt"]:
            matched = [p for p in prompts if s["fail_on_prompt"] in p]
            if matched:
                raise RuntimeError(f"dummy: fail_on_prompt {s['fail_on_prompt']!r} matched prompt {matched[0]!r}")

    def forward(self, pixel_values: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        import torch
        self._inject_faults(prompts)
        n = len(prompts)
        if self.settings["sleep_s"]:
            time.sleep(self.settings["sleep_s"] * n)
        if self.settings["busy_s"]:
            until = time.perf_counter() + self.settings["busy_s"] * n
            while time.perf_counter() < until:  # CPU work that holds the core (and the GIL)
                pass
        pixels = pixel_values.float().cpu().numpy()
        scores = [hash_score(pixels[i], prompt) for i, prompt in enumerate(prompts)]
        return {self.name: torch.tensor(scores, dtype=torch.float64)}
