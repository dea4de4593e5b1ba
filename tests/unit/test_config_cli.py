"""RunConfig.validate() and the ``eval`` command line: every documented error, precedence, legacy flags.

Everything here runs through ``config_from_args(build_parser().parse_args([...]))``, which never
imports Ray; no test starts Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from janus_ray.cli import build_parser, config_from_args
from janus_ray.config import DEFAULT_METRICS, MetricSpec, RunConfig
from janus_ray.errors import ConfigError, UnknownNameError


@pytest.fixture
def dirs(tmp_path):
    folder = tmp_path / "variant_a"
    folder.mkdir()
    weights = tmp_path / "weights"
    weights.mkdir()
    return folder, weights


@pytest.fixture
def run(dirs):
    """Parse ``eval FOLDER --weights-root W <argv>`` and build the validated config."""
    folder, weights = dirs

    def parse(*argv: str, extra_folders: tuple[str, ...] = ()) -> RunConfig:
        prefix = [str(folder), *extra_folders, "--weights-root", str(weights)]
        return config_from_args(build_parser().parse_args(["eval", *prefix, *argv]))

    return parse


@pytest.fixture
def write_yaml(tmp_path):
    def write(data, name: str = "run.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


# ----- defaults -----------------------------------------------------------------------------------
def test_defaults(run, dirs):
    config = run()
    assert config.metrics == DEFAULT_METRICS
    assert config.folders == [str(dirs[0])] and config.weights_root == str(dirs[1])
    assert (config.device, config.dtype, config.limit, config.resume, config.strict) == ("auto", None, None, True, False)
    assert config.decode_batch_size == 16


# ----- metrics ------------------------------------------------------------------------------------
def test_unknown_metric_lists_the_valid_names(run):
    with pytest.raises(UnknownNameError) as info:
        run("--metrics", "clipscore", "pickscor")
    message = str(info.value)
    assert "Unknown scorer 'pickscor'" in message and "Did you mean 'pickscore'" in message
    for name in ["vqascore", "clipscore", "itmscore", "hpsv2", "hpsv2.1", "pickscore", "imagereward"]:
        assert name in message
    assert "dummy" not in message  # the test scorer is not offered to users (a new user's trial)


def test_metric_aliases_are_resolved(run):
    config = run("--metrics", "openai:ViT-L-14-336", "pickscore-v1", "clip-flant5-xl")
    assert config.metrics == ["clipscore", "pickscore", "vqascore"]
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


@pytest.mark.parametrize("metrics", [["clipscore", "clipscore"], ["clipscore", "openai:ViT-L-14-336"]])
def test_metric_listed_twice(run, metrics):
    with pytest.raises(ConfigError, match=r"Metric listed twice: clipscore \(after resolving aliases"):
        run("--metrics", *metrics)


def test_no_metrics(run, write_yaml):
    with pytest.raises(ConfigError, match="No metrics selected. Available: vqascore, clipscore"):
        run("--config", str(write_yaml({"metrics": []})))


# ----- the earlier tool's model flags ------------------------------------------------------------
def test_vqa_model_blip2_flan_t5_xxl_explains_it_never_existed(run):
    with pytest.raises(ConfigError) as info:
        run("--vqa_model", "blip2-flan-t5-xxl")
    message = str(info.value)
    assert "no t2v_metrics release ever had blip2-flan-t5-xxl" in message
    assert "Valid: clip-flant5-xxl, clip-flant5-xl" in message


@pytest.mark.parametrize(
    ("flag", "value", "valid"),
    [
        ("--clip_model", "ViT-B-32", "openai:ViT-L-14-336"),
        ("--itm_model", "blip-itm", "blip2-itm"),
        ("--hps_model", "hpsv3", "hpsv2, hpsv2.1"),
        ("--pickscore_model", "pickscore-v2", "pickscore-v1"),
    ],
)
def test_bad_legacy_model_value_lists_valid_ones(run, flag, value, valid):
    with pytest.raises(ConfigError, match=f"{flag} '{value}' is not available. Valid: {valid}"):
        run(flag, value)


def test_vqa_model_xl_sets_the_vqascore_model_option(run):
    config = run("--vqa_model", "clip-flant5-xl")
    assert config.metrics == DEFAULT_METRICS
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


def test_vqa_model_enables_vqascore_when_not_listed(run):
    config = run("--metrics", "clipscore", "--vqa_model", "clip-flant5-xl")
    assert config.metrics == ["clipscore", "vqascore"]
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


def test_hps_model_hpsv21_replaces_hpsv2_in_place(run, capsys):
    config = run("--hps_model", "hpsv2.1")
    assert config.metrics == ["hpsv2.1", *DEFAULT_METRICS[1:]]
    assert "hpsv2" not in config.metrics
    # a new user's trial: the swap was silent, and HPSv2Score left empty looked like a failure
    assert "HPS v2.1 is scored in HPS v2.0's place (column HPSv2.1Score; HPSv2Score stays empty)" in capsys.readouterr().err
    run("--metrics", "clipscore", "--hps_model", "hpsv2.1")  # nothing replaced: nothing to say
    assert "in HPS v2.0's place" not in capsys.readouterr().err


def test_hps_model_hpsv2_keeps_the_default_list(run):
    assert run("--hps_model", "hpsv2").metrics == DEFAULT_METRICS


def test_hps_model_hpsv21_enables_it_when_hps_is_not_listed(run):
    # Like --vqa_model & co., the flag enables its metric (it used to be silently ignored).
    assert run("--metrics", "clipscore", "--hps_model", "hpsv2.1").metrics == ["clipscore", "hpsv2.1"]


def test_hps_model_hpsv21_with_both_listed_does_not_duplicate(run):
    assert run("--metrics", "hpsv2", "hpsv2.1", "--hps_model", "hpsv2.1").metrics == ["hpsv2", "hpsv2.1"]


def test_hps_model_hpsv21_takes_over_hpsv2_settings_from_yaml(run, write_yaml):
    path = write_yaml({"metric_specs": {"hpsv2": {"batch_size": 3}}, "hps_model": "hpsv2.1"})
    config = run("--config", str(path))
    assert "hpsv2" not in config.metric_specs
    assert config.metric_specs["hpsv2.1"].batch_size == 3


def test_imagereward_ckpt(run, tmp_path):
    config = run("--imagereward_ckpt", str(tmp_path / "ir.pt"))
    assert config.metric_specs["imagereward"].options == {"checkpoint": str(tmp_path / "ir.pt")}
    with pytest.raises(ConfigError, match="--imagereward_ckpt given but imagereward is not among --metrics"):
        run("--metrics", "clipscore", "--imagereward_ckpt", str(tmp_path / "ir.pt"))


# ----- per-metric settings ------------------------------------------------------------------------
def test_batch_size_for_a_disabled_metric(run):
    with pytest.raises(ConfigError) as info:
        run("--metrics", "clipscore", "--batch-size", "pickscore=4")
    assert "--batch-size given for 'pickscore', which is not enabled. Enabled: clipscore." in str(info.value)


@pytest.mark.parametrize("flag", ["--num-gpus", "--replicas"])
def test_other_per_metric_flags_for_a_disabled_metric(run, flag):
    with pytest.raises(ConfigError, match=f"{flag} given for 'pickscore', which is not enabled"):
        run("--metrics", "clipscore", flag, "pickscore=1")


def test_resource_for_a_disabled_metric(run):
    with pytest.raises(ConfigError, match="Settings given for metric 'pickscore', which is not enabled"):
        run("--metrics", "clipscore", "--resource", "pickscore=vqa_gpu:1")


def test_per_metric_flags_are_applied(run):
    config = run(
        "--batch-size", "clipscore=4", "--num-gpus", "vqascore=2", "--replicas", "clip-flant5-xxl=3",
        "--resource", "vqascore=vqa_gpu", "--resource", "clipscore=small:0.5",
    )  # fmt: skip
    assert config.metric_specs["clipscore"] == MetricSpec(batch_size=4, resources={"small": 0.5})
    vqa = config.metric_specs["vqascore"]
    assert (vqa.num_gpus, vqa.replicas, vqa.resources) == (2.0, 3, {"vqa_gpu": 1.0})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "clipscore=0"], "Batch size of clipscore must be >= 1, got 0."),
        (["--num-gpus", "clipscore=-0.5"], "GPU share of clipscore must be >= 0, got -0.5."),
        (["--num-gpus", "vqascore=1.5"], "GPU share of vqascore above 1 must be a whole number, got 1.5."),
        (["--replicas", "itmscore=0"], "Replicas of itmscore must be >= 1, got 0."),
    ],
)
def test_bad_per_metric_values(run, argv, message):
    with pytest.raises(ConfigError) as info:
        run(*argv)
    assert str(info.value) == message


@pytest.mark.parametrize("argv", [["--batch-size", "clipscore"], ["--batch-size", "clipscore=four"], ["--resource", "=x"]])
def test_malformed_per_metric_flags_are_usage_errors(run, argv, capsys):
    with pytest.raises(SystemExit) as info:
        run(*argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "expected METRIC=" in err or "bad value in 'clipscore=four'" in err


def test_per_metric_flag_for_an_unknown_metric(run):
    with pytest.raises(UnknownNameError, match="Did you mean 'clipscore'"):
        run("--batch-size", "clipscor=4")


# ----- scalar settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "gpu", "mps"])
def test_bad_device(run, device):
    with pytest.raises(ConfigError) as info:
        run("--device", device)
    assert str(info.value) == f"--device must be auto, cpu or cuda, got {device!r}."


@pytest.mark.parametrize(("device", "expected"), [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda"), ("auto", "auto")])
def test_good_devices(run, device, expected):
    assert run("--device", device).device == expected


def test_bad_dtype(run, write_yaml):
    with pytest.raises(SystemExit):  # argparse choices on the command line
        run("--dtype", "float64")
    with pytest.raises(ConfigError, match="--dtype must be float32, bfloat16 or float16, got 'float64'"):
        run("--config", str(write_yaml({"dtype": "float64"})))


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_bad_limit(run, limit):
    with pytest.raises(ConfigError) as info:
        run("--limit", limit)
    assert str(info.value) == f"--limit must be >= 1, got {limit}."


def test_bad_decode_batch_size(run, write_yaml):
    with pytest.raises(ConfigError, match="decode_batch_size must be >= 1, got 0"):
        run("--config", str(write_yaml({"decode_batch_size": 0})))


# ----- folders, weights root, prompt file ---------------------------------------------------------
def test_no_folder(dirs):
    with pytest.raises(ConfigError, match="No input folders given"):
        config_from_args(build_parser().parse_args(["eval", "--weights-root", str(dirs[1])]))


def test_missing_folder(run, tmp_path):
    missing = tmp_path / "no_such_variant"
    with pytest.raises(ConfigError) as info:
        run(extra_folders=(str(missing),))  # a second folder that does not exist
    assert str(info.value) == f"Input folder {str(missing)!r} does not exist or is not a directory."


def test_folder_that_is_a_file(run, tmp_path):
    not_a_dir = tmp_path / "scores.csv"
    not_a_dir.write_text("x")
    with pytest.raises(ConfigError, match="does not exist or is not a directory"):
        run(extra_folders=(str(not_a_dir),))


def test_weights_root_required(dirs):
    with pytest.raises(ConfigError, match="--weights-root is required"):
        config_from_args(build_parser().parse_args(["eval", str(dirs[0])]))


def test_missing_weights_root(dirs, tmp_path):
    missing = tmp_path / "no_weights"
    with pytest.raises(ConfigError) as info:
        config_from_args(build_parser().parse_args(["eval", str(dirs[0]), "--weights-root", str(missing)]))
    assert str(info.value) == f"--weights-root {str(missing)!r} does not exist or is not a directory."


def test_missing_prompt_json(run, tmp_path):
    with pytest.raises(ConfigError, match="--prompt-json .*prompt.json' does not exist"):
        run("--prompt-json", str(tmp_path / "prompt.json"))


def test_legacy_snake_case_flags(dirs, tmp_path):
    folder, weights = dirs
    prompts = tmp_path / "prompt.json"
    prompts.write_text('{"prompts": ["a cat"]}')
    argv = ["eval", str(folder), "--weights_root", str(weights), "--prompt_json", str(prompts),
            "--cache_dir", str(tmp_path / "cache")]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv))
    assert config.weights_root == str(weights)
    assert config.prompt_json == str(prompts)
    assert config.cache_dir == str(tmp_path / "cache")


# ----- YAML config --------------------------------------------------------------------------------
def test_yaml_precedence_cli_over_yaml_over_defaults(run, write_yaml, dirs, tmp_path):
    other = tmp_path / "variant_b"
    other.mkdir()
    path = write_yaml(
        {
            "folders": [str(other)],
            "metrics": ["clipscore", "pickscore"],
            "limit": 5,
            "device": "cpu",
            "strict": True,
            "metric_specs": {"clipscore": {"batch_size": 2}, "pickscore": {"replicas": 2}},
        }
    )
    config = run("--config", str(path), "--limit", "7", "--batch-size", "clipscore=9")
    assert config.folders == [str(dirs[0])]  # CLI folders win
    assert config.limit == 7  # CLI
    assert config.device == "cpu" and config.strict is True  # YAML
    assert config.metrics == ["clipscore", "pickscore"]  # YAML
    assert config.metric_specs["clipscore"].batch_size == 9  # CLI over YAML
    assert config.metric_specs["pickscore"].replicas == 2  # YAML
    assert config.decode_batch_size == 16 and config.dtype is None  # defaults


def test_yaml_alone_can_hold_folders_and_weights_root(write_yaml, dirs):
    folder, weights = dirs
    path = write_yaml({"folders": [str(folder)], "weights_root": str(weights), "hps_model": "hpsv2.1"})
    config = config_from_args(build_parser().parse_args(["eval", "--config", str(path)]))
    assert config.folders == [str(folder)] and config.weights_root == str(weights)
    assert config.metrics[0] == "hpsv2.1"


def test_cli_legacy_flag_overrides_yaml_legacy_key(run, write_yaml):
    config = run("--config", str(write_yaml({"vqa_model": "blip2-flan-t5-xxl"})), "--vqa_model", "clip-flant5-xl")
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


def test_yaml_unknown_key(run, write_yaml):
    with pytest.raises(ConfigError) as info:
        run("--config", str(write_yaml({"batch_size": 4, "metrics": ["clipscore"]})))
    message = str(info.value)
    assert "Unknown key(s) ['batch_size']" in message
    assert "Valid: " in message and "metric_specs" in message and "weights_root" in message


@pytest.mark.parametrize("text", ["- clipscore\n- pickscore\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(run, write_yaml, text):
    with pytest.raises(ConfigError, match="must hold a mapping of settings"):
        run("--config", str(write_yaml(text)))


def test_yaml_syntax_error(run, write_yaml):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        run("--config", str(write_yaml("metrics: [clipscore\n")))


def test_yaml_missing_file(run, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run("--config", str(tmp_path / "nope.yaml"))


def test_empty_yaml_means_defaults(run, write_yaml):
    assert run("--config", str(write_yaml(""))).metrics == DEFAULT_METRICS


def test_yaml_metric_specs_unknown_key(run, write_yaml):
    path = write_yaml({"metric_specs": {"clipscore": {"batch_size": 4, "batchsize": 8}}})
    with pytest.raises(ConfigError) as info:
        run("--config", str(path))
    message = str(info.value)
    assert "Unknown key(s) ['batchsize'] in metric_specs.clipscore" in message
    assert "Valid: batch_size, dtype, num_gpus, options, replicas, resources" in message


def test_yaml_metric_specs_not_a_mapping(run, write_yaml):
    with pytest.raises(ConfigError, match="metric_specs.clipscore must be a mapping, got int"):
        run("--config", str(write_yaml({"metric_specs": {"clipscore": 4}})))
    with pytest.raises(ConfigError, match="metric_specs in .* must be a mapping"):
        run("--config", str(write_yaml({"metric_specs": ["clipscore"]})))


def test_yaml_metric_specs_unknown_metric(run, write_yaml):
    with pytest.raises(UnknownNameError, match="Did you mean 'pickscore'"):
        run("--config", str(write_yaml({"metric_specs": {"pickscor": {"batch_size": 4}}})))


def test_yaml_metric_specs_alias_carries_its_option(run, write_yaml):
    path = write_yaml({"metric_specs": {"clip-flant5-xl": {"batch_size": 2, "resources": {"vqa_gpu": 1}}}})
    spec = run("--config", str(path)).metric_specs["vqascore"]
    assert (spec.batch_size, spec.resources, spec.options) == (2, {"vqa_gpu": 1}, {"model": "clip-flant5-xl"})


def test_yaml_metric_specs_for_a_disabled_metric(run, write_yaml):
    path = write_yaml({"metrics": ["clipscore"], "metric_specs": {"pickscore": {"batch_size": 4}}})
    with pytest.raises(ConfigError, match="Settings given for metric 'pickscore', which is not enabled. Enabled: clipscore"):
        run("--config", str(path))


def test_yaml_single_name_is_a_one_item_list(write_yaml, dirs):
    folder, weights = dirs
    path = write_yaml({"folders": str(folder), "metrics": "clipscore", "weights_root": str(weights)})
    config = config_from_args(build_parser().parse_args(["eval", "--config", str(path)]))
    assert config.folders == [str(folder)] and config.metrics == ["clipscore"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limit": "5"}, "limit in .* must be an integer, got '5'"),
        ({"limit": True}, "limit in .* must be an integer, got True"),
        ({"strict": "yes"}, "strict in .* must be true or false, got 'yes'"),
        ({"device": 0}, "device in .* must be a string, got 0"),
        ({"metrics": ["clipscore", 3]}, "metrics in .* must be a list of metric names"),
        ({"metric_specs": {"clipscore": {"batch_size": "4"}}}, "batch_size in metric_specs.clipscore must be an integer"),
        ({"metric_specs": {"clipscore": {"resources": "gpu"}}}, "resources in metric_specs.clipscore must be a mapping"),
    ],
)
def test_yaml_values_of_the_wrong_type(run, write_yaml, data, message):
    with pytest.raises(ConfigError, match=message):
        run("--config", str(write_yaml(data)))


def test_yaml_null_is_accepted_where_the_default_is_none(run, write_yaml):
    config = run("--config", str(write_yaml({"limit": None, "dtype": None, "metric_specs": {"clipscore": {"batch_size": None}}})))
    assert config.limit is None and config.metric_specs["clipscore"].batch_size is None


# ----- the command's exit path --------------------------------------------------------------------
def test_eval_config_error_exits_2_before_scoring(dirs, capsys, monkeypatch):
    import janus_ray.pipeline
    from janus_ray.cli import main

    def must_not_run(config, **kwargs):
        raise AssertionError("evaluate() reached with an invalid config")

    monkeypatch.setattr(janus_ray.pipeline, "evaluate", must_not_run)
    code = main(["eval", str(dirs[0]), "--weights-root", str(dirs[1]), "--device", "tpu"])
    assert code == 2
    assert "janus-ray: error: --device must be auto, cpu or cuda" in capsys.readouterr().err


# ----- the Python API resolves names like the command line (issue 8) ---------------------------------
def test_python_api_resolves_aliases_in_validate(dirs):
    folder, weights = dirs
    config = RunConfig(folders=[str(folder)], weights_root=str(weights), metrics=["clip-flant5-xl", "pickscore-v1"])
    config.validate()
    assert config.metrics == ["vqascore", "pickscore"]
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}
    config.validate()  # idempotent
    assert config.metrics == ["vqascore", "pickscore"]


def test_python_api_legacy_fields_resolve_in_validate(dirs):
    folder, weights = dirs
    config = RunConfig(folders=[str(folder)], weights_root=str(weights), metrics=["clipscore"],
                       vqa_model="clip-flant5-xl", hps_model="hpsv2.1")
    config.validate()
    assert config.metrics == ["clipscore", "vqascore", "hpsv2.1"]
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


def test_python_api_metric_specs_under_an_alias_carry_its_option(dirs):
    folder, weights = dirs
    config = RunConfig(folders=[str(folder)], weights_root=str(weights), metrics=["clip-flant5-xl"],
                       metric_specs={"clip-flant5-xl": MetricSpec(batch_size=4)})
    config.validate()
    assert config.metric_specs["vqascore"].batch_size == 4
    assert config.metric_specs["vqascore"].options == {"model": "clip-flant5-xl"}


def test_pool_start_timeout_must_be_positive(run):
    with pytest.raises(ConfigError, match="pool_start_timeout_s must be > 0 seconds, got 0.0."):
        run("--pool-start-timeout", "0")


# ----- pixel store switch -------------------------------------------------------------------------
def test_pixel_store_is_on_by_default_and_off_by_flag_or_yaml(run, write_yaml):
    assert run().pixel_store is True
    assert run("--no-pixel-store").pixel_store is False
    assert run("--config", str(write_yaml({"pixel_store": False}))).pixel_store is False


def test_pixel_store_must_be_a_bool(dirs, write_yaml, run):
    folder, weights = dirs
    with pytest.raises(ConfigError, match=r"pixel_store must be true or false, got 'no'"):
        RunConfig(folders=[str(folder)], weights_root=str(weights), pixel_store="no").validate()
    with pytest.raises(ConfigError, match="pixel_store"):  # the YAML type check names the key first
        run("--config", str(write_yaml({"pixel_store": "no"})))


@pytest.mark.parametrize("flag", ["--output-dir", "--cache-dir"])
def test_an_output_or_cache_dir_that_is_a_file_is_refused_before_the_run(run, tmp_path, flag):
    """A new user's trial: an existing file there gave 336 lines of Ray tracebacks (NotADirectoryError)."""
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{flag} '.*afile' is a file, not a directory"):
        run(flag, str(afile))


