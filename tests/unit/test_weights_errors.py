"""Missing and corrupt weight files: WeightsError naming the file, and ``janus-ray check-weights``.

Each test builds its own weights root in tmp_path from symlinks to the parity fixture weights, then
removes or replaces one file there (the fixture itself is never touched). No Ray.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from janus_ray import load_scorer
from janus_ray.cli import main
from janus_ray.errors import WeightsError
from janus_ray.metrics.weights import LAYOUT_HELP, file_status

FIXTURE_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "parity" / "weights"
LAYOUT_TITLE = "Expected weights-root layout"

#: one file each scorer cannot do without, relative to the weights root
REQUIRED_FILE = {
    "vqascore": "clip-flant5-xxl/spiece.model",
    "clipscore": "clip-vit-large-patch14-336/model.safetensors",
    "itmscore": "blip2-itm-vit-g/config.json",
    "hpsv2": "HPSv2/HPS_v2_compressed.pt",
    "hpsv2.1": "HPSv2/HPS_v2.1_compressed.pt",
    "pickscore": "PickScore_v1/preprocessor_config.json",
    "imagereward": "ImageReward/med_config.json",
}


def linked_root(tmp_path: Path) -> Path:
    """A weights root whose every file is a symlink to the fixture's (so one can be swapped out)."""
    root = tmp_path / "weights"
    for source in sorted(FIXTURE_ROOT.rglob("*")):
        if source.is_file():
            target = root / source.relative_to(FIXTURE_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return root


def replace_file(root: Path, rel: str, data: bytes) -> Path:
    """Replace the symlink ``rel`` by a real file holding ``data``; returns its path."""
    path = root / rel
    path.unlink()
    path.write_bytes(data)
    return path


def truncated(rel: str) -> bytes:
    data = (FIXTURE_ROOT / rel).read_bytes()
    return data[: len(data) // 2]


GARBAGE = b"\x00not a checkpoint\xff" * 16


def assert_names_file(exc: WeightsError, path: Path) -> None:
    message = str(exc)
    # A precise one-line cause first, not a library traceback.
    assert message.startswith("Cannot load scorer "), message
    assert str(path) in message, message
    assert LAYOUT_TITLE in message


# ----- missing files ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REQUIRED_FILE))
def test_missing_file_names_the_path_and_the_layout(name, tmp_path):
    root = linked_root(tmp_path)
    missing = root / REQUIRED_FILE[name]
    missing.unlink()
    with pytest.raises(WeightsError) as info:
        load_scorer(name, root)
    assert_names_file(info.value, missing)
    assert "MISSING" in str(info.value)
    assert LAYOUT_HELP in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_weights_lists_every_accepted_file_name(tmp_path):
    root = linked_root(tmp_path)
    (root / "PickScore_v1" / "model.safetensors").unlink()
    with pytest.raises(WeightsError) as info:
        load_scorer("pickscore", root)
    assert "model.safetensors or " in str(info.value) and "pytorch_model.bin" in str(info.value)


def test_every_missing_file_is_reported_at_once(tmp_path):
    root = linked_root(tmp_path)
    for rel in ("ImageReward/ImageReward.pt", "bert-base-uncased/vocab.txt"):
        (root / rel).unlink()
    with pytest.raises(WeightsError) as info:
        load_scorer("imagereward", root)
    assert str(info.value).count("MISSING") == 2


def test_empty_weights_root_fails_with_the_layout(tmp_path):
    with pytest.raises(WeightsError, match=LAYOUT_TITLE):
        load_scorer("clipscore", tmp_path)


# ----- corrupt files ----------------------------------------------------------------------------
#: (scorer, file, how it is damaged): both files that fail the cheap structural check up front
#: (UNREADABLE) and files that pass it and only fail in the library that reads them
CORRUPT_CASES = [
    ("clipscore", "clip-vit-large-patch14-336/model.safetensors", "truncated"),
    ("pickscore", "PickScore_v1/model.safetensors", "truncated"),
    ("itmscore", "blip2-itm-vit-g/model.safetensors", "truncated"),
    ("clipscore", "clip-vit-large-patch14-336/config.json", "garbage"),
    ("itmscore", "blip2-itm-vit-g/tokenizer.json", "garbage"),
    ("hpsv2", "HPSv2/HPS_v2_compressed.pt", "garbage"),
    ("hpsv2", "HPSv2/HPS_v2_compressed.pt", "truncated"),
    ("hpsv2.1", "HPSv2/HPS_v2.1_compressed.pt", "garbage"),
    ("hpsv2", "HPSv2/open_clip_config.json", "garbage"),
    ("imagereward", "ImageReward/ImageReward.pt", "garbage"),
    ("imagereward", "ImageReward/ImageReward.pt", "truncated"),
    ("imagereward", "ImageReward/med_config.json", "garbage"),
    ("vqascore", "clip-flant5-xxl/pytorch_model.bin", "garbage"),
    ("vqascore", "clip-flant5-xxl/pytorch_model.bin", "truncated"),
    ("vqascore", "clip-flant5-xxl/spiece.model", "garbage"),
    ("vqascore", "clip-flant5-xxl/config.json", "garbage"),
]


@pytest.mark.parametrize(("name", "rel", "damage"), CORRUPT_CASES, ids=lambda v: str(v).replace("/", "."))
def test_corrupt_file_raises_weights_error_naming_it(name, rel, damage, tmp_path):
    root = linked_root(tmp_path)
    bad = replace_file(root, rel, truncated(rel) if damage == "truncated" else GARBAGE)
    with pytest.raises(WeightsError) as info:
        load_scorer(name, root)
    assert_names_file(info.value, bad)


def test_a_config_of_another_model_names_the_config_not_a_corrupt_weights_file(tmp_path):
    """A new user's trial: projection_dim doubled in config.json gave "model.safetensors is corrupt"."""
    import json

    root = linked_root(tmp_path)
    rel = "clip-vit-large-patch14-336/config.json"
    config = json.loads((root / rel).read_text(encoding="utf-8"))
    config["projection_dim"] *= 2
    replace_file(root, rel, json.dumps(config).encode())
    with pytest.raises(WeightsError, match=r"model.safetensors does not match the model that .*config.json describes"):
        load_scorer("clipscore", root)


def test_corrupt_bpe_merges_file_is_the_one_named(tmp_path):
    root = linked_root(tmp_path)
    bad = replace_file(root, "clip-vit-large-patch14-336/merges.txt", GARBAGE)
    with pytest.raises(WeightsError) as info:
        load_scorer("clipscore", root)
    assert_names_file(info.value, bad)


def test_safetensors_with_a_broken_header_is_a_weights_error(tmp_path):
    # Header length is plausible (passes the cheap check), the header itself is not JSON.
    rel = "clip-vit-large-patch14-336/model.safetensors"
    root = linked_root(tmp_path)
    bad = replace_file(root, rel, (16).to_bytes(8, "little") + b"not json at all!" + bytes(64))
    assert file_status(bad) == "OK"
    with pytest.raises(WeightsError) as info:
        load_scorer("clipscore", root)
    assert_names_file(info.value, bad)


# ----- file_status ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rel", "data", "expected"),
    [
        ("HPSv2/HPS_v2_compressed.pt", b"", "UNREADABLE"),
        ("HPSv2/HPS_v2_compressed.pt", "truncated", "UNREADABLE"),
        ("PickScore_v1/config.json", b"{not json", "UNREADABLE"),
        ("PickScore_v1/model.safetensors", b"\xff" * 64, "UNREADABLE"),
        ("PickScore_v1/config.json", None, "OK"),
        # neither zip nor pickle (a new user's trial: b'garbage' * 10 passed, even with --deep)
        ("ImageReward/ImageReward.pt", b"garbage" * 10, "UNREADABLE"),
        ("ImageReward/ImageReward.pt", b"\x80", "UNREADABLE"),
        ("ImageReward/ImageReward.pt", b"\x80\x02\x8a\x0alegacy torch.save", "OK"),
    ],
)
def test_file_status(rel, data, expected, tmp_path):
    root = linked_root(tmp_path)
    path = root / rel
    if data is not None:
        replace_file(root, rel, truncated(rel) if data == "truncated" else data)
    assert file_status(path) == expected


def test_file_status_missing(tmp_path):
    assert file_status(tmp_path / "nothing.pt") == "MISSING"


# ----- janus-ray check-weights --------------------------------------------------------------------
def check_weights(capsys, root: Path, *extra: str) -> tuple[int, list[str]]:
    code = main(["check-weights", "--weights-root", str(root), *extra])
    return code, capsys.readouterr().out.splitlines()


def status_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("  ")]


