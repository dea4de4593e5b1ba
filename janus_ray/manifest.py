"""Find the image-text pairs to score in each input folder (pure Python: no Ray, no torch).

Each folder is scanned on its own and must follow exactly one layout (``CONVENTIONS``). A folder
that matches several is an error: mixing would silently take prompts from the wrong source.
Problems found at scan time (index out of range, file listed but absent) keep their row, with
``error`` set, so they are counted as failed in the results instead of vanishing.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import posixpath
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from janus_ray.errors import ConfigError, InputError

#: files never sniffed for image content: the layouts' own text files
_TEXT_EXTENSIONS = frozenset({".txt", ".json", ".jsonl", ".csv"})
OUTPUT_PREFIX = "janus_eval_scores."  # our own outputs, written into the scanned folders
JANUS, HF_JSONL, HF_CSV, GENEVAL, SIDECAR, EMPTY = (
    "janus-prompt-dirs", "hf-metadata-jsonl", "hf-metadata-csv", "geneval", "sidecar-txt", "empty",
)
CONVENTIONS = (JANUS, HF_JSONL, HF_CSV, GENEVAL, SIDECAR, EMPTY)

FILE_NOT_FOUND = "file not found"
#: the error of a row whose prompt is empty or blank (nothing to score it against)
EMPTY_PROMPT = "empty prompt"
_PROMPT_DIR = re.compile(r"^prompt_(\d+)$", re.IGNORECASE)  # <run>/prompt_0007/
_IDX_SLUG_DIR = re.compile(r"^(\d+)_.+$")  # generated_samples_batch/12_a-red-cat/
_TRAILING_NUMBER = re.compile(r"(\d+)$")  # img_00, 00, img_20250101-120000_01
_GENEVAL_META = re.compile(r"^(\d+)/metadata\.jsonl$")
_GENEVAL_SAMPLE = re.compile(r"^(\d+)/samples/[^/]+$")
_GENEVAL_GRID = re.compile(r"^\d+/grid\.[^/]+$")  # GenEval writes it by default: not a sample
_OUT_OF_RANGE = re.compile(r"^prompt index \d+ out of range")

# Why an image on disk got no row: reason -> (warning text, counts as a problem in validate_report).
_DROP_REASONS = {
    "duplicate": ("duplicate image(s) dropped (same prompt index and sample; the first in path "
                  "order is kept)", True),
    "duplicate entry": ("metadata line(s) dropped: their file_name is already listed", True),
    "extra sample": ("extra sample(s) ignored: only the first sample of each prompt (the "
                     "lowest-numbered; in metadata and sidecar folders the first listed / by path) is "
                     "scored unless all samples are requested", False),
    "outside prompt dirs": ("image(s) ignored: not directly inside a prompt_<idx>/ or "
                            "<idx>_<slug>/ sub-folder", True),
    "no sample number": ("image(s) ignored: the file name does not end with a sample number "
                         "(img_00.jpg, 00.jpg, img_<date>-<time>_00.jpg) and the prompt folder "
                         "holds other images", True),
    "not in metadata": ("image(s) on disk have no metadata entry and are not scored", True),
    "not a geneval sample": ("image(s) ignored: not inside <idx>/samples/", True),
    "geneval grid": ("grid image(s) ignored: GenEval's <idx>/grid.png (its samples are scored)", False),
}
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ManifestRow:
    """One image-text pair to score."""

    folder: str  # the parent folder as given by the user
    prompt_idx: int | None  # 0-based index into the prompt list; None where the layout has none
    prompt: str | None  # None = missing prompt (the pipeline records "missing prompt")
    image_path: str  # absolute path
    rel_path: str  # relative to folder, posix separators: the CSV's image_path column
    # 0-based order of this image among its prompt's images (0 = first sample): by sample number
    # in prompt folders (img_01..img_04 -> 0..3), by listing/path order among the rows with the same
    # prompt text in the layouts that carry their own prompts. (prompt text, sample) pairs folders.
    sample: int
    error: str | None = None  # reason known at scan time; the row is scored as failed


@dataclass
class FolderScan:
    """What one folder holds: its layout, the rows to score, and what was left out and why."""

    folder: str
    convention: str  # one of CONVENTIONS
    rows: list[ManifestRow]
    warnings: list[str]
    images_found: int = 0  # image files on disk (hidden files and our outputs excluded)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> rel paths without a row
    #: prompts of the prompt list with no row in this folder (None without a prompt list)
    prompts_without_image: int | None = None
    #: their indices in the prompt list (validate lists the first few, as eval's warning does)
    prompts_without_image_idx: list[int] = field(default_factory=list)
    #: why this folder cannot be scored at all (images on disk but 0 rows); build_manifest raises it
    error: str | None = None
    #: ``<idx>_<slug>/`` sub-folders whose slug disagrees with prompt <idx> of the list ("dir vs 'text'")
    slug_mismatches: list[str] = field(default_factory=list)
    #: prompts of a self-describing folder that are not in the prompt list (scored, prompt_idx empty)
    prompts_not_in_list: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Prompt file


def load_prompts(path: str | os.PathLike) -> list[str]:
    """Read prompt.json: ``{"prompts": [...]}`` or a bare JSON list of strings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Prompt file not found: {path}" if not path.exists()
                         else f"Prompt file is not a file: {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"Prompt file {path} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}).") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"Prompt file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno}.") from exc
    prompts = _prompt_list(data, path)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InputError(f"Prompt file {path}: prompt at index {i} is not a string "
                             f"(got {type(prompt).__name__}: {prompt!r}).")
    if not prompts:
        raise InputError(f"Prompt file {path} holds no prompts.")
    return prompts


