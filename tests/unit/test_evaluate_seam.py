"""``evaluate`` through its seam (pipeline.Stages) with no Ray: the planner on a given shape and the
fused stage in this process, the dummy scorer. Covers the orchestration, resume with mixed cached
and fresh rows end to end, that the caller's config keeps its folders, and the result-batch check."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from janus_ray.columns import (
    ResultBatchError,
    check_result_batch,
    output_column,
    result_columns,
    time_column,
)
from janus_ray.config import RunConfig
from janus_ray.pipeline import Stages, evaluate
from janus_ray.plan import ClusterShape, plan_run
from janus_ray.stream import stream_in_process
from tests.integration.conftest import WEIGHTS_ROOT, build_inputs


def plan_without_ray(config, stream):
    return plan_run(config, ClusterShape.uniform(0, 0.0, 2.0), use_weight_files=False, measured=False), False


NO_RAY = Stages(stream_scores=stream_in_process, plan=plan_without_ray)


def config_for(inputs, **overrides) -> RunConfig:
    return RunConfig(folders=[str(f) for f in inputs["folders"][-2:]], weights_root=str(WEIGHTS_ROOT),
                     prompt_json=str(inputs["prompt_json"]), metrics=["dummy"], **overrides)


def test_evaluate_without_ray_scores_every_row_and_keeps_the_callers_folders(tmp_path, monkeypatch):
    inputs = build_inputs(tmp_path)
    monkeypatch.chdir(inputs["root"])
    config = config_for(inputs)
    config.folders = [f.name for f in inputs["folders"][-2:]]  # relative: evaluate works on a resolved copy
    result = evaluate(config, io.StringIO(), stages=NO_RAY)
    assert config.folders == [f.name for f in inputs["folders"][-2:]]
    scores = result.table["DummyScore"]
    assert result.n_rows == len(result.table) > 0
    assert scores.notna().sum() == result.n_rows - result.n_failed
    assert ((scores.dropna() >= 0) & (scores.dropna() < 1)).all()
    for folder in inputs["folders"][-2:]:
        assert (folder / "janus_eval_scores.csv").is_file()


def test_resume_mixes_cached_and_fresh_rows_to_the_same_scores(tmp_path):
    inputs = build_inputs(tmp_path)
    first = evaluate(config_for(inputs, limit=2), io.StringIO(), stages=NO_RAY)  # part of the rows
    batches = []

    def counting(rows, plans, config, on_batch, **kw):
        batches.append(len(rows))
        stream_in_process(rows, plans, config, on_batch, **kw)

    second = evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    fresh = evaluate(config_for(inputs, resume=False, cache_dir=str(tmp_path / "other")), io.StringIO(), stages=NO_RAY)
    assert 0 < first.n_rows - first.n_failed == second.n_cached  # the first run's scores were reused
    with_prompt = int(second.table["prompt"].fillna("").astype(str).str.len().gt(0).sum())
    assert 0 < sum(batches) == with_prompt - second.n_cached  # only the rest was streamed (no prompt: no row)
    column = "DummyScore"
    key = ["folder", "image_path"]
    a = second.table.sort_values(key)[column].to_numpy()
    b = fresh.table.sort_values(key)[column].to_numpy()
    np.testing.assert_array_equal(a, b)  # cached + fresh == all fresh, exactly (the dummy is a hash)


def test_a_result_batch_without_a_column_is_refused_by_name():
    plan = SimpleNamespace(metric="clipscore", columns={"clipscore": "CLIPScore"})
    good = pd.DataFrame({c: [0.0] for c in result_columns([plan])})
    check_result_batch(good, [plan])
    check_result_batch({c: np.zeros(1) for c in result_columns([plan])}, [plan])  # a numpy batch too
    with pytest.raises(ResultBatchError, match=r"lacks column\(s\) _jr_sec_clipscore \(clipscore\)"):
        check_result_batch(good.drop(columns=[time_column("clipscore")]), [plan])
    with pytest.raises(ResultBatchError, match=r"lacks column\(s\) row_id"):
        check_result_batch(good.drop(columns=["row_id"]), [plan])


def test_evaluate_refuses_a_stream_that_drops_a_score_column(tmp_path):
    inputs = build_inputs(tmp_path)

    def lossy(rows, plans, config, on_batch, **kw):
        stream_in_process(rows, plans, config, lambda b: on_batch(b.drop(columns=[output_column("dummy")])), **kw)

    with pytest.raises(ResultBatchError, match=r"_jr_out_dummy \(dummy\)"):
        evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=lossy, plan=plan_without_ray))


def test_swapped_actor_classes_run_instead_of_the_real_ones(tmp_path):
    """``Stages.actors`` reaches the stream: the fused stage given is built, with the decode and
    metric classes it names, and every streamed row passes through them (no module global patched)."""
    from janus_ray.actors.decode_stage import DecodeStage
    from janus_ray.actors.metric_actor import MetricActor
    from janus_ray.stream import ActorClasses

    seen = {"decode": 0, "metric": 0}

    class CountingDecode(DecodeStage):
        def __call__(self, batch):
            seen["decode"] += len(batch["row_id"])
            return super().__call__(batch)

    class CountingMetric(MetricActor):
        def __call__(self, batch):
            seen["metric"] += len(batch["row_id"])
            return super().__call__(batch)

    inputs = build_inputs(tmp_path)
    stages = Stages(stream_scores=stream_in_process, plan=plan_without_ray,
                    actors=ActorClasses(decode=CountingDecode, metric=CountingMetric))  # the fused stage builds from them
    result = evaluate(config_for(inputs), io.StringIO(), stages=stages)
    with_prompt = int(result.table["prompt"].fillna("").astype(str).str.len().gt(0).sum())
    assert seen == {"decode": with_prompt, "metric": with_prompt} and with_prompt > 0
    assert result.table["DummyScore"].notna().sum() == result.n_rows - result.n_failed


def test_the_crash_journal_and_an_emptied_inflight_folder_are_removed_after_the_run(tmp_path):
    """The stages journal under <cache>/inflight/<run>/; after the run neither is left (a Ctrl-C
    used to leave an empty inflight/ behind), but another run's journal there is kept."""
    inputs = build_inputs(tmp_path)
    seen = []

    def journaling(rows, plans, config, on_batch, *, journal_dir, **kw):
        from pathlib import Path

        Path(journal_dir).mkdir(parents=True)
        (Path(journal_dir) / "decode-0").write_text("1,2")
        seen.append(Path(journal_dir))
        stream_in_process(rows, plans, config, on_batch, journal_dir=journal_dir, **kw)

    stages = Stages(stream_scores=journaling, plan=plan_without_ray)
    evaluate(config_for(inputs, cache_dir=str(tmp_path / "cache")), io.StringIO(), stages=stages)
    assert seen and not seen[0].exists() and not seen[0].parent.exists()
    other = tmp_path / "cache" / "inflight" / "another-run"
    other.mkdir(parents=True)
    evaluate(config_for(inputs, cache_dir=str(tmp_path / "cache"), resume=False), io.StringIO(), stages=stages)
    assert other.is_dir() and not seen[1].exists()