def test_a_folder_given_twice_with_an_output_dir_says_so(dirs, tmp_path):
    """A new user's trial: `in/C in/C/ --output-dir out` said "Input folders share a name"."""
    from janus_ray.pipeline import output_dirs

    folder, weights = dirs
    config = RunConfig(folders=[str(folder), str(folder) + "/"], weights_root=str(weights), output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"Input folder .*variant_a/ is given twice \(same as .*variant_a\)"):
        output_dirs(config)


@pytest.mark.parametrize("flag", ["--output-dir", "--cache-dir"])
def test_an_output_or_cache_dir_that_cannot_be_created_is_refused_before_ray(dirs, tmp_path, flag):
    """A second new user's trial: `--output-dir afile/sub` or `/proc/x` gave hundreds of lines of the
    actors' NotADirectoryError tracebacks and no janus-ray error line."""
    from janus_ray.pipeline import check_inputs
    from tests.conftest import PARITY_DIR

    folder, _ = dirs
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    key = "output_dir" if flag == "--output-dir" else "cache_dir"
    config = RunConfig(folders=[str(folder)], weights_root=str(PARITY_DIR / "weights"), metrics=["clipscore"],
                       **{key: str(tmp_path / "afile" / "sub")})
    with pytest.raises(ConfigError, match=rf"Cannot create {flag} directory .*afile/sub: Not a directory"):
        check_inputs(config)
    config = RunConfig(folders=[str(folder)], weights_root=str(PARITY_DIR / "weights"), metrics=["clipscore"],
                       **{key: str(tmp_path / "new" / "dir")})
    check_inputs(config)
    assert (tmp_path / "new" / "dir").is_dir()


