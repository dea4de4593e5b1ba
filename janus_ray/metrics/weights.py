"""Weights-root layout: which files each scorer needs, checking them, and clear errors.

The layout is the one our users already have (their ``dataset/`` folder):

    clip-flant5-xxl/  clip-flant5-xl/ (optional)  clip-vit-large-patch14-336/  blip2-itm-vit-g/
    PickScore_v1/  HPSv2/HPS_v2_compressed.pt  HPSv2/HPS_v2.1_compressed.pt
    ImageReward/ImageReward.pt  ImageReward/med_config.json  bert-base-uncased/
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_ray.errors import WeightsError

LAYOUT_HELP = """Expected weights-root layout:
  <weights-root>/clip-flant5-xxl/            (VQAScore; or clip-flant5-xl/) config.json, weights, spiece.model
  <weights-root>/clip-vit-large-patch14-336/ (CLIPScore, and VQAScore's vision tower) HF CLIP folder
  <weights-root>/blip2-itm-vit-g/            (ITMScore) HF Blip2ForImageTextRetrieval folder
  <weights-root>/PickScore_v1/               (PickScore) HF CLIP folder with its processor files
  <weights-root>/HPSv2/HPS_v2_compressed.pt  (HPSv2; HPS_v2.1_compressed.pt for HPSv2.1)
  <weights-root>/ImageReward/ImageReward.pt + med_config.json  (ImageReward)
  <weights-root>/bert-base-uncased/          (ImageReward's tokenizer) vocab.txt"""


@dataclass(frozen=True)
class RequiredFile:
    """One file a scorer needs. ``alternatives`` are other names that satisfy the same need."""

    path: Path
    purpose: str
    alternatives: tuple[Path, ...] = ()

    def candidates(self) -> tuple[Path, ...]:
        return (self.path, *self.alternatives)

    def resolve(self) -> Path | None:
        """The first candidate that exists, or None."""
        return next((p for p in self.candidates() if p.exists()), None)


#: The weight files a Hugging Face folder may hold, in order of preference (an ``.index.json``
#: lists the shards of a sharded checkpoint).
HF_WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def hf_weights_file(folder: Path, purpose: str) -> RequiredFile:
    """The model weights of a Hugging Face folder: safetensors preferred; a sharded index or
    pytorch_model.bin (whole or sharded) accepted."""
    first, *alternatives = HF_WEIGHTS_FILES
    return RequiredFile(folder / first, purpose, tuple(folder / name for name in alternatives))


def file_status(path: Path, deep: bool = False) -> str:
    """'OK', 'MISSING' or 'UNREADABLE' (exists but cannot be opened or is structurally broken).

    The default check reads only a file's structure, never its whole body (a VQAScore checkpoint
    is ~23 GB and this runs on the driver and in every actor): a JSON file is parsed; a zip
    checkpoint (``.pt`` / ``.bin`` / ``.pth`` written by torch.save) must have a readable central
    directory whose every member lies inside the file (catches truncation); a ``.safetensors``
    file must have a plausible header length and, when its header parses, tensors that end
    exactly at the end of the file; any other ``.pt`` / ``.bin`` / ``.pth`` must start as a pickle
    does (torch.save's legacy format: 0x80, then protocol 2-5). ``deep=True`` (``janus-ray
    check-weights --deep``) also CRC-checks every zip member, reading the whole file.
    """
    if not path.exists():
        return "MISSING"
    try:
        if path.is_dir():
            return "OK"
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
        if size == 0:
            return "UNREADABLE"
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix in {".pt", ".bin", ".pth"} and head[:2] == b"PK":
            if not _zip_ok(path, size, deep):
                return "UNREADABLE"
        elif path.suffix in {".pt", ".bin", ".pth"}:
            # not a zip: torch.save's legacy format, a pickle (protocol 2-5: 0x80 then the protocol)
            if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5:
                return "UNREADABLE"
        elif path.suffix == ".safetensors":
            if not _safetensors_ok(path, head, size):
                return "UNREADABLE"
    except (OSError, ValueError, zipfile.BadZipFile):
        return "UNREADABLE"
    return "OK"


def _zip_ok(path: Path, size: int, deep: bool) -> bool:
    """The central directory reads and every member's data lies inside the file (CRCs if ``deep``)."""
    with zipfile.ZipFile(path) as archive:  # reads the end-of-archive record and the directory only
        for info in archive.infolist():
            # local header (30 bytes + name + extra) then the data: must end before the directory
            if info.header_offset + 30 + len(info.filename) + info.compress_size > size:
                return False
        if deep and archive.testzip() is not None:
            return False
    return True


def _safetensors_ok(path: Path, head: bytes, size: int) -> bool:
    """Header length plausible; if the header is JSON, the last tensor ends at the end of the file.

    A header that is not JSON is left to the safetensors loader, which names the file.
    """
    header_len = int.from_bytes(head, "little")
    if len(head) < 8 or header_len <= 0 or header_len > size - 8:
        return False
    with path.open("rb") as fh:
        fh.seek(8)
        raw = fh.read(header_len)
    try:
        header = json.loads(raw)
    except ValueError:
        return True
    if not isinstance(header, dict):
        return True
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2]
    return not ends or 8 + header_len + max(ends) == size


def check_required(files: list[RequiredFile], scorer_name: str) -> None:
    """Raise one WeightsError naming every missing or unreadable file and the expected layout."""
    problems = []
    for item in files:
        found = item.resolve()
        if found is None:
            names = " or ".join(str(p) for p in item.candidates())
            problems.append(f"  MISSING     {names}  ({item.purpose})")
        elif file_status(found) != "OK":
            problems.append(f"  UNREADABLE  {found}  ({item.purpose})")
    if problems:
        raise WeightsError(
            f"Cannot load scorer {scorer_name!r}: weight files are missing or unreadable:\n"
            + "\n".join(problems)
            + "\n"
            + LAYOUT_HELP
            # eval stops at the first metric with a problem: an empty or wrong root names one metric only
            + "\n`janus-ray check-weights --weights-root DIR [--metrics ...]` lists the files of every metric."
        )


def load_failure(scorer_name: str, path: Path, exc: BaseException) -> WeightsError:
    """Wrap an exception raised while reading a weight file into a WeightsError naming the file.
    A tensor of another shape than the model's config describes (torch's "size mismatch") names
    both files: the weights may be fine and the config.json beside them another model's."""
    text = str(exc)
    if "size mismatch" in text or "ignore_mismatched_sizes" in text:  # torch / transformers 5's wording
        detail = next((line.strip() for line in text.splitlines() if "size mismatch" in line),
                      "tensor shapes differ; transformers printed which above")
        return WeightsError(
            f"Cannot load scorer {scorer_name!r}: {path} does not match the model that "
            f"{path.parent / 'config.json'} describes ({detail}): is config.json from another checkpoint?\n{LAYOUT_HELP}"
        )
    return WeightsError(
        f"Cannot load scorer {scorer_name!r}: {path} is corrupt or not in the expected format "
        f"({type(exc).__name__}: {exc}).\n{LAYOUT_HELP}"
    )


def read_json(path: Path, scorer_name: str) -> dict[str, Any]:
    """A JSON object from a weights-root file; WeightsError naming the file when it is unreadable,
    not JSON, or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise load_failure(scorer_name, path, exc) from exc
    if not isinstance(data, dict):
        raise load_failure(scorer_name, path, TypeError(f"expected a JSON object, got {type(data).__name__}"))
    return data