def test_check_weights_all_ok_on_the_fixture_root(capsys):
    code, lines = check_weights(capsys, FIXTURE_ROOT)
    assert code == 0
    for name in ("hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward", "hpsv2.1"):
        assert f"{name}:" in lines
    files = status_lines(lines)
    assert files and all(line.split()[0] == "OK" for line in files), lines
    listed = {Path(line.split()[1]) for line in files}
    for rel in REQUIRED_FILE.values():
        assert FIXTURE_ROOT / rel in listed
    # clip-flant5-xl is optional: not checked unless asked for.
    assert not any("clip-flant5-xl/" in line for line in lines)
    assert lines[-1] == "all weight files present"


def test_check_weights_reports_a_missing_file(tmp_path, capsys):
    root = linked_root(tmp_path)
    missing = root / "ImageReward" / "ImageReward.pt"
    missing.unlink()
    code, lines = check_weights(capsys, root)
    assert code != 0
    bad = [line for line in status_lines(lines) if not line.split()[0] == "OK"]
    assert len(bad) == 1 and bad[0].split()[:2] == ["MISSING", str(missing)], lines
    assert lines[-1] == "1 file(s) missing or unreadable"


@pytest.mark.parametrize(
    ("rel", "data"),
    [("HPSv2/HPS_v2.1_compressed.pt", b""), ("blip2-itm-vit-g/config.json", b'{"garbled": ')],
    ids=["zero-byte", "garbled-json"],
)
def test_check_weights_reports_an_unreadable_file(rel, data, tmp_path, capsys):
    root = linked_root(tmp_path)
    bad_path = replace_file(root, rel, data)
    code, lines = check_weights(capsys, root)
    assert code != 0
    bad = [line for line in status_lines(lines) if not line.split()[0] == "OK"]
    assert len(bad) == 1 and bad[0].split()[:2] == ["UNREADABLE", str(bad_path)], lines