def _unwritable(directory) -> bool:
    """Make ``directory`` refuse new files (chattr +i as root, else chmod 500); False if impossible here."""
    import subprocess

    if os.geteuid() == 0:
        return subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
    directory.chmod(0o500)
    return True


def _writable(directory) -> None:
    import subprocess

    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
    directory.chmod(0o700)


@pytest.mark.parametrize("which", ["folder", "parent"])
def test_results_that_could_not_be_written_into_the_input_folders_are_refused_before_ray(tmp_path, which):
    """A new user's trial: an input folder (or the common parent, where the summary goes) that cannot
    take files crashed the run with a PermissionError after every image was scored."""
    from janus_ray.pipeline import check_inputs
    from tests.conftest import PARITY_DIR

    parent = tmp_path / "inputs"
    folders = [parent / "a", parent / "b"]
    for folder in folders:
        folder.mkdir(parents=True)
    target = folders[1] if which == "folder" else parent
    config = RunConfig(folders=[str(f) for f in folders], weights_root=str(PARITY_DIR / "weights"),
                       metrics=["clipscore"], cache_dir=str(tmp_path / "cache"))
    check_inputs(config)  # writable: no complaint
    if not _unwritable(target):
        pytest.skip("cannot make a directory unwritable here")
    try:
        with pytest.raises(ConfigError, match=rf"Cannot write the results into {target}: .*Give --output-dir DIR"):
            check_inputs(config)
        if which == "folder":  # refused before the resume cache's directory is made (a second trial: it stayed)
            (tmp_path / "cache").rmdir()
            config.cache_dir = None
            with pytest.raises(ConfigError):
                check_inputs(config)
            assert not (parent / ".janus_ray_cache").exists()
        config.output_dir = str(tmp_path / "out")  # elsewhere: fine
        check_inputs(config)
    finally:
        _writable(target)