def _prompt_list(data: object, path: Path) -> list:
    """The list inside either accepted shape, or an InputError describing what was found."""
    expected = 'expected {"prompts": [...]} or a JSON list of strings'
    if isinstance(data, dict):
        if "prompts" not in data:
            keys = ", ".join(repr(k) for k in list(data)[:10]) or "none"
            raise InputError(f"Prompt file {path}: {expected}; the object has no 'prompts' key "
                             f"(keys: {keys}).")
        data = data["prompts"]
        if not isinstance(data, list):
            raise InputError(f"Prompt file {path}: {expected}; 'prompts' is a "
                             f"{type(data).__name__}, not a list.")
    if not isinstance(data, list):
        raise InputError(f"Prompt file {path}: {expected}; got a JSON {type(data).__name__}.")
    return data


# ---------------------------------------------------------------------------------------------
# Folder scanning


def build_manifest(folders: Iterable[str | os.PathLike], prompts: Sequence[str] | None,
                   all_samples: bool = False, limit: int | None = None,
                   raise_folder_errors: bool = True) -> list[FolderScan]:
    """Scan every folder; ``limit`` keeps at most N rows of each (smoke runs), of the same N prompts
    in every folder (``_limit_rows``), so that a smoke run still compares variants prompt by prompt.

    Raises InputError for a folder that holds images but yields no row (``FolderScan.error``),
    unless ``raise_folder_errors`` is False (``validate`` reports it with everything else).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of rows per folder, got {limit}.")
    folders = list(folders)
    if not folders:
        raise InputError("No input folders given.")
    seen: dict[str, str | os.PathLike] = {}
    for folder in folders:  # outputs are written into each folder: the same one twice would clash
        key = os.path.realpath(folder)
        if key in seen:
            raise InputError(f"Folder {folder} is given twice (same as {seen[key]}).")
        seen[key] = folder
    scans = [scan_folder(folder, prompts, all_samples) for folder in folders]
    errors = [scan.error for scan in scans if scan.error]
    if errors and raise_folder_errors:
        raise InputError("\n".join(errors))
    if limit is not None:
        _limit_rows(scans, limit, prompts)
    return scans


def _limit_rows(scans: list[FolderScan], limit: int, prompts: Sequence[str] | None) -> None:
    """Keep at most ``limit`` rows per folder, all of the same ``limit`` prompts: with a prompt list
    its first ``limit`` indices (every layout's rows carry the list's prompt_idx), without one the
    first ``limit`` prompts by first appearance over the folders in order (texts matched as
    ``normal_prompt`` does). A folder without some of them keeps fewer rows. Rows keep their order."""
    first: dict[str, int] = {}  # without a list: each prompt's rank, by first appearance
    if prompts is None:
        for scan in scans:
            for row in scan.rows:
                if row.prompt is not None:
                    first.setdefault(normal_prompt(row.prompt), len(first))

    def rank(row: ManifestRow) -> int | None:
        if prompts is not None:
            return row.prompt_idx
        return first[normal_prompt(row.prompt)] if row.prompt is not None else None

    for scan in scans:
        ranked = [(r, i) for i, r in enumerate(map(rank, scan.rows)) if r is not None and 0 <= r < limit]
        scan.rows = [scan.rows[i] for i in sorted(i for _, i in sorted(ranked)[:limit])]


def scan_folder(folder: str | os.PathLike, prompts: Sequence[str] | None,
                all_samples: bool = False) -> FolderScan:
    """Detect the folder's layout and list its rows, sorted by (prompt_idx, sample, rel_path)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"Input folder not found: {folder}" if not root.exists()
                         else f"Input path is not a folder: {folder}")
    files = _inventory(root)
    images = [f for f in files if _is_image(root, f)]
    found = _detect(files, images)
    if len(found) > 1:
        layouts = "; ".join(f"{name} (e.g. {example})" for name, example in found.items())
        raise InputError(f"Folder {folder} matches more than one input layout: {layouts}. "
                         "janus_ray does not mix prompt sources: keep one layout per folder.")
    if not found and images:
        raise InputError(_unknown_layout_message(folder, images))
    convention = next(iter(found), EMPTY)
    scan = FolderScan(str(folder), convention, [], [], images_found=len(images))
    if convention == EMPTY:
        scan.warnings.append(f"{folder}: no images found.")
        return scan
    if prompts is not None and convention != JANUS:
        scan.warnings.append(f"{folder}: the prompt list is not used for pairing: the {convention} layout "
                             "carries its own prompts (the list only counts which of its prompts have no image here).")
    _SCANNERS[convention](scan, root, files, images, prompts, all_samples)
    _finish(scan, prompts, all_samples)
    return scan