def test_check_weights_of_selected_metrics_and_the_optional_xl_model(capsys):
    code, lines = check_weights(capsys, FIXTURE_ROOT, "--metrics", "clipscore")
    assert code == 0 and [line for line in lines if line.endswith(":")] == ["clipscore:"]
    code, lines = check_weights(capsys, FIXTURE_ROOT, "--metrics", "clip-flant5-xl")
    assert code != 0
    assert any(line.split()[:1] == ["MISSING"] and "clip-flant5-xl/config.json" in line for line in lines)


def test_check_weights_unknown_metric_is_a_clean_error(capsys):
    code = main(["check-weights", "--weights-root", str(FIXTURE_ROOT), "--metrics", "clipscor"])
    captured = capsys.readouterr()
    assert code == 2
    assert "Did you mean 'clipscore'" in captured.err


def test_garbled_bert_vocab_for_imagereward_is_a_weights_error(tmp_path):
    root = linked_root(tmp_path)
    bad = replace_file(root, "bert-base-uncased/vocab.txt", b"hello\nworld\n")
    (root / "bert-base-uncased" / "tokenizer.json").unlink(missing_ok=True)
    with pytest.raises(WeightsError, match=r"lacks the BERT special tokens") as info:
        load_scorer("imagereward", root)
    assert str(bad) in str(info.value)