def test_an_existing_result_folder_under_the_output_dir_that_cannot_be_written_is_refused_before_ray(tmp_path):
    """A second new user's trial: `--output-dir out` with out/A immutable failed after scoring."""
    from janus_ray.pipeline import check_inputs
    from tests.conftest import PARITY_DIR

    folder = tmp_path / "inputs" / "A"
    folder.mkdir(parents=True)
    result = tmp_path / "out" / "A"
    result.mkdir(parents=True)
    config = RunConfig(folders=[str(folder)], weights_root=str(PARITY_DIR / "weights"), metrics=["clipscore"],
                       output_dir=str(tmp_path / "out"))
    check_inputs(config)
    if not _unwritable(result):
        pytest.skip("cannot make a directory unwritable here")
    try:
        with pytest.raises(ConfigError, match=rf"Cannot write the results into {result}: .*Give another --output-dir"):
            check_inputs(config)
    finally:
        _writable(result)


def test_metrics_on_the_command_line_narrow_a_yaml_config_with_settings_for_others(write_yaml, run):
    """A new user's trial: `--config example.yaml --metrics pickscore` failed with "Settings given for
    metric 'vqascore', which is not enabled" (the flag wins; the YAML's settings of metrics it drops go)."""
    path = write_yaml({"metrics": ["vqascore", "pickscore"],
                       "metric_specs": {"vqascore": {"batch_size": 16}, "pickscore": {"batch_size": 32}}})
    config = run("--config", str(path), "--metrics", "pickscore")
    assert config.metrics == ["pickscore"] and list(config.metric_specs) == ["pickscore"]
    assert config.metric_specs["pickscore"].batch_size == 32
    with pytest.raises(ConfigError, match="Settings given for metric 'vqascore', which is not enabled"):
        run("--config", str(write_yaml({"metrics": ["pickscore"], "metric_specs": {"vqascore": {"batch_size": 16}}})))