def _inventory(root: Path) -> list[str]:
    """Sorted relative posix paths of the visible files under root, our own outputs excluded.

    Directory symlinks are followed (run/prompt_0000 -> /data/gen/prompt_0000 is a common way to
    assemble a run); a link back to a folder already being walked is skipped, so loops end.
    """
    found = []
    top = os.fspath(root)
    prefix = top if top.endswith(os.sep) else top + os.sep
    # real paths of each walked folder's chain (itself and its ancestors up to root), handed from a
    # folder to its subfolders: realpath() only where a subfolder is a link (one lstat per folder,
    # not one per path component of every ancestor: 20k prompt folders took seconds)
    chains: dict[str, tuple[str, ...]] = {top: (os.path.realpath(top),)}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        chain = chains.pop(dirpath)
        kept = []
        for d in dirnames:
            if d.startswith("."):
                continue
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full) if os.path.islink(full) else os.path.join(chain[-1], d)
            if real not in chain:  # a link back to a folder being walked: skipped, so loops end
                kept.append(d)
                chains[full] = (*chain, real)
        dirnames[:] = kept
        rel_dir = "." if dirpath == top else dirpath[len(prefix):].replace(os.sep, "/")
        for name in filenames:
            if not name.startswith(".") and not name.startswith(OUTPUT_PREFIX):
                found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(found)


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions Pillow can open pixels from (its registered plugins, AVIF included).

    Save-only formats (PDF) and stub formats that need an external handler (HDF5, GRIB, BUFR, and
    WMF/EMF off Windows) are left out, as is MPEG (Pillow reads its size, never its pixels).
    """
    from PIL import Image, ImageFile

    Image.init()
    found = set()
    for ext, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt == "MPEG":
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        found.add(ext.lower())
    return frozenset(found)


def _is_image(root: Path, rel: str) -> bool:
    """By extension (Pillow's), else by content for a name Pillow does not know (img_00, a.img)."""
    ext = posixpath.splitext(rel)[1].lower()
    if ext in image_extensions():
        return True
    if ext in _TEXT_EXTENSIONS:
        return False
    return sniff_image(root / rel)


def sniff_image(path: Path) -> bool:
    """True if Pillow recognises the file's header as an image it can open (reads a few bytes)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format is not None and img.format.upper() != "MPEG"
    except Exception:  # noqa: BLE001 - UnidentifiedImageError, or a plugin choking on random bytes
        return False


def _detect(files: list[str], images: list[str]) -> dict[str, str]:
    """Every layout the folder shows evidence of -> one example path of that evidence."""
    fileset = set(files)
    evidence = {
        JANUS: next((f for f in images if _janus_dir_idx(f) is not None), None),
        HF_JSONL: "metadata.jsonl" if "metadata.jsonl" in fileset else None,
        HF_CSV: "metadata.csv" if "metadata.csv" in fileset else None,
        GENEVAL: next((f for f in files if _GENEVAL_META.match(f)), None),
        SIDECAR: next((f for f in images if _sidecar_of(f) in fileset), None),
    }
    return {name: example for name, example in evidence.items() if example is not None}


def _unknown_layout_message(folder: str | os.PathLike, images: list[str]) -> str:
    return (f"Folder {folder} holds {len(images)} image(s) (e.g. {images[0]}) but no known "
            "layout. Expected one of: <run>/prompt_<idx>/img_00.jpg or generated_samples_batch/"
            "<idx>_<slug>/00.jpg (with --prompt-json); metadata.jsonl or metadata.csv with "
            "file_name and prompt (or text) columns; GenEval <idx>/metadata.jsonl + "
            "<idx>/samples/*.png; or a <name>.txt prompt file beside each <name>.jpg.")


def _row(scan: FolderScan, root: Path, rel: str, idx: int | None, prompt: str | None,
         sample: int = 0, error: str | None = None) -> None:
    # An empty or blank prompt cannot be scored meaningfully: no prompt, and the row says why.
    if prompt is not None and not prompt.strip():
        prompt, error = None, error or EMPTY_PROMPT
    scan.rows.append(ManifestRow(scan.folder, idx, prompt, os.path.abspath(root / rel), rel,
                                 sample, error))


def _drop(scan: FolderScan, reason: str, rel: str) -> None:
    scan.dropped.setdefault(reason, []).append(rel)


# --- 1. Janus prompt dirs ----------------------------------------------------------------------


def _janus_dir_idx(rel: str) -> int | None:
    """Prompt index from the image's parent folder name (prompt_0007, 12_a-red-cat), else None."""
    parent = posixpath.basename(posixpath.dirname(rel))
    match = _PROMPT_DIR.match(parent) or _IDX_SLUG_DIR.match(parent)
    return int(match.group(1)) if match else None


def _sample_number(rel: str) -> int | None:
    match = _TRAILING_NUMBER.search(posixpath.splitext(posixpath.basename(rel))[0])
    return int(match.group(1)) if match else None


def _scan_janus(scan: FolderScan, root: Path, files: list[str], images: list[str],
                prompts: Sequence[str] | None, all_samples: bool) -> None:
    if prompts is None:
        raise InputError(f"Folder {scan.folder} uses the {JANUS} layout (prompt index in the "
                         "sub-folder names): --prompt-json is required for this layout.")
    # Sample numbers are relative: a prompt's first sample is its lowest-numbered image, so 1-based
    # (img_01..img_04) and 0-based names give the same samples; a folder's only image is sample 0.
    per_dir: dict[str, list[str]] = defaultdict(list)
    for rel in images:
        if _janus_dir_idx(rel) is None:
            _drop(scan, "outside prompt dirs", rel)
        else:
            per_dir[posixpath.dirname(rel)].append(rel)
    kept: dict[int, list[str]] = defaultdict(list)  # prompt idx -> rel paths in sample order
    numbers: dict[tuple[int, int], str] = {}
    for directory in sorted(per_dir):  # sorted, so the first of duplicates in path order wins
        rels = per_dir[directory]
        idx = _janus_dir_idx(rels[0])
        numbered = []
        for rel in rels:
            number = _sample_number(rel)
            if number is None and len(rels) > 1:
                _drop(scan, "no sample number", rel)
            elif (idx, number or 0) in numbers:
                _drop(scan, "duplicate", rel)
            else:
                numbers[(idx, number or 0)] = rel
                numbered.append((number or 0, rel))
        kept[idx] += [rel for _, rel in sorted(numbered)]
    for idx in sorted(kept):
        for sample, rel in enumerate(sorted(kept[idx], key=lambda r: _sample_number(r) or 0)):
            if sample > 0 and not all_samples:
                _drop(scan, "extra sample", rel)
            elif idx < len(prompts):
                _row(scan, root, rel, idx, prompts[idx], sample)
            else:
                error = f"prompt index {idx} out of range (prompt list has {len(prompts)})"
                _row(scan, root, rel, idx, None, sample, error)
    scan.slug_mismatches = _slug_mismatches(scan.rows)


#: characters of a slug and of its prompt compared (after lower-casing and dropping all but a-z0-9):
#: enough to tell a shifted or foreign prompt list, few enough for truncated slugs
_SLUG_CHARS = 8


def _slug_mismatches(rows: Sequence[ManifestRow]) -> list[str]:
    """``<idx>_<slug>/`` folders whose slug does not start like prompt <idx>: the generator wrote the
    prompt into the name, so a disagreement means --prompt-json is not the list the images came from
    (every pair would be scored against another prompt). Folders named ``prompt_<idx>`` carry no text."""
    seen, out = set(), []
    for row in rows:
        directory = posixpath.basename(posixpath.dirname(row.rel_path))
        match = _IDX_SLUG_DIR.match(directory)
        if row.prompt is None or match is None or directory in seen:
            continue
        seen.add(directory)
        slug = re.sub(r"[^a-z0-9]", "", directory[len(match.group(1)) + 1:].lower())
        text = re.sub(r"[^a-z0-9]", "", row.prompt.lower())
        n = min(len(slug), len(text), _SLUG_CHARS)
        if n and slug[:n] != text[:n]:
            out.append(f"{directory} vs {row.prompt[:40]!r}")
    return out


# --- 2. Hugging Face imagefolder metadata -----------------------------------------------------


def _scan_hf(scan: FolderScan, root: Path, files: list[str], images: list[str],
             prompts: Sequence[str] | None, all_samples: bool) -> None:
    name = "metadata.jsonl" if scan.convention == HF_JSONL else "metadata.csv"
    read = _read_metadata_jsonl if scan.convention == HF_JSONL else _read_metadata_csv
    listed: set[str] = set()
    for idx, (file_name, prompt) in enumerate(read(root / name)):
        rel = _normalise_rel(file_name)
        if rel is None:
            _row(scan, root, file_name, idx, prompt, error="file_name points outside the folder")
        elif rel in listed:
            _drop(scan, "duplicate entry", rel)
        else:
            listed.add(rel)
            _row(scan, root, rel, idx, prompt,
                 error=None if (root / rel).is_file() else FILE_NOT_FOUND)
    for rel in images:
        if rel not in listed:
            _drop(scan, "not in metadata", rel)


def _normalise_rel(file_name: str) -> str | None:
    """file_name as a clean relative posix path, or None when it leaves the folder."""
    rel = posixpath.normpath(file_name.replace("\\", "/"))
    return None if rel.startswith(("/", "../")) or rel == ".." else rel


def _read_metadata_jsonl(path: Path) -> list[tuple[str, str | None]]:
    """(file_name, prompt) per non-blank line; 'prompt' wins over 'text' when both exist."""
    entries, has_prompt_column = [], False
    for lineno, line in enumerate(_json_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {lineno}: invalid JSON: {exc.msg} at column "
                             f"{exc.colno}.") from exc
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {lineno}: expected a JSON object, got "
                             f"{type(record).__name__}.")
        has_prompt_column |= "prompt" in record or "text" in record
        entries.append(_metadata_entry(record, f"{path}, line {lineno}"))
    if entries and not has_prompt_column:
        raise InputError(f"{path}: no 'prompt' or 'text' field in any line (needed with "
                         "'file_name').")
    return entries