# ----- structure checks vs --deep ---------------------------------------------------------------
def _flip_a_data_byte(path: Path) -> None:
    """Damage a zip member's data without touching the directory: only a CRC check sees it."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)
    data = bytearray(path.read_bytes())
    position = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_default_check_reads_structure_only_and_deep_checks_crcs(tmp_path, capsys):
    rel = "HPSv2/HPS_v2_compressed.pt"
    root = linked_root(tmp_path)
    path = replace_file(root, rel, (FIXTURE_ROOT / rel).read_bytes())
    _flip_a_data_byte(path)
    assert file_status(path) == "OK"  # the directory is intact: the cheap check cannot see it
    assert file_status(path, deep=True) == "UNREADABLE"
    code, lines = check_weights(capsys, root, "--metrics", "hpsv2", "--deep")
    assert code == 1 and any(line.split()[0] == "UNREADABLE" and rel in line for line in status_lines(lines))
    code, _ = check_weights(capsys, root, "--metrics", "hpsv2")
    assert code == 0


def test_truncated_safetensors_is_unreadable_without_reading_it(tmp_path):
    rel = "PickScore_v1/model.safetensors"
    root = linked_root(tmp_path)
    data = (FIXTURE_ROOT / rel).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    path = replace_file(root, rel, data[: 8 + header_len + 16])  # header intact, tensors cut
    assert file_status(path) == "UNREADABLE"


def test_check_weights_rejects_an_unknown_metric_before_checking_any(capsys):
    """New user's trial: the valid metrics' files were listed before the unknown name was refused."""
    code = main(["check-weights", "--weights-root", str(FIXTURE_ROOT), "--metrics", "clipscore", "nosuchmetric"])
    captured = capsys.readouterr()
    assert code == 2 and "nosuchmetric" in captured.err
    assert "clipscore:" not in captured.out


def test_check_weights_on_a_root_that_does_not_exist_says_so_in_one_line(tmp_path, capsys):
    """A new user's trial: a mistyped --weights-root printed 26 MISSING lines."""
    from janus_ray.cli import main

    assert main(["check-weights", "--weights-root", str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"--weights-root '{tmp_path / 'nope'}' does not exist or is not a directory." in captured.err


def test_check_weights_takes_an_eval_command_line_as_is(tmp_path, capsys):
    """A new user's trial: check-weights refused --config, --imagereward_ckpt and --vqa_model
    ("unrecognized arguments"), so the weights of an eval command line could not be checked."""
    config = tmp_path / "run.yaml"
    config.write_text(f"weights_root: {FIXTURE_ROOT}\nmetrics: [pickscore]\n")
    assert main(["check-weights", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.endswith(":")] == ["pickscore:"] and lines[-1] == "all weight files present"
    code, lines = check_weights(capsys, FIXTURE_ROOT, "--metrics", "vqascore", "--vqa_model", "clip-flant5-xl")
    assert code == 1 and any(line.split()[:1] == ["MISSING"] and "clip-flant5-xl/config.json" in line for line in lines)
    checkpoint = tmp_path / "mine" / "ImageReward.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"garbage" * 10)
    code, lines = check_weights(capsys, FIXTURE_ROOT, "--metrics", "imagereward", "--imagereward_ckpt", str(checkpoint))
    assert code == 1 and any(line.split()[:2] == ["UNREADABLE", str(checkpoint)] for line in lines), lines
    assert main(["check-weights", "--metrics", "pickscore"]) == 2
    assert "--weights-root is required" in capsys.readouterr().err
