"""`janus-ray demo --fresh` deletes an earlier demo's files and nothing else (a new user's trial lost
a directory of their own, and with `--dir .` the current directory, to it)."""

from __future__ import annotations

import pytest

from janus_ray.cli import main
from janus_ray.demo import remove_demo
from janus_ray.errors import ConfigError
from janus_ray.tiny_weights import MARKER


def demo_dir(root):
    (root / "weights").mkdir(parents=True)
    (root / "weights" / MARKER).write_text("{}")
    (root / "variants" / "Janus_x").mkdir(parents=True)
    return root


def test_fresh_removes_the_demos_weights_and_variants_and_keeps_the_directory(tmp_path):
    root = demo_dir(tmp_path / "demo")
    remove_demo(root)
    assert root.is_dir() and list(root.iterdir()) == []


def test_fresh_refuses_a_directory_holding_anything_else_and_deletes_nothing(tmp_path, capsys):
    root = demo_dir(tmp_path / "mine")
    (root / "important.txt").write_text("precious")
    with pytest.raises(ConfigError, match=r"is not one \(it holds important.txt\): nothing was deleted"):
        remove_demo(root)
    assert (root / "important.txt").read_text() == "precious" and (root / "weights" / MARKER).is_file()
    assert main(["demo", "--dir", str(root), "--fresh"]) == 2  # refused before anything runs
    assert "demo --fresh deletes an earlier demo" in capsys.readouterr().err
    assert (root / "important.txt").is_file()


def test_fresh_refuses_weights_that_are_not_the_demos(tmp_path):
    root = tmp_path / "demo"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "model.safetensors").write_bytes(b"real")
    with pytest.raises(ConfigError, match="without janus_ray_tiny_weights.json"):
        remove_demo(root)
    assert (root / "weights" / "model.safetensors").is_file()


def test_fresh_refuses_files_of_the_users_own_inside_variants_and_deletes_nothing(tmp_path):
    """A user who dropped their own images (or an earlier run's folder) into the demo's variants
    would lose them to rmtree: --fresh deletes only what the demo wrote."""
    from janus_ray.demo import PROMPTS, make_variant_folders

    root = demo_dir(tmp_path / "demo")
    make_variant_folders(root / "variants", PROMPTS, image_size=8)
    mine = root / "variants" / "Janus_llama_dola_early_exit" / "out_dola" / "prompt_0" / "my_best.png"
    mine.write_bytes(b"png")
    with pytest.raises(ConfigError, match=r"holds files the demo did not write "
                                          r"\(Janus_llama_dola_early_exit/out_dola/prompt_0/my_best.png\)"):
        remove_demo(root)
    assert mine.is_file() and (root / "weights" / MARKER).is_file()
    mine.unlink()
    (root / "variants" / "summary.csv").write_text("run output")
    (root / "variants" / ".janus_ray_cache" / "x").mkdir(parents=True)
    remove_demo(root)  # the demo's images, the run's outputs and its cache only: removed
    assert list(root.iterdir()) == []


def test_fresh_refuses_files_of_the_users_own_inside_weights_and_an_edited_prompt_json(tmp_path):
    """A new user's trial: a file and a checkpoint folder of their own under weights/ were deleted
    (only the marker was checked), and an edited prompt.json was overwritten."""
    import json

    from janus_ray.demo import PROMPTS, make_variant_folders

    root = demo_dir(tmp_path / "demo")
    import hashlib

    digest = hashlib.sha256(b"tiny").hexdigest()
    (root / "weights" / MARKER).write_text(json.dumps({"sha256": {"PickScore_v1/model.safetensors": digest}}))
    (root / "weights" / "PickScore_v1").mkdir()
    (root / "weights" / "PickScore_v1" / "model.safetensors").write_bytes(b"tiny")
    (root / "weights" / "clip-flant5-xl").mkdir()
    (root / "weights" / "clip-flant5-xl" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"weights holds files the demo did not write \(clip-flant5-xl/config.json\)"):
        remove_demo(root)
    assert (root / "weights" / "clip-flant5-xl" / "config.json").is_file()
    (root / "weights" / "clip-flant5-xl" / "config.json").unlink()
    make_variant_folders(root / "variants", PROMPTS, image_size=8)
    (root / "variants" / "prompt.json").write_text(json.dumps({"prompts": ["my own edited"]}))
    with pytest.raises(ConfigError, match=r"variants holds files the demo did not write \(prompt.json \(edited\)\)"):
        remove_demo(root)
    assert "my own edited" in (root / "variants" / "prompt.json").read_text()
    (root / "variants" / "prompt.json").write_text(json.dumps({"prompts": PROMPTS}))
    remove_demo(root)
    assert list(root.iterdir()) == []


def test_fresh_refuses_a_weight_file_or_an_image_the_user_replaced(tmp_path):
    """A new user's trial: their own ImageReward.pt copied over the demo's, and an edited image,
    were deleted: file names alone were compared. The markers' sha256 now are too."""
    import hashlib
    import json

    from janus_ray.demo import DEMO_MARKER, PROMPTS, make_variant_folders, variant_images, write_demo_marker

    root = demo_dir(tmp_path / "demo")
    (root / "weights" / "ImageReward").mkdir()
    (root / "weights" / "ImageReward" / "ImageReward.pt").write_bytes(b"tiny")
    (root / "weights" / MARKER).write_text(json.dumps(
        {"sha256": {"ImageReward/ImageReward.pt": hashlib.sha256(b"tiny").hexdigest()}}))
    make_variant_folders(root / "variants", PROMPTS, image_size=8)
    write_demo_marker(root / "variants")
    (root / "weights" / "ImageReward" / "ImageReward.pt").write_bytes(b"the user's own checkpoint")
    with pytest.raises(ConfigError, match=r"weights holds files the demo did not write \(ImageReward/ImageReward.pt \(changed\)\)"):
        remove_demo(root)
    (root / "weights" / "ImageReward" / "ImageReward.pt").write_bytes(b"tiny")
    image = root / "variants" / variant_images(PROMPTS)[0][0]
    image.write_bytes(image.read_bytes() + b"edited")
    with pytest.raises(ConfigError, match=rf"variants holds files the demo did not write \({variant_images(PROMPTS)[0][0]} \(changed\)\)"):
        remove_demo(root)
    assert image.is_file() and (root / "variants" / DEMO_MARKER).is_file()
    image.unlink()  # a demo image the user deleted: nothing of theirs left to keep
    remove_demo(root)
    assert list(root.iterdir()) == []
