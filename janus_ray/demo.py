"""``janus-ray demo``: a tiny weights root and six Janus-layout folders, scored end to end.

The weights are tiny random-initialised models in the real checkpoint formats, written by
``janus_ray.tiny_weights`` (no download, no repository checkout needed: it works from a plain
``pip install``), so the demo exercises exactly the code paths real checkpoints take, but its
numbers mean nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: The repository's parity fixture weights (only in a checkout). Not used by the demo; kept for the
#: benchmark tooling, which copies tokenizer files from it.
FIXTURE_WEIGHTS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity" / "weights"

PROMPTS = [
    "a red circle on a white background",
    "a blue square next to a green triangle",
    'a sign that says "hello, world"',
    "a yellow sun over the sea at dusk",
    "two cats sleeping on a sofa",
    "a bowl of ramen noodles on a wooden table",
]

#: the six variants and the sub-folder layout each used (EXISTING_TOOL.md)
VARIANTS = {
    "Janus_combined_dola_early_exit": "outputs_dola/prompt_{idx}/img_00.jpg",
    "Janus_combined_dola_no_early_exit": "generated_prompts_dola_static/prompt_{idx:04d}/img_00.jpg",
    "Janus_llama_dola_early_exit": "out_dola/prompt_{idx}/img_00.jpg",
    "Janus_llama_dola_no_early_exit": "generated_from_prompts_serial/prompt_{idx}/img_00.jpg",
    "Janus_VIT_dola_early_exit": "generated_samples_batch/{idx}_{slug}/00.jpg",
    "Janus_VIT_dola_no_early_exit": "generated_samples_batch/{idx}_{slug}/img_20250101-120000_00.jpg",
}


def synthetic_image(seed: int, size: int = 384) -> Image.Image:
    """A deterministic picture of coloured shapes (Janus writes 384x384 images)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, size - 64, 2))
        w, h = (int(v) for v in rng.integers(32, 160, 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=color)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
    return image


def variant_images(prompts: list[str], samples_per_prompt: int = 1) -> list[tuple[str, int]]:
    """Each demo image as (path relative to the variants root, ``synthetic_image`` seed), in the
    six variants' Janus layouts."""
    images = []
    for v, (variant, pattern) in enumerate(VARIANTS.items()):
        for idx, prompt in enumerate(prompts):
            slug = "_".join(prompt.split()[:4]).replace('"', "").replace(",", "")
            for sample in range(samples_per_prompt):
                rel = pattern.format(idx=idx, slug=slug).replace("00.jpg", f"{sample:02d}.jpg")
                images.append((f"{variant}/{rel}", v * 10_000 + idx * 10 + sample))
    return images


def make_variant_folders(root: Path, prompts: list[str], samples_per_prompt: int = 1,
                         image_size: int = 384) -> list[Path]:
    """Write the six variant folders in their Janus layouts, plus ``prompt.json``; return the folders.
    ``image_size``: pixels a side (the 384 px pictures scaled, so every size shows the same shapes)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompt.json").write_text(json.dumps({"prompts": prompts}, indent=1), encoding="utf-8")
    for rel, seed in variant_images(prompts, samples_per_prompt):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = synthetic_image(seed=seed)
        if image_size != image.width:
            image = image.resize((image_size, image_size))
        image.save(path, quality=92)
    return [root / variant for variant in VARIANTS]


def make_weights_root(target: Path, seed: int = 0) -> Path:
    """Write (or reuse) the tiny random-weight weights root at ``target``; see ``janus_ray.tiny_weights``."""
    from janus_ray.tiny_weights import write_tiny_weights_root

    return write_tiny_weights_root(target, seed=seed)


#: what ``run_demo`` writes into its directory (results and the cache go inside ``variants``)
DEMO_ENTRIES = ("weights", "variants")
#: in ``variants``: the sha256 of every image the demo wrote, so that ``--fresh`` can tell a user's
#: replaced or edited image from the demo's own (prompt.json is compared with ``PROMPTS`` instead)
DEMO_MARKER = ".janus_ray_demo.json"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_demo_marker(variants: Path) -> None:
    """Record the sha256 of the demo's images (``DEMO_MARKER``)."""
    hashes = {rel: _sha256(variants / rel) for rel, _ in variant_images(PROMPTS)}
    (variants / DEMO_MARKER).write_text(json.dumps(hashes, indent=1), encoding="utf-8")


def _changed(root: Path, hashes: dict) -> list[str]:
    """Files of ``hashes`` (path relative to ``root`` -> sha256) whose content differs now."""
    return [f"{rel} (changed)" for rel, digest in hashes.items()
            if (root / rel).is_file() and _sha256(root / rel) != digest]


def foreign_demo_files(variants: Path) -> list[str]:
    """Files under an earlier demo's ``variants`` that the demo did not write (paths relative to
    it, sorted): anything but its images, their result files, the run's outputs and its cache; its
    ``prompt.json`` when edited (``'prompt.json (edited)'``) and images whose sha256 differs from
    the one ``DEMO_MARKER`` recorded (``'<path> (changed)'``)."""
    from janus_ray.pipeline import CACHE_DIR_NAME
    from janus_ray.results import RESULT_STEM, ROOT_OUTPUTS

    own = {rel for rel, _ in variant_images(PROMPTS)} | {"prompt.json", *ROOT_OUTPUTS, DEMO_MARKER}
    own |= {f"{variant}/{RESULT_STEM}.{ext}" for variant in VARIANTS for ext in ("csv", "json", "parquet")}
    found = []
    prompt_json = variants / "prompt.json"
    try:
        edited = prompt_json.is_file() and json.loads(prompt_json.read_text(encoding="utf-8")) != {"prompts": PROMPTS}
    except (OSError, ValueError):
        edited = True
    if edited:
        found.append("prompt.json (edited)")
    try:  # a demo written before the marker existed: names (and prompt.json) only
        found += _changed(variants, json.loads((variants / DEMO_MARKER).read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        pass
    for path in variants.rglob("*"):
        rel = path.relative_to(variants).as_posix()
        if rel == CACHE_DIR_NAME or rel.startswith(CACHE_DIR_NAME + "/") or path.is_dir() and not path.is_symlink():
            continue
        if rel not in own:
            found.append(rel)
    return sorted(found)


def foreign_weight_files(weights: Path) -> list[str]:
    """Files under an earlier demo's ``weights`` that its tiny-weights writer did not list in its
    marker, and listed ones whose sha256 differs (``'<path> (changed)'``): paths relative to it,
    sorted; every file when the marker cannot be read."""
    from janus_ray.tiny_weights import MARKER

    try:
        hashes = dict(json.loads((weights / MARKER).read_text(encoding="utf-8"))["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        hashes = {}
    own = set(hashes) | {MARKER}
    extra = [rel for rel in (p.relative_to(weights).as_posix() for p in weights.rglob("*")
                             if p.is_file() or p.is_symlink()) if rel not in own]
    return sorted(extra + _changed(weights, hashes))


def remove_demo(directory: Path) -> None:
    """``demo --fresh``: delete an earlier demo's ``weights`` and ``variants``, and nothing else.

    Raises ConfigError, deleting nothing, when ``directory`` is not an earlier demo: it holds other
    entries, its ``weights`` lacks the tiny weights' marker (``tiny_weights.MARKER``) or holds files
    the marker does not list, or its ``variants`` holds files the demo did not write (a user's own
    images or results, an edited ``prompt.json``)."""
    from janus_ray.errors import ConfigError
    from janus_ray.tiny_weights import MARKER

    if not directory.is_dir():
        raise ConfigError(f"demo --fresh: {directory} is not a directory; give a new --dir.")
    others = sorted(entry.name for entry in directory.iterdir() if entry.name not in DEMO_ENTRIES)
    weights, variants = directory / "weights", directory / "variants"
    if others or (weights.exists() and not (weights / MARKER).is_file()):
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "") if others else f"{weights} without {MARKER}"
        raise ConfigError(f"demo --fresh deletes an earlier demo, and {directory} is not one (it holds {shown}): "
                          "nothing was deleted. Give a new --dir, or delete the directory yourself.")
    for folder, foreign in ((weights, foreign_weight_files(weights) if weights.is_dir() else []),
                            (variants, foreign_demo_files(variants) if variants.is_dir() else [])):
        if foreign:
            shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} files)" if len(foreign) > 5 else "")
            raise ConfigError(f"demo --fresh deletes an earlier demo, and {folder} holds files the demo did not "
                              f"write ({shown}): nothing was deleted. Move them out, or delete the directory yourself.")
    for name in DEMO_ENTRIES:
        if (directory / name).is_symlink():
            (directory / name).unlink()  # a link the user made: remove the link, never its target
        elif (directory / name).exists():
            shutil.rmtree(directory / name)


def run_demo(directory: Path, fresh: bool = False) -> int:
    """Create the demo inputs, run the full pipeline on embedded local Ray, print where things are."""
    from janus_ray.config import RunConfig
    from janus_ray.pipeline import evaluate

    directory = directory.resolve()
    if fresh and directory.exists():
        remove_demo(directory)
    weights = make_weights_root(directory / "weights")
    folders = make_variant_folders(directory / "variants", PROMPTS)
    write_demo_marker(directory / "variants")
    config = RunConfig(
        folders=[str(f) for f in folders],
        weights_root=str(weights),
        prompt_json=str(directory / "variants" / "prompt.json"),
        metrics=["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward", "hpsv2.1"],
    )
    result = evaluate(config)
    from janus_ray.report import build_report

    report_paths = build_report(result.output_root)
    print(
        "\nNOTE: the demo uses tiny RANDOM-weight models in the real checkpoint formats; its scores are "
        "meaningless. Point --weights-root at real checkpoints for real scores.\n"
        f"Inputs:   {directory / 'variants'}\nWeights:  {weights}\n"
        f"Results:  janus_eval_scores.csv/.json/.parquet in each folder under {directory / 'variants'}\n"
        f"Summary:  {result.summary_paths[0]}  and  {result.summary_paths[1]}\n"
        f"Report:   {', '.join(str(p) for p in report_paths)}",
        file=sys.stderr,
    )
    return 0