def _read_metadata_csv(path: Path) -> list[tuple[str, str | None]]:
    """(file_name, prompt) per data row of a real CSV file (quotes, commas, newlines handled)."""
    # newline="" lets the csv module handle quoted newlines itself, as the csv docs require.
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = reader.fieldnames or []
    if "file_name" not in columns or not {"prompt", "text"} & set(columns):
        raise InputError(f"{path}: needs a 'file_name' column and a 'prompt' or 'text' column; "
                         f"found columns: {', '.join(columns) or 'none'}.")
    return [_metadata_entry(record, f"{path}, line {reader.line_num}") for record in reader]


def _metadata_entry(record: dict, where: str) -> tuple[str, str | None]:
    file_name = record.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise InputError(f"{where}: missing or empty 'file_name'.")
    prompt = record["prompt"] if "prompt" in record else record.get("text")
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(f"{where}: the prompt must be a string, got {type(prompt).__name__}.")
    return file_name, prompt


def _json_lines(text: str) -> list[str]:
    # Not str.splitlines: JSON strings may hold a raw U+2028 or form feed, which it splits on.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")  # utf-8-sig: spreadsheet exports add a BOM
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc


# --- 3. GenEval --------------------------------------------------------------------------------


def _scan_geneval(scan: FolderScan, root: Path, files: list[str], images: list[str],
                  prompts: Sequence[str] | None, all_samples: bool) -> None:
    samples: dict[str, list[str]] = defaultdict(list)
    for rel in images:
        match = _GENEVAL_SAMPLE.match(rel)
        if match:
            samples[match.group(1)].append(rel)
        elif _GENEVAL_GRID.match(rel):
            _drop(scan, "geneval grid", rel)
        else:
            _drop(scan, "not a geneval sample", rel)
    seen: set[int] = set()
    for dirname in sorted(samples):
        idx = int(dirname)
        if idx in seen:  # "7" and "007": the same prompt twice
            for rel in samples[dirname]:
                _drop(scan, "duplicate", rel)
            continue
        seen.add(idx)
        prompt, error = _geneval_prompt(root, dirname)
        ordered = sorted(samples[dirname], key=lambda r: (_sample_number(r) is None,
                                                         _sample_number(r) or 0, r))
        for sample, rel in enumerate(ordered):
            if sample > 0 and not all_samples:
                _drop(scan, "extra sample", rel)
            else:
                _row(scan, root, rel, idx, prompt, sample, error)
    _warn_geneval_without_samples(scan, files, seen)


