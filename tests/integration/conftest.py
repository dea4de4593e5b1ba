"""Local-Ray fixtures: a real Ray instance on this machine and a small Janus-style input tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from janus_ray.demo import PROMPTS, make_variant_folders, synthetic_image

WEIGHTS_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"


@pytest.fixture(scope="module")
def local_ray():
    """An embedded Ray instance per test module (module scope: the job-submit test runs its own
    head with `ray start`, and `ray stop` must not find an embedded instance alive)."""
    import ray

    # address="local": always a new instance of our own, even if another local cluster is running.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def build_inputs(root: Path, n_prompts: int = 4) -> dict:
    """Six Janus-layout folders + one metadata.jsonl folder; one corrupt image, one missing prompt."""
    prompts = PROMPTS[:n_prompts]
    variants_root = root / "variants"
    folders = make_variant_folders(variants_root, prompts)
    corrupt = folders[1] / "generated_prompts_dola_static" / "prompt_0002" / "img_00.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    # A prompt index beyond prompt.json: the row stays, with no prompt and an error.
    orphan = folders[0] / "outputs_dola" / f"prompt_{n_prompts}" / "img_00.jpg"
    orphan.parent.mkdir(parents=True)
    synthetic_image(seed=999).save(orphan)
    hf = variants_root / "hf_metadata_variant"
    hf.mkdir()
    lines = []
    for i, prompt in enumerate(prompts):
        synthetic_image(seed=500 + i).save(hf / f"img_{i}.png")
        lines.append({"file_name": f"img_{i}.png", "prompt": prompt})
    synthetic_image(seed=600).save(hf / "no_prompt.png")
    lines.append({"file_name": "no_prompt.png", "prompt": ""})
    (hf / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return {
        "root": variants_root,
        "folders": [*folders, hf],
        "prompt_json": variants_root / "prompt.json",
        "corrupt": corrupt,
        "orphan": orphan,
        "no_prompt": hf / "no_prompt.png",
        "prompts": prompts,
    }


@pytest.fixture
def inputs(tmp_path) -> dict:
    return build_inputs(tmp_path)
