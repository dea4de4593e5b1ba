"""The CLI's driver-side commands without Ray: list, validate, --strict's exit code, output_dirs."""

from __future__ import annotations

import signal
import types
from pathlib import Path

import pytest

import janus_ray.pipeline
from janus_ray.cli import main
from janus_ray.config import RunConfig
from janus_ray.demo import PROMPTS, make_variant_folders
from janus_ray.errors import ConfigError
from janus_ray.metrics import get_scorer_class, list_scorers
from janus_ray.pipeline import in_thread, output_dirs

from ..conftest import WEIGHTS_ROOT


def test_list_shows_every_metric_and_keeps_the_dummy_apart(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    table, _, rest = out.partition("\nTest and benchmark scorers")
    names = [line.split()[0] for line in table.splitlines() if line and not line.startswith(" ")]
    assert names == list_scorers() and len(names) == 7  # six metrics, HPS in two versions
    for name in names:
        assert get_scorer_class(name).column in table
    assert "pickscore-v1" in table and "clip-flant5-xl" in table  # aliases are listed
    assert "dummy" not in table and "dummy" in rest


@pytest.fixture
def variant_folders(tmp_path) -> list[Path]:
    return make_variant_folders(tmp_path / "variants", PROMPTS[:3])


def test_validate_reports_ok_for_ready_folders(variant_folders, capsys):
    prompt_json = variant_folders[0].parent / "prompt.json"
    assert main(["validate", *map(str, variant_folders), "--prompt-json", str(prompt_json)]) == 0
    out = capsys.readouterr().out
    assert out.count("status: ok") == len(variant_folders)
    assert f"OK: {len(variant_folders)} folder(s), {3 * len(variant_folders)} row(s) to score." in out


def test_validate_takes_an_eval_command_line_as_is(variant_folders, weights_root, tmp_path, capsys):
    """A new user's trial: `eval` with `validate` in its place failed on --weights-root
    ("unrecognized arguments"); the folders may come from --config as in eval."""
    prompt_json = variant_folders[0].parent / "prompt.json"
    line = ["--weights-root", str(weights_root), "--prompt-json", str(prompt_json), "--metrics", "pickscore",
            "--output-dir", str(tmp_path / "out"), "--no-resume"]
    assert main(["validate", *map(str, variant_folders[:2]), *line]) == 0
    out = capsys.readouterr().out
    assert out.count("status: ok") == 2 and "weight files not checked" not in out
    assert not (tmp_path / "out").exists()  # validate creates nothing
    config = tmp_path / "run.yaml"
    config.write_text(f"folders: [{variant_folders[0]}]\nprompt_json: {prompt_json}\n")
    assert main(["validate", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("status: ok") == 1


def test_validate_reports_what_eval_refuses_before_it_starts_and_keeps_evals_limit(variant_folders, tmp_path, capsys):
    """A new user's trial: validate said OK where eval refused at once (two folders named alike
    into one --output-dir, weight files missing), and counted every row despite --limit."""
    prompt_json = variant_folders[0].parent / "prompt.json"
    first, second = tmp_path / "a" / "run", tmp_path / "b" / "run"
    first.parent.mkdir()
    second.parent.mkdir()
    variant_folders[0].rename(first)
    variant_folders[1].rename(second)
    (tmp_path / "empty").mkdir()
    code = main(["validate", str(first), str(second), "--prompt-json", str(prompt_json), "--limit", "2",
                 "--output-dir", str(tmp_path / "out"), "--weights-root", str(tmp_path / "empty"), "--metrics", "pickscore"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.count("rows: 2, to score: 2") == 2
    assert "Input folders share a name (['run', 'run']); cannot map them into one --output-dir." in out
    assert "Cannot load scorer 'pickscore': weight files are missing or unreadable:" in out and "MISSING" in out
    assert out.rstrip().endswith("PROBLEMS FOUND in the run's settings; 2 folder(s), 4 row(s) to score.")
    assert main(["validate", str(first), "--prompt-json", str(prompt_json)]) == 0
    assert "(weight files not checked: give --weights-root" in capsys.readouterr().out


def test_validate_without_folders_says_how_to_give_them(capsys):
    assert main(["validate", "--metrics", "pickscore"]) == 2
    assert "No input folders given: pass one or more FOLDER arguments" in capsys.readouterr().err


def test_validate_exits_1_and_names_an_unreadable_image(variant_folders, capsys):
    prompt_json = variant_folders[0].parent / "prompt.json"
    broken = next(variant_folders[0].rglob("*.jpg"))
    broken.write_bytes(b"not a jpeg")
    assert main(["validate", str(variant_folders[0]), "--prompt-json", str(prompt_json)]) == 1
    out = capsys.readouterr().out
    assert "unreadable images: 1" in out and broken.name in out and "PROBLEMS FOUND" in out


def test_validate_names_a_broken_symbolic_link(variant_folders, capsys):
    """A new user's trial: a symlink to a missing file passed validate ("unreadable images: 0")."""
    prompt_json = variant_folders[0].parent / "prompt.json"
    image = next(variant_folders[0].rglob("*.jpg"))
    image.unlink()
    image.symlink_to(variant_folders[0] / "nowhere.jpg")
    assert main(["validate", str(variant_folders[0]), "--prompt-json", str(prompt_json)]) == 1
    out = capsys.readouterr().out
    assert "unreadable images: 1" in out and f"broken symbolic link to {variant_folders[0] / 'nowhere.jpg'}" in out


def fake_result(kwargs: dict, **fields) -> types.SimpleNamespace:
    """What a stand-in for ``evaluate(config, **kwargs)`` returns: ``fields``, and ``then`` run as
    ``evaluate`` runs it (the CLI builds its report there)."""
    result = types.SimpleNamespace(**fields)
    result.then = in_thread(kwargs["then"], result) if kwargs.get("then") else None
    return result


@pytest.mark.parametrize(("strict", "n_failed", "code"), [(False, 2, 0), (True, 2, 1), (True, 0, 0)])
def test_strict_exits_1_only_when_rows_failed(variant_folders, monkeypatch, capsys, strict, n_failed, code):
    seen = {}

    def fake_evaluate(config, **kwargs):  # the pipeline itself is covered by the Ray tests
        seen["config"] = config
        return fake_result(kwargs, n_failed=n_failed, output_root=variant_folders[0].parent)

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", fake_evaluate)
    argv = ["eval", str(variant_folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy"]
    assert main(argv + (["--strict"] if strict else [])) == code
    assert seen["config"].strict is strict and seen["config"].metrics == ["dummy"]
    assert (f"{n_failed} row(s) failed" in capsys.readouterr().err) is bool(n_failed)


def test_output_dirs_default_to_the_folders_under_their_common_parent(tmp_path):
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    root, dirs = output_dirs(RunConfig(folders=[str(a), str(b)]))
    assert root == (tmp_path / "runs").resolve() and dirs == {str(a.resolve()): a.resolve(), str(b.resolve()): b.resolve()}
    root, dirs = output_dirs(RunConfig(folders=[str(a)]))
    assert root == (tmp_path / "runs").resolve() and dirs == {str(a.resolve()): a.resolve()}


def test_output_dirs_map_folders_by_name_into_output_dir(tmp_path):
    a, b = tmp_path / "x" / "a", tmp_path / "y" / "b"
    root, dirs = output_dirs(RunConfig(folders=[str(a), str(b)], output_dir=str(tmp_path / "out")))
    out = (tmp_path / "out").resolve()
    assert root == out and dirs == {str(a.resolve()): out / "a", str(b.resolve()): out / "b"}


def test_output_dirs_refuse_two_folders_with_one_name(tmp_path):
    config = RunConfig(folders=[str(tmp_path / "x" / "same"), str(tmp_path / "y" / "same")], output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="Input folders share a name"):
        output_dirs(config)


def test_ctrl_c_while_the_report_is_built_says_the_scores_are_written(variant_folders, monkeypatch, capsys):
    """New user's trial: SIGINT during the report step printed only "interrupted", though every
    score and summary file was written."""
    import janus_ray.report

    root = variant_folders[0].parent
    monkeypatch.setattr(janus_ray.pipeline, "evaluate",
                        lambda config, **kwargs: fake_result(kwargs, n_failed=0, output_root=root))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(janus_ray.report, "build_report", interrupted)
    argv = ["eval", str(variant_folders[0]), "--weights-root", str(WEIGHTS_ROOT), "--metrics", "dummy"]
    previous = signal.getsignal(signal.SIGINT)
    try:
        assert main(argv) == 130
    finally:
        signal.signal(signal.SIGINT, previous)  # the eval ignores further Ctrl-Cs
    err = capsys.readouterr().err
    assert f"interrupted while building the report; every score is written under {root}" in err
    assert f"`janus-ray report {root}` builds it" in err


def test_a_described_cluster_short_of_cpus_names_no_node_node(capsys):
    """New user's trial: 'Node node has 4 CPU(s) ... ask for fewer replicas' (none were asked)."""
    assert main(["plan", "--gpus", "64", "--gpu-memory-gb", "80", "--cpus", "4"]) == 2
    err = capsys.readouterr().err
    assert "Each node has 4 CPU(s) for up to" in err and "Node node" not in err
    assert "use fewer GPUs or fewer replicas (--replicas METRIC=N)" in err


def test_plan_with_folders_counts_their_images_and_estimates_the_run_time(variant_folders, capsys):
    prompt_json = str(variant_folders[0].parent / "prompt.json")
    argv = ["plan", *map(str, variant_folders), "--prompt-json", prompt_json, "--weights-root", str(WEIGHTS_ROOT),
            "--gpus", "1", "--gpu-memory-gb", "80", "--cpus", "16", "--metrics", "pickscore"]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    images = 3 * len(variant_folders)
    assert last.startswith(f"run: {images} image(s) in {len(variant_folders)} folder(s) (before the resume cache): ~")
    assert main([*argv, "--json", "--limit", "1"]) == 0
    document = __import__("json").loads(capsys.readouterr().out)
    run = document["run"]
    assert run["folders"] == len(variant_folders) and run["images"] == len(variant_folders)  # --limit 1 per folder
    assert run["estimated_seconds"] == pytest.approx(run["images"] / document["images_per_s"], rel=1e-2)


def test_plan_without_folders_prints_no_run_estimate(capsys):
    assert main(["plan", "--gpus", "1", "--gpu-memory-gb", "80", "--cpus", "16"]) == 0
    assert "run:" not in capsys.readouterr().out


RUN_ONLY_FLAGS = ("--output-dir", "--cache-dir", "--strict", "--no-resume", "--no-pixel-store", "--pool-start-timeout",
                  "--no-report")


def test_plan_help_leaves_out_the_flags_that_cannot_change_a_plan_and_still_accepts_them(capsys):
    from janus_ray.cli import build_parser

    plan_help = build_parser()._subparsers._group_actions[0].choices["plan"].format_usage()
    eval_help = build_parser()._subparsers._group_actions[0].choices["eval"].format_usage()
    for flag in RUN_ONLY_FLAGS:
        assert f"[{flag}" not in plan_help and f"[{flag}" in eval_help, flag
    argv = ["plan", "--gpus", "1", "--gpu-memory-gb", "80", "--cpus", "8", "--output-dir", "out", "--cache-dir", "c",
            "--strict", "--no-resume", "--no-pixel-store", "--pool-start-timeout", "60", "--no-report"]
    assert main(argv) == 0 and capsys.readouterr().out.startswith("plan: gpu layout")


def test_validate_refuses_a_folder_given_twice_as_eval_does(variant_folders, capsys):
    """A new user's trial: `validate A A A/` counted A's rows three times."""
    prompt_json = variant_folders[0].parent / "prompt.json"
    folder = str(variant_folders[0])
    assert main(["validate", folder, folder + "/", "--prompt-json", str(prompt_json)]) == 1
    out = capsys.readouterr().out
    assert f"Folder {folder}/ is given twice (same as {folder})." in out
    assert "3 row(s) to score" in out  # counted once


def test_a_folder_named_like_a_file_the_run_writes_at_the_output_root_is_refused_before_scoring(variant_folders, tmp_path, capsys):
    """A new user's trial: a folder named summary.csv (or .janus_ray_cache) under one --output-dir
    passed validate; eval scored it all, then failed writing the summary ("Is a directory")."""
    from janus_ray.config import RunConfig
    from janus_ray.errors import ConfigError
    from janus_ray.pipeline import output_dirs

    prompt_json = variant_folders[0].parent / "prompt.json"
    for name in ("summary.csv", ".janus_ray_cache"):
        odd = tmp_path / "in" / name
        odd.parent.mkdir(exist_ok=True)
        variant_folders[0].rename(odd)
        assert main(["validate", str(odd), "--prompt-json", str(prompt_json), "--output-dir", str(tmp_path / "out")]) == 1
        assert f"where the run writes its own {name}: rename the folder, or give another --output-dir." in capsys.readouterr().out
        odd.rename(variant_folders[0])
    config = RunConfig(folders=[str(tmp_path / "in" / "summary.csv")], weights_root=str(tmp_path))
    with pytest.raises(ConfigError, match="or give --output-dir"):  # without --output-dir: the common parent
        output_dirs(config)


def test_plan_refuses_the_metric_settings_eval_refuses(tmp_path, capsys):
    """A new user's trial: plan --config planned an unknown option and VQAScore in float16."""
    config = tmp_path / "run.yaml"
    config.write_text("metrics: [clipscore]\nmetric_specs:\n  clipscore: {options: {foo: 1}}\n")
    assert main(["plan", "--config", str(config), "--gpus", "1", "--gpu-memory-gb", "80", "--cpus", "8"]) == 2
    assert "clipscore: unknown option(s) foo; accepted: text_cache_size." in capsys.readouterr().err
    assert main(["plan", "--metrics", "vqascore", "--dtype", "vqascore=float16", "--gpus", "1", "--gpu-memory-gb", "80",
                 "--cpus", "8"]) == 2
    assert "vqascore: float16 is not supported" in capsys.readouterr().err