def _geneval_prompt(root: Path, dirname: str) -> tuple[str | None, str | None]:
    """(prompt, None) from <idx>/metadata.jsonl, or (None, why not): the rows still count."""
    rel = f"{dirname}/metadata.jsonl"
    try:
        line = next((ln for ln in _json_lines(_read_text(root / rel)) if ln.strip()), "")
        record = json.loads(line)
    except InputError:
        return None, f"cannot read {rel}"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON in {rel}: {exc.msg}"
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if not isinstance(prompt, str):
        return None, f"no 'prompt' string in {rel}"
    return prompt, None


def _warn_geneval_without_samples(scan: FolderScan, files: list[str],
                                  with_samples: set[int]) -> None:
    empty = sorted({int(m.group(1)) for f in files if (m := _GENEVAL_META.match(f))}
                   - with_samples)
    if empty:
        scan.warnings.append(f"{scan.folder}: {len(empty)} prompt folder(s) have no samples "
                             f"(indices {_examples(empty)}).")


# --- 4. Sidecar .txt ---------------------------------------------------------------------------


def _sidecar_of(rel: str) -> str:
    return posixpath.splitext(rel)[0] + ".txt"


def _scan_sidecar(scan: FolderScan, root: Path, files: list[str], images: list[str],
                  prompts: Sequence[str] | None, all_samples: bool) -> None:
    fileset = set(files)
    for rel in images:
        txt = _sidecar_of(rel)
        prompt, error = _read_sidecar(root, txt) if txt in fileset else (None, None)
        _row(scan, root, rel, None, prompt, 0, error)


def _read_sidecar(root: Path, txt: str) -> tuple[str | None, str | None]:
    """The file's text with only its trailing newline removed (the prompt is otherwise verbatim)."""
    try:
        text = _read_text(root / txt)
    except InputError as exc:
        return None, str(exc)
    return text.removesuffix("\n").removesuffix("\r"), None


_SCANNERS = {JANUS: _scan_janus, HF_JSONL: _scan_hf, HF_CSV: _scan_hf, GENEVAL: _scan_geneval,
             SIDECAR: _scan_sidecar}


# --- common ------------------------------------------------------------------------------------


def _row_key(row: ManifestRow) -> tuple:
    return (row.prompt_idx is None, row.prompt_idx or 0, row.sample, row.rel_path)