def test_eval_prints_the_plan_once_and_each_metrics_device_and_dtype(tmp_path):
    inputs = build_inputs(tmp_path)
    err = io.StringIO()
    evaluate(config_for(inputs), err, stages=NO_RAY)
    text = err.getvalue()
    assert text.count("plan: cpu-fused layout") == 1  # the planner's table
    assert "replica(s) x" not in text  # no second listing of the same replicas and batches
    assert "[janus-ray] device, dtype: dummy cpu float32" in text


@pytest.mark.parametrize("batches_before_ctrl_c", [0, 1])
def test_ctrl_c_while_scoring_says_how_many_rows_reached_the_resume_cache(tmp_path, batches_before_ctrl_c):
    from janus_ray.cli import interrupted_message
    from janus_ray.errors import Interrupted

    inputs = build_inputs(tmp_path)
    sent = []

    total = []

    def ctrl_c_after(rows, plans, config, on_batch, **kw):
        total.append(len(rows))

        def first_batch(frame, plans, config, on_batch):
            sent.append(len(frame))
            on_batch(frame)
        if batches_before_ctrl_c:
            stream_in_process(rows.iloc[:3], plans, config, lambda b: first_batch(b, plans, config, on_batch))
        raise KeyboardInterrupt

    config = config_for(inputs)
    with pytest.raises(Interrupted) as caught:
        evaluate(config, io.StringIO(), stages=Stages(stream_scores=ctrl_c_after, plan=plan_without_ray))
    assert caught.value.rows_received == sum(sent)
    message = interrupted_message(caught.value, config)
    assert caught.value.cache_dir in message
    if batches_before_ctrl_c:
        assert f"the {sum(sent)} row(s) scored so far are in the resume cache" in message
        streamed = []

        def counting(rows, plans, config, on_batch, **kw):
            streamed.append(len(rows))
            stream_in_process(rows, plans, config, on_batch)

        rerun = evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
        # only what the interrupted run did not cache (a row that failed is not cached: it runs again)
        assert total[0] - sum(sent) <= sum(streamed) < total[0] and rerun.n_rows >= total[0]
    else:
        assert "interrupted before any score arrived; nothing new in the resume cache" in message


