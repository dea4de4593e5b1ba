"""The benchmark's synthetic input tree: N variant folders x M prompts in the Janus layouts."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from janus_ray.demo import VARIANTS, make_variant_folders

_COUNTS = ["a", "one", "two", "three", "four", "a pair of", "several", "a group of"]
_ADJECTIVES = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "wooden", "metallic",
               "glass", "fluffy", "tiny", "giant", "old", "shiny", "striped", "transparent", "rusty", "golden"]
_OBJECTS = ["cat", "dog", "bicycle", "car", "teapot", "robot", "horse", "umbrella", "chair", "clock",
            "apple", "guitar", "lamp", "boat", "bird", "book", "cup", "giraffe", "sofa", "train",
            "backpack", "vase", "elephant", "laptop", "kite", "banana", "toaster", "owl", "bench", "rocket"]
_RELATIONS = ["next to", "on top of", "under", "behind", "in front of", "to the left of", "to the right of", "inside"]
_SCENES = ["on a beach at sunset", "in a snowy forest", "on a kitchen table", "in a busy city street",
           "floating in outer space", "in a sunlit living room", "on a rainy night", "in a flower field",
           "under water", "on the moon", "in a desert", "at a train station"]
_STYLES = ["", "", "", ", photorealistic", ", oil painting", ", watercolor", ", 3d render", ", studio lighting",
           ", in the style of a children's book", ", 35mm film photograph", ", highly detailed"]


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct, deterministic text-to-image prompts of varied length (4 to ~25 words)."""
    rng = random.Random(seed)
    prompts: list[str] = []
    seen: set[str] = set()
    while len(prompts) < n:
        first = f"{rng.choice(_COUNTS)} {rng.choice(_ADJECTIVES)} {rng.choice(_OBJECTS)}"
        kind = rng.random()
        if kind < 0.3:
            text = first
        elif kind < 0.7:
            second = f"{rng.choice(['a', 'the', 'two'])} {rng.choice(_ADJECTIVES)} {rng.choice(_OBJECTS)}"
            text = f"{first} {rng.choice(_RELATIONS)} {second}"
        else:
            text = f"{first} {rng.choice(_SCENES)}"
        text += rng.choice(_STYLES)
        if text in seen:  # keep prompts distinct, as a prompt list is
            text = f"{text}, variation {len(prompts)}"
        seen.add(text)
        prompts.append(text)
    return prompts


def make_inputs(root: Path, n_folders: int, prompts: list[str], image_size: int = 384) -> dict:
    """``n_folders`` folders in the six Janus layouts (cycled) with square JPEGs (384 px, Janus's
    size, by default), and one prompt.json.

    ``janus_ray.demo.make_variant_folders`` writes the six variants; with more than six folders
    it is called again into sub-trees, whose folders are renamed ``<variant>_<k>`` (unique names).
    """
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    folders: list[Path] = []
    prompt_json = root / "prompt.json"
    k = 0
    while len(folders) < n_folders:
        made = make_variant_folders(root if k == 0 else root / f"_set{k}", prompts, image_size=image_size)
        for folder in made:
            if len(folders) < n_folders:
                if k:
                    renamed = root / f"{folder.name}_{k}"
                    folder.rename(renamed)
                    folder = renamed
                folders.append(folder)
            else:
                shutil.rmtree(folder)
        if k:
            shutil.rmtree(root / f"_set{k}")
        k += 1
    n_images = len(folders) * len(prompts)
    return {"root": root, "folders": folders, "prompt_json": prompt_json, "n_images": n_images,
            "layouts": [VARIANTS[f.name.rsplit("_", 1)[0] if f.name not in VARIANTS else f.name] for f in folders]}