def _number_by_prompt(scan: FolderScan, list_index: dict[str, int] | None = None) -> None:
    """Layouts that carry their own prompts: sample = order among the rows with the same prompt
    text (listing order for metadata files, path order otherwise), so folders pair by prompt.
    ``list_index`` (``_list_index``): also set each row's prompt_idx (one pass over the rows)."""
    seen: dict[str | None, int] = defaultdict(int)
    for i, row in enumerate(scan.rows):
        if list_index is None:
            scan.rows[i] = dataclasses.replace(row, sample=seen[row.prompt])
        else:
            idx = list_index.get(row.prompt) if row.prompt is not None else None
            scan.rows[i] = dataclasses.replace(row, sample=seen[row.prompt], prompt_idx=idx)
        seen[row.prompt] += 1


def _list_index(scan: FolderScan, prompts: Sequence[str]) -> dict[str, int]:
    """Layouts that carry their own prompts, given a prompt list too: each row prompt's text -> the
    index of its prompt in the list (``prompt_idx``: not the metadata line or GenEval folder number,
    so the result files of every layout share one index per prompt). A text is found as is, else
    after ``normal_prompt`` (spaces, Unicode form: the report pairs prompts the same way); texts not
    in the list are left out (prompt_idx empty; they are still scored). Both cases are warned about."""
    exact: dict[str, int] = {}
    normal: dict[str, int] = {}
    for i, prompt in enumerate(prompts):
        exact.setdefault(prompt, i)
        normal.setdefault(normal_prompt(prompt), i)
    index: dict[str, int] = {}
    near: dict[str, str] = {}
    outside: list[str] = []
    for text in dict.fromkeys(row.prompt for row in scan.rows if row.prompt is not None):
        if text in exact:
            index[text] = exact[text]
        elif normal_prompt(text) in normal:
            index[text] = normal[normal_prompt(text)]
            near[text] = prompts[index[text]]
        else:
            outside.append(text)
    if near:
        examples = "; ".join(f"{ascii(mine)} vs {ascii(listed)}" for mine, listed in list(near.items())[:3])
        scan.warnings.append(
            f"{scan.folder}: {len(near)} prompt(s) differ from a prompt of the list only by spaces or Unicode "
            f"form ({examples}{'; ...' if len(near) > 3 else ''}): they get its prompt_idx and are paired with it, "
            "and each is scored with its own text.")
    if outside:
        scan.prompts_not_in_list = outside
        scan.warnings.append(
            f"{scan.folder}: {len(outside)} prompt(s) are not in the prompt list ({_examples([ascii(t) for t in outside])}): "
            "scored, with an empty prompt_idx.")
    return index


def normal_prompt(prompt: str) -> str:
    """A prompt with its spaces collapsed and stripped, in Unicode NFC: how prompts are matched
    to the prompt list and paired across folders (each is still scored with its own text)."""
    return " ".join(unicodedata.normalize("NFC", prompt).split())


def _count_prompts_without_image(scan: FolderScan, prompts: Sequence[str] | None) -> list[int]:
    """Indices of the prompt list with no row here (by index in prompt folders, else by text)."""
    if prompts is None:
        return []
    if scan.convention == JANUS:
        covered = {row.prompt_idx for row in scan.rows}
        missing = [i for i in range(len(prompts)) if i not in covered]
    else:
        covered = {row.prompt_idx for row in scan.rows}  # _list_index's: the list's, matched by text
        # a blank prompt of the list matches no row (its rows read "empty prompt"); a prompt listed
        # twice is covered by a row of its first index
        first = {}
        for i, prompt in enumerate(prompts):
            first.setdefault(normal_prompt(prompt), i)
        missing = [i for i, prompt in enumerate(prompts)
                   if prompt.strip() and first[normal_prompt(prompt)] not in covered]
    scan.prompts_without_image = len(missing)
    scan.prompts_without_image_idx = missing
    return missing