def test_an_image_whose_bytes_cannot_be_decoded_is_cached_as_failed_and_not_streamed_again(tmp_path):
    inputs = build_inputs(tmp_path)  # one corrupt JPEG among the folders
    config = RunConfig(folders=[str(f) for f in inputs["folders"]], weights_root=str(WEIGHTS_ROOT),
                       prompt_json=str(inputs["prompt_json"]), metrics=["dummy"])
    first = evaluate(config, io.StringIO(), stages=NO_RAY)
    corrupt = first.table["abs_path"].astype(str) == str(inputs["corrupt"].resolve())
    assert corrupt.sum() == 1 and first.table.loc[corrupt, "error"].iloc[0].startswith("unreadable image: ")
    streamed = []

    def counting(rows, plans, config, on_batch, **kw):
        streamed.append(len(rows))
        stream_in_process(rows, plans, config, on_batch)

    again = evaluate(config, io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    assert sum(streamed) == 0  # nothing left: the corrupt image's failure came from the cache
    assert again.table.loc[corrupt, "error"].iloc[0] == first.table.loc[corrupt, "error"].iloc[0]
    assert again.n_failed == first.n_failed
    # a new file at that path (other bytes, another sha256) is scored again
    from tests.integration.conftest import synthetic_image
    synthetic_image(seed=4242).save(inputs["corrupt"], format="JPEG")
    streamed.clear()
    fixed = evaluate(config, io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    assert sum(streamed) == 1 and not isinstance(fixed.table.loc[corrupt, "error"].iloc[0], str)


def test_a_cached_decode_failure_is_retried_under_another_pillow(tmp_path, monkeypatch):
    """A newer Pillow may read what an older one could not: a failure cached by another Pillow
    version is tried again; the scores cached beside it are kept."""
    import PIL

    inputs = build_inputs(tmp_path)  # one corrupt JPEG among the folders
    config = RunConfig(folders=[str(f) for f in inputs["folders"]], weights_root=str(WEIGHTS_ROOT),
                       prompt_json=str(inputs["prompt_json"]), metrics=["dummy"])
    first = evaluate(config, io.StringIO(), stages=NO_RAY)
    streamed = []

    def counting(rows, plans, config, on_batch, **kw):
        streamed.append(list(rows["image_path"]))
        stream_in_process(rows, plans, config, on_batch)

    monkeypatch.setattr(PIL, "__version__", PIL.__version__ + ".post-upgrade")
    again = evaluate(config, io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    assert [str(p) for batch in streamed for p in batch] == [str(inputs["corrupt"].resolve())]  # only it
    assert again.n_failed == first.n_failed  # still unreadable, now cached under this "Pillow"
    streamed.clear()
    evaluate(config, io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    assert streamed == []


def test_only_failures_of_the_image_bytes_are_cacheable():
    from janus_ray.table import cacheable_decode_errors

    errors = np.array(["unreadable image: UnidentifiedImageError: cannot identify image file '/x.jpg'",
                       "unreadable image: OSError: image file is truncated (3 bytes not processed)",
                       "unreadable image: FileNotFoundError: [Errno 2] No such file or directory: '/x.jpg'",
                       "unreadable image: PermissionError: [Errno 13] Permission denied: '/x.jpg'",
                       "unreadable image: OSError: [Errno 5] Input/output error",
                       "image too large (DecompressionBombError): 1e9 pixels",
                       "decoding: killed the actor twice", "", None], dtype=object)
    assert cacheable_decode_errors(errors).tolist() == [True, True, False, False, False, False, False, False, False]


def test_the_rerun_says_how_many_known_failures_the_cache_holds(tmp_path):
    inputs = build_inputs(tmp_path)
    config = RunConfig(folders=[str(f) for f in inputs["folders"]], weights_root=str(WEIGHTS_ROOT),
                       prompt_json=str(inputs["prompt_json"]), metrics=["dummy"])
    evaluate(config, io.StringIO(), stages=NO_RAY)
    err = io.StringIO()
    again = evaluate(config, err, stages=NO_RAY)
    assert f"resume cache hits: {again.n_cached}, plus 1 known failure(s) of unreadable image bytes" in err.getvalue()


def test_a_journal_left_by_a_dead_run_on_this_host_is_swept_and_others_are_kept(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from janus_ray.pipeline import sweep_dead_journals

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    host = socket.gethostname()
    inflight = tmp_path / "inflight"
    dead = inflight / f"20261130-101010-{host}-{gone.pid}-1"
    alive = inflight / f"20261130-101010-{host}-{os.getppid()}-1"
    other_host = inflight / f"20261130-101010-x-{host}-{gone.pid}-1"  # host 'x-<ours>': not this one
    unrelated = inflight / "another-run"
    for path in (dead, alive, other_host, unrelated):
        (path / "metric-dummy").mkdir(parents=True)
    assert sweep_dead_journals(inflight) == [dead]
    assert not dead.exists() and alive.is_dir() and other_host.is_dir() and unrelated.is_dir()


def test_a_cached_failure_names_the_rows_own_file_not_the_first_one_seen(tmp_path):
    import shutil

    inputs = build_inputs(tmp_path)
    first = inputs["folders"][1]  # holds the corrupt JPEG
    inputs["corrupt"].write_bytes(b"plain text, no image")  # Pillow: "cannot identify image file '<path>'"
    copy = first.parent / (first.name + "_copy")
    shutil.copytree(first, copy)
    common = dict(weights_root=str(WEIGHTS_ROOT), prompt_json=str(inputs["prompt_json"]), metrics=["dummy"],
                  cache_dir=str(tmp_path / "cache"))
    evaluate(RunConfig(folders=[str(first)], **common), io.StringIO(), stages=NO_RAY)
    again = evaluate(RunConfig(folders=[str(copy)], **common), io.StringIO(), stages=NO_RAY)
    corrupt = copy / inputs["corrupt"].relative_to(first)
    row = again.table[again.table["abs_path"].astype(str) == str(corrupt.resolve())]
    text = row["error"].iloc[0]
    assert text.startswith("unreadable image: ") and str(corrupt.resolve()) in text
    assert str(inputs["corrupt"].resolve()) not in text


def test_a_first_run_does_not_hash_on_the_driver_and_its_cache_keys_are_the_images_sha256(tmp_path, monkeypatch):
    """Nothing to reuse from the cache: the driver does not read the images (the decode stage hashes
    the bytes it decodes), it only stats them. The records carry each image's sha256, so a rerun
    finds every pair."""
    import janus_ray.cache as cache_module
    from janus_ray.cache import ResultCache, file_sha256

    inputs = build_inputs(tmp_path)
    real_sha256 = cache_module.file_sha256

    def no_driver_hashing(path, *args, **kwargs):
        raise AssertionError(f"the driver read {path} on a first run")

    monkeypatch.setattr(cache_module, "file_sha256", no_driver_hashing)
    first = evaluate(config_for(inputs), io.StringIO(), stages=NO_RAY)
    monkeypatch.setattr(cache_module, "file_sha256", real_sha256)
    known = ResultCache(first.output_root / ".janus_ray_cache").load()
    expected = {file_sha256(p) for p in first.table["abs_path"][first.table["error"].isna()]}
    assert set(known["image_sha256"]) == expected and len(expected) > 1
    streamed = []

    def counting(rows, plans, config, on_batch, **kw):
        streamed.append(len(rows))
        stream_in_process(rows, plans, config, on_batch)

    again = evaluate(config_for(inputs), io.StringIO(), stages=Stages(stream_scores=counting, plan=plan_without_ray))
    assert sum(streamed) == 0 and again.n_cached == len(expected)


def _driver_reads(monkeypatch) -> list[str]:
    """Paths the driver's HashJob reads (cache.file_sha256), recorded from now on."""
    import janus_ray.cache as cache_module

    reads: list[str] = []
    real = cache_module.file_sha256

    def recording(path, *args, **kwargs):
        reads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_module, "file_sha256", recording)
    return reads


def _streaming_paths(into: list[str]) -> Stages:
    def recording(rows, plans, config, on_batch, **kw):
        into.extend(rows["image_path"].tolist())
        stream_in_process(rows, plans, config, on_batch)

    return Stages(stream_scores=recording, plan=plan_without_ray)


def test_a_rerun_reads_no_unchanged_image_on_the_driver_and_rereads_a_changed_one(tmp_path, monkeypatch):
    """The resume cache's records remember each file's path, size, mtime and inode as stat'ed
    before it was read: a rerun over unchanged files only stats them (a resumed million-image run
    does not read every byte again on the driver). A file replaced by other bytes, even with its
    size and time kept, is read and scored again."""
    import os
    import shutil

    inputs = build_inputs(tmp_path)
    first = evaluate(config_for(inputs), io.StringIO(), stages=NO_RAY)
    scored = first.table["abs_path"][first.table["error"].isna()].tolist()
    reads, streamed = _driver_reads(monkeypatch), []
    text = io.StringIO()
    again = evaluate(config_for(inputs), text, stages=_streaming_paths(streamed))
    assert reads == [] and streamed == [] and again.n_cached == len(scored)
    assert f"image hashes: 0 image(s) read on the driver, {len(scored)} unchanged" in text.getvalue()

    changed = scored[0]
    stat = os.stat(changed)
    replacement = tmp_path / "replacement.png"
    shutil.copyfile(scored[1], replacement)  # other bytes under a new inode, as rsync writes a file
    os.replace(replacement, changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    evaluate(config_for(inputs), io.StringIO(), stages=_streaming_paths(streamed))
    assert reads == [changed] and streamed == [changed]


def test_a_rerun_after_a_killed_first_run_reads_only_what_it_did_not_score(tmp_path, monkeypatch):
    """The file memo travels in the cache records, so a first run that dies after its first batch
    (the cache flushed, no result file written) spares its rerun the reads of what it scored."""
    from janus_ray.cache import ResultCache
    from janus_ray.errors import Interrupted

    inputs = build_inputs(tmp_path)
    first_batch: list[str] = []

    def dying(rows, plans, config, on_batch, **kw):
        def once(batch):  # the driver dies after half of the first result batch
            half = batch.iloc[: len(batch) // 2]
            first_batch.extend(half["row_id"].tolist())
            on_batch(half)
            raise KeyboardInterrupt

        stream_in_process(rows, plans, config, once)

    with pytest.raises(Interrupted):
        evaluate(config_for(inputs, cache_dir=str(tmp_path / "cache")), io.StringIO(),
                 stages=Stages(stream_scores=dying, plan=plan_without_ray))
    assert 0 < len(ResultCache(tmp_path / "cache").load()) == len(first_batch)
    reads, streamed = _driver_reads(monkeypatch), []
    again = evaluate(config_for(inputs, cache_dir=str(tmp_path / "cache")), io.StringIO(),
                     stages=_streaming_paths(streamed))
    assert again.n_cached == len(first_batch)
    assert sorted(reads) == sorted(streamed) and len(streamed) > 0


def test_a_run_into_an_output_root_of_another_run_says_which_folders_leave_its_summary(tmp_path):
    """New user's trial: `eval A B --output-dir out`, then `eval C --output-dir out` silently
    rewrote run.json and summary.csv with C alone."""
    inputs = build_inputs(tmp_path)
    out = tmp_path / "out"
    first = [str(f) for f in inputs["folders"][:2]]
    common = dict(weights_root=str(WEIGHTS_ROOT), prompt_json=str(inputs["prompt_json"]), metrics=["dummy"],
                  output_dir=str(out))
    evaluate(RunConfig(folders=first, **common), io.StringIO(), stages=NO_RAY)
    again = io.StringIO()
    evaluate(RunConfig(folders=first[:1], **common), again, stages=NO_RAY)
    text = again.getvalue()
    assert "run.json of an earlier run listed 1 result folder(s) this run does not score" in text
    assert Path(first[1]).name in text
    same = io.StringIO()
    evaluate(RunConfig(folders=first[:1], **common), same, stages=NO_RAY)
    assert "earlier run listed" not in same.getvalue()


def test_a_result_folder_that_held_another_input_folders_results_is_named(tmp_path):
    """New user's trial: `eval other/A --output-dir out`, after `eval data/A --output-dir out`, silently
    replaced out/A's files (data/A's results) with other/A's rows."""
    import shutil

    inputs = build_inputs(tmp_path)
    out = tmp_path / "out"
    first = Path(inputs["folders"][0])
    other = tmp_path / "other" / first.name
    shutil.copytree(first, other)
    changed = next(other.rglob("img_00.jpg"))
    Image.new("RGB", (32, 32), (1, 2, 3)).save(changed)  # one row to score: the progress line shows when
    common = dict(weights_root=str(WEIGHTS_ROOT), prompt_json=str(inputs["prompt_json"]), metrics=["dummy"],
                  output_dir=str(out))
    evaluate(RunConfig(folders=[str(first)], **common), io.StringIO(), stages=NO_RAY)
    log = io.StringIO()
    evaluate(RunConfig(folders=[str(other)], **common), log, stages=NO_RAY)
    text = log.getvalue()
    warning = f"warning: {(out / first.name).resolve()} holds the results of {first.resolve()}"
    assert warning in text and f"this run replaces them with those of {other.resolve()}" in text
    # a second trial: said only after the scoring; now before it (ahead of the first result line)
    assert text.index(warning) < text.index(" img/s (actors busy")
    again = io.StringIO()
    evaluate(RunConfig(folders=[str(other)], **common), again, stages=NO_RAY)
    assert "holds the results of" not in again.getvalue()


def test_folders_sharing_a_name_are_told_apart_in_the_summary(tmp_path):
    """A new user's trial: `eval data/modelX/images data/modelY/images` listed two rows named 'images'."""
    import shutil

    inputs = build_inputs(tmp_path)
    folders = [tmp_path / "data" / model / "images" for model in ("modelX", "modelY")]
    for folder in folders:
        shutil.copytree(inputs["folders"][0], folder)
    log = io.StringIO()
    result = evaluate(RunConfig(folders=[str(f) for f in folders], weights_root=str(WEIGHTS_ROOT),
                                prompt_json=str(inputs["prompt_json"]), metrics=["dummy"]), log, stages=NO_RAY)
    summary = (result.output_root / "summary.csv").read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in summary[1:]] == ["modelX/images", "modelY/images"]
    assert "modelX/images" in log.getvalue() and "modelY/images" in log.getvalue()


def test_a_result_file_that_cannot_be_replaced_is_one_error_naming_it_and_the_rerun_writes_it(tmp_path):
    """A new user's trial: an immutable summary.csv in a writable folder passed the check before the run
    and ended it with a PermissionError traceback. Here a folder stands where summary.csv goes (root
    ignores permissions, not that)."""
    from janus_ray.errors import ResultsNotWritten

    inputs = build_inputs(tmp_path)
    config = config_for(inputs, output_dir=str(tmp_path / "out"))
    (tmp_path / "out" / "summary.csv").mkdir(parents=True)
    with pytest.raises(ResultsNotWritten) as raised:
        evaluate(config, io.StringIO(), stages=NO_RAY)
    message = str(raised.value)
    assert message.startswith(f"Cannot write {tmp_path / 'out' / 'summary.csv'}: ")
    assert "resume cache" in message and "the same command writes every result file" in message
    (tmp_path / "out" / "summary.csv").rmdir()
    log = io.StringIO()
    result = evaluate(config_for(inputs, output_dir=str(tmp_path / "out")), log, stages=NO_RAY)
    assert "0 to score" in log.getvalue() and (tmp_path / "out" / "summary.csv").is_file()
    assert result.n_rows > 0