def _finish(scan: FolderScan, prompts: Sequence[str] | None, all_samples: bool = False) -> None:
    """Sort the rows and summarise, one warning per kind, what will not be scored normally."""
    n_prompts = len(prompts) if prompts is not None else None
    if scan.convention == GENEVAL and prompts is not None:  # its folder numbers are its own list's
        index = _list_index(scan, prompts)
        scan.rows = [dataclasses.replace(row, prompt_idx=index.get(row.prompt) if row.prompt is not None else None)
                     for row in scan.rows]
    if scan.convention in (HF_JSONL, HF_CSV, SIDECAR):
        # with a prompt list, prompt_idx is the prompt's index in it, as in prompt folders
        _number_by_prompt(scan, _list_index(scan, prompts) if prompts is not None else None)
        if not all_samples:  # as in prompt folders: the first sample of each prompt (listing / path order)
            kept = []
            for row in scan.rows:
                if row.sample > 0 and row.prompt is not None:
                    _drop(scan, "extra sample", row.rel_path)
                else:
                    kept.append(row)
            scan.rows = kept
    scan.rows.sort(key=_row_key)
    missing = _count_prompts_without_image(scan, prompts)
    if scan.slug_mismatches:
        scan.warnings.append(
            f"{scan.folder}: {len(scan.slug_mismatches)} <idx>_<slug> sub-folder name(s) do not match prompt "
            f"<idx> of the prompt list ({_examples(scan.slug_mismatches)}): is --prompt-json the list these "
            "images were generated from? Every image is scored against the prompt its index points to.")
    if missing:
        scan.warnings.append(f"{scan.folder}: {len(missing)} of {n_prompts} prompt(s) in the prompt "
                             f"list have no image here (indices {_examples(missing)}).")
    if not scan.rows and scan.images_found:
        reasons = "; ".join(f"{len(rels)} {_DROP_REASONS[reason][0]} (e.g. {rels[0]})"
                            for reason, rels in scan.dropped.items())
        scan.error = (f"Folder {scan.folder} holds {scan.images_found} image(s) but none can be "
                      f"scored: {reasons or 'no image matched the layout'}.")
    for reason, rels in scan.dropped.items():
        scan.warnings.append(f"{scan.folder}: {len(rels)} {_DROP_REASONS[reason][0]}: "
                             f"{_examples(rels)}.")
    groups = _problem_rows(scan)
    if groups["out of range"]:
        scan.warnings.append(
            f"{scan.folder}: {len(groups['out of range'])} image(s) have a prompt index outside "
            f"the prompt list ({n_prompts} prompts), kept as failed: "
            f"{_examples(groups['out of range'])}.")
    if groups["not found"]:
        scan.warnings.append(f"{scan.folder}: {len(groups['not found'])} file(s) listed in the "
                             f"metadata do not exist, kept as failed: "
                             f"{_examples(groups['not found'])}.")
    if groups["no prompt"]:
        scan.warnings.append(f"{scan.folder}: {len(groups['no prompt'])} image(s) without a "
                             f"prompt, kept as failed: {_examples(groups['no prompt'])}.")
    if groups["other"]:
        scan.warnings.append(f"{scan.folder}: {len(groups['other'])} row(s) with errors, kept as "
                             f"failed: {_examples(groups['other'])}.")


def _problem_rows(scan: FolderScan) -> dict[str, list[str]]:
    """Rows that will fail, grouped by cause (other errors are shown with their message)."""
    groups: dict[str, list[str]] = {"out of range": [], "not found": [], "no prompt": [], "empty prompt": [],
                                    "other": []}
    for row in scan.rows:
        if row.error and _OUT_OF_RANGE.match(row.error):
            groups["out of range"].append(row.rel_path)
        elif row.error == FILE_NOT_FOUND:
            groups["not found"].append(row.rel_path)
        elif row.error == EMPTY_PROMPT:
            groups["empty prompt"].append(row.rel_path)
        elif row.error:
            groups["other"].append(f"{row.rel_path} ({row.error})")
        elif row.prompt is None:
            groups["no prompt"].append(row.rel_path)
    return groups


def _examples(items: Sequence) -> str:
    shown = ", ".join(str(item) for item in items[:_MAX_EXAMPLES])
    return shown + (f", ... ({len(items) - _MAX_EXAMPLES} more)" if len(items) > _MAX_EXAMPLES
                    else "")


# ---------------------------------------------------------------------------------------------
# Validation report (the `validate` command: no model loads)


def validate_folders(folders: Sequence[str | os.PathLike], prompts: Sequence[str] | None,
                     all_samples: bool = False, check_images: bool = True,
                     limit: int | None = None) -> tuple[str, bool]:
    """The ``validate`` command: every folder scanned on its own, so one folder's error (mixed
    layouts, no known layout, a broken metadata file, images but no row) is reported with the
    other folders' problems instead of stopping at the first. ``limit``: eval's --limit, the same
    rows kept as ``build_manifest`` keeps. No model is loaded."""
    scans, failed = [], []
    seen: dict[str, str | os.PathLike] = {}
    for folder in folders:
        key = os.path.realpath(folder)
        if key in seen:  # as eval refuses it: the same folder's rows would count twice
            failed.append((str(folder), f"Folder {folder} is given twice (same as {seen[key]})."))
            continue
        seen[key] = folder
        try:
            scans += build_manifest([folder], prompts, all_samples, raise_folder_errors=False)
        except InputError as exc:
            failed.append((str(folder), str(exc)))
    if limit is not None:
        _limit_rows(scans, limit, prompts)
    return validate_report(scans, check_images, failed)


def validate_report(scans: Sequence[FolderScan], check_images: bool = True,
                    failed: Sequence[tuple[str, str]] = ()) -> tuple[str, bool]:
    """A human-readable report per folder and whether everything is ready to score.

    ``failed``: (folder, error) of folders that could not be scanned at all.
    """
    lines, ok = [], not failed
    for folder, error in failed:
        lines += [f"== {folder}", f"  error: {error}", "  status: PROBLEMS", ""]
    with_problems, n_to_score = len(failed), 0
    for scan in scans:
        folder_lines, folder_ok, folder_to_score = _folder_report(scan, check_images)
        lines += folder_lines + [""]
        ok &= folder_ok
        with_problems += not folder_ok
        n_to_score += folder_to_score
    n_rows = sum(len(scan.rows) for scan in scans)
    total = len(scans) + len(failed)
    head = "OK: " if ok else f"PROBLEMS FOUND in {with_problems} of "
    failing = f" ({n_rows - n_to_score} of {n_rows} row(s) will be recorded as failed)" if n_rows > n_to_score else ""
    lines.append(f"{head}{total} folder(s), {n_to_score} row(s) to score{failing}.")
    return "\n".join(lines), ok


_ALWAYS_REPORTED = {"images without a prompt", "prompt indices out of range", "duplicates dropped",
                    "unreadable images", "images too large to preprocess"}


def _folder_report(scan: FolderScan, check_images: bool) -> tuple[list[str], bool, int]:
    """(report lines, whether the folder is ready, rows that will be scored)."""
    groups = _problem_rows(scan)
    dropped = scan.dropped
    checks = [  # (label, items, is a problem); "always" ones print even at 0, the rest only if any
        ("images without a prompt", groups["no prompt"] + dropped.get("not in metadata", []), True),
        ("images with an empty prompt", groups["empty prompt"], True),
        # their prompt folder may well have a prompt (prompt_8/nested/img_00.png): say what eval says
        ("images ignored: not directly inside a prompt folder", dropped.get("outside prompt dirs", []), True),
        ("prompt indices out of range", groups["out of range"], True),
        ("listed files not found", groups["not found"], True),
        ("rows with other errors", groups["other"], True),
        ("duplicates dropped", dropped.get("duplicate", []) + dropped.get("duplicate entry", []),
         True),
        ("file names without a sample number", dropped.get("no sample number", []), True),
        ("images outside <idx>/samples/", dropped.get("not a geneval sample", []), True),
        ("extra samples ignored", dropped.get("extra sample", []), False),
        ("GenEval grid images ignored (<idx>/grid.png)", dropped.get("geneval grid", []), False),
        ("sub-folder names unlike their prompt (wrong --prompt-json?)", scan.slug_mismatches, False),
        ("prompts not in the prompt list (scored; prompt_idx empty)", [ascii(t) for t in scan.prompts_not_in_list], False),
    ]
    # rows that will fail (no prompt, scan errors, undecodable): the run records them, scores nothing
    failing = {row.rel_path for row in scan.rows if row.error or row.prompt is None}
    if check_images:
        unreadable, too_large, undecodable = _unreadable(scan.rows)
        checks.append(("unreadable images", unreadable, True))
        checks.append(("images too large to preprocess", too_large, True))
        failing |= undecodable
    lines = [f"== {scan.folder}", f"  convention: {scan.convention}",
             f"  images found: {scan.images_found}",
             f"  rows: {len(scan.rows)}, to score: {len(scan.rows) - len(failing)}"
             + (f", recorded as failed: {len(failing)}" if failing else "")]
    if scan.prompts_without_image is not None:
        lines.append(f"  prompts without an image: {scan.prompts_without_image}"
                     + (f" (indices {_examples(scan.prompts_without_image_idx)})" if scan.prompts_without_image else ""))
    ok = scan.convention != EMPTY and not scan.prompts_without_image and scan.error is None
    if scan.convention == EMPTY:
        lines.append("  no images found")
    if scan.error:
        lines.append(f"  error: {scan.error}")
    for label, items, is_problem in checks:
        if items or label in _ALWAYS_REPORTED:
            lines.append(f"  {label}: {len(items)}" + (f" ({_examples(items)})" if items else ""))
        ok &= not (items and is_problem)
    lines.append(f"  status: {'ok' if ok else 'PROBLEMS'}")
    return lines, ok, len(scan.rows) - len(failing)


def unreadable_reason(path: str | os.PathLike) -> str:
    """Why the file at ``path`` cannot be read, in a few words (a broken symbolic link names its
    target): for the rows whose content could not be hashed."""
    try:
        if os.path.islink(path) and not os.path.exists(path):
            return f"broken symbolic link to {os.readlink(path)}"
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return "the file cannot be read"


def _unreadable(rows: Sequence[ManifestRow]) -> tuple[list[str], list[str], set[str]]:
    """(rows whose image cannot be decoded, rows whose size the preprocessing guard refuses, the
    rel paths of both).

    The size check reads only the header, before any decoding, as the pipeline does.
    PIL is imported only when checking.
    """
    from PIL import Image

    from janus_ray.images import ImageSizeError, open_image

    bad, too_large, failing = [], [], set()
    for row in rows:
        if os.path.islink(row.image_path) and not os.path.exists(row.image_path):
            bad.append(f"{row.rel_path}: {unreadable_reason(row.image_path)}")
            failing.add(row.rel_path)
            continue
        if not os.path.isfile(row.image_path):
            continue  # already reported as "file not found"
        try:
            open_image(row.image_path, decode=False)  # header only: the size guard
            with Image.open(row.image_path) as img:
                img.verify()  # structure and checksums (PNG CRCs)
            open_image(row.image_path)  # full decode, as the pipeline does: catches truncation
        except ImageSizeError as exc:
            too_large.append(f"{row.rel_path}: {exc}")
            failing.add(row.rel_path)
        except Exception as exc:  # noqa: BLE001  (any decoder failure means unreadable)
            bad.append(f"{row.rel_path}: {type(exc).__name__}: {exc}")
            failing.add(row.rel_path)
    return bad, too_large, failing
