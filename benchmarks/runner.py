"""``scripts/bench.py``: janus_ray's Ray pipeline vs the earlier tool's one-image-at-a-time loop.

One run, one machine, the same inputs and the same scorers (so the same model math):

1. a synthetic input tree: ``--folders`` N x ``--prompts`` M, 384x384 JPEGs (Janus's output size)
   in the six Janus layouts, and a prompt.json;
2. ``pipeline``: ``janus-ray eval`` in a fresh process (its own embedded Ray: cold start included),
   timed end to end; the steady-state rate is read off the same run (see ``phases``);
3. ``baseline``: for each folder, for each metric, load the model, then score each image alone;
4. ``model_work``: each scorer's forward alone on ready pixel tensors, pipeline batch sizes;
5. a table on stdout and a JSON file (``--out``).

Each phase runs in its own child process; the peak memory of its whole process tree (driver, Ray
processes, actors) is sampled. ``--repeats`` runs each phase that many times, the phases in turn (median reported).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.inputs import make_inputs, make_prompts
from benchmarks.procmem import import_psutil, run_sampled

PHASE_NAMES = ("pipeline", "baseline", "model_work", "loop", "cached_rerun", "ray_floor")
MODES = ("compare", "overhead", "driver", "transport")
MODE_PHASES = {"compare": ["pipeline", "baseline", "model_work"], "overhead": ["pipeline", "loop", "cached_rerun", "ray_floor"]}
SIX_METRICS = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward"]
DEFAULT_METRICS = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward", "hpsv2.1"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python scripts/bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="compare",
                        help="compare: pipeline vs the earlier tool's loop vs model work (default); overhead: the "
                             "pipeline vs a plain CPU-count-process batched loop on one metric, plus a fully cached "
                             "rerun; driver: the driver's own code at --rows rows with a stub scoring stage; "
                             "transport: bytes per image between the stages")
    parser.add_argument("--image-size", type=int, default=384, help="side of the generated images (default 384; "
                                                                     "overhead mode: small images, e.g. 32)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="driver mode: rows (also run at 10,000)")
    parser.add_argument("--models", choices=["tiny", "real-size"], default="tiny",
                        help="tiny: the parity fixtures' tiny models (CPU, CI-size); real-size: every architecture "
                             "at its real size with random weights (GPU box; generated on first use)")
    parser.add_argument("--folders", type=int, default=6, help="variant folders (default 6)")
    parser.add_argument("--prompts", type=int, default=200, help="prompts per folder (default 200)")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS, help="scorer names or aliases (default: all seven)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: each reference's precision on CUDA, float32 on CPU")
    parser.add_argument("--batch-size", nargs="+", default=[], metavar="N|METRIC=N",
                        help="pipeline and model-work batch size: one number for every metric, or METRIC=N "
                             "(default: janus-ray's own per-metric defaults for the device)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each phase (median reported)")
    parser.add_argument("--phases", nargs="+", choices=PHASE_NAMES, default=None,
                        help="default: the mode's phases (compare: pipeline baseline model_work; overhead: pipeline "
                             "loop cached_rerun ray_floor)")
    parser.add_argument("--out", default="bench.json", help="JSON result file (default bench.json)")
    parser.add_argument("--work-dir", help="inputs, outputs and logs (default: a temporary folder, removed afterwards)")
    parser.add_argument("--weights-root", help="tiny: another tiny root; real-size: where the generated root is "
                                                "(re)used (default <work-dir>/weights-real-size)")
    parser.add_argument("--real-size-scale", type=float, default=1.0,
                        help="real-size only: shrink every architecture (tests; 1 = real size)")
    parser.add_argument("--vqa-model", choices=["clip-flant5-xxl", "clip-flant5-xl"], default="clip-flant5-xxl",
                        help="real-size only: which CLIP-FlanT5 VQAScore uses")
    parser.add_argument("--torch-threads", type=int, help="torch threads of the baseline and model-work processes "
                                                           "(default: torch's default)")
    parser.add_argument("--eval-args", default="", help="extra `janus-ray eval` arguments for the pipeline phase, "
                                                         "e.g. \"--cpu-layout per-metric\" (one string)")
    parser.add_argument("--no-ray", action="store_true", help="transport mode: only the in-process chain "
                                                                 "(no run of the real pipeline on a local Ray)")
    parser.add_argument("--seed", type=int, default=0, help="prompts and random weights")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a phase's process is killed")
    return parser


# ----- setup -------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_batch_sizes(items: list[str], names: list[str]) -> dict[str, int]:
    from janus_ray.metrics import resolve_name

    sizes: dict[str, int] = {}
    for item in items:
        if "=" in item:
            name, value = item.split("=", 1)
            scorer = resolve_name(name.strip())[0]
            matches = [n for n in names if resolve_name(n)[0] == scorer]
            if not matches:
                raise SystemExit(f"--batch-size {item}: {name} is not among --metrics")
            sizes[matches[0]] = int(value)
        else:
            sizes.update(dict.fromkeys(names, int(item)))
    return sizes


def metric_plan(args: argparse.Namespace, device: str) -> list[dict[str, Any]]:
    """[{name (as passed to janus-ray eval), scorer, options, batch_size}] for every metric."""
    from janus_ray.config import MetricSpec
    from janus_ray.metrics import resolve_name

    names = []
    for name in args.metrics:
        scorer, _ = resolve_name(name)
        if scorer == "vqascore" and name == "vqascore" and args.models == "real-size":
            name = args.vqa_model  # the alias carries the model option
        names.append(name)
    if args.models == "tiny" and any(resolve_name(n)[1].get("model") == "clip-flant5-xl" for n in names):
        raise SystemExit("the tiny fixtures have no clip-flant5-xl (use --models real-size for --vqa-model clip-flant5-xl)")
    explicit = parse_batch_sizes(args.batch_size, names)
    plan = []
    for name in names:
        scorer, options = resolve_name(name)
        batch = explicit.get(name) or MetricSpec().resolved_batch_size(scorer, device == "cuda")
        plan.append({"name": name, "scorer": scorer, "options": options, "batch_size": batch})
    return plan


def weights_root(args: argparse.Namespace, work: Path, plan: list[dict]) -> tuple[Path, dict | None]:
    if args.models == "tiny":
        from janus_ray.demo import FIXTURE_WEIGHTS

        return Path(args.weights_root or FIXTURE_WEIGHTS).resolve(), None
    from benchmarks.real_size import generate

    root = Path(args.weights_root or work / "weights-real-size").resolve()
    scorers = sorted({m["scorer"] for m in plan})
    description = generate(root, scale=args.real_size_scale, vqa_model=args.vqa_model, metrics=scorers, seed=args.seed,
                           device="cuda" if resolve_device(args.device) == "cuda" else "cpu")
    return root, description


def eval_argv(inputs: dict, root: Path, plan: list[dict], device: str, dtype: str | None, out: Path) -> list[str]:
    argv = ["eval", *map(str, inputs["folders"]), "--weights-root", str(root), "--prompt-json", str(inputs["prompt_json"]),
            "--metrics", *(m["name"] for m in plan), "--device", device, "--no-resume",
            "--output-dir", str(out / "results"), "--cache-dir", str(out / "cache")]
    for m in plan:
        argv += ["--batch-size", f"{m['name']}={m['batch_size']}"]
    if dtype:
        argv += ["--dtype", dtype]
    return argv


# ----- machine and versions ---------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": None,
        "ram_gb": None,
        "gpus": [],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    psutil = import_psutil()
    if psutil is not None:
        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    info["gpu_name"] = info["gpus"][0]["name"] if info["gpus"] else None
    return info


def versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("janus-ray", "torch", "torchvision", "transformers", "ray", "open_clip_torch", "pillow", "numpy",
                 "safetensors", "pandas", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ----- running the phases ------------------------------------------------------------------------
REPO = Path(__file__).resolve().parent.parent


def child_pythonpath() -> str:
    """The checkout first (``benchmarks`` is not an installed package), then the caller's path."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def run_phase(phase: str, repeat: int, spec: dict, work: Path, timeout: float | None) -> dict:
    run_dir = work / "runs" / f"{phase}-{repeat}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    probe_dir = run_dir / "probes"
    probe_dir.mkdir(parents=True)
    spec = {**spec, "phase": phase, "out_dir": str(run_dir / "out"), "result": str(run_dir / "result.json")}
    if phase in ("pipeline", "cached_rerun"):
        # the rerun reads the cache the pipeline run of the same repeat wrote, with resume on
        source = run_dir if phase == "pipeline" else work / "runs" / f"pipeline-{repeat}"
        spec["cli_argv"] = spec["cli_argv_template"] + []
        spec["cli_argv"][spec["cli_argv"].index("--output-dir") + 1] = str(source / "out" / "results")
        spec["cli_argv"][spec["cli_argv"].index("--cache-dir") + 1] = str(source / "out" / "cache")
        if phase == "cached_rerun":
            spec["cli_argv"].remove("--no-resume")
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    env = {**os.environ, "JANUS_RAY_BENCH_PROBE_DIR": str(probe_dir), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": child_pythonpath()}
    log = run_dir / "log.txt"
    print(f"[bench] {phase} (run {repeat + 1}) ... log: {log}", file=sys.stderr, flush=True)
    outcome = run_sampled([sys.executable, "-m", "benchmarks.phases", str(spec_path)], env=env, log_path=log,
                          timeout=timeout)
    if outcome["returncode"] != 0 or not Path(spec["result"]).is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise SystemExit(f"[bench] {phase} failed (exit {outcome['returncode']}); end of {log}:\n{tail}")
    result = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    print(f"[bench] {phase} (run {repeat + 1}): {outcome['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return {"wall_s": outcome["wall_s"], "memory": outcome["memory"], **result}


def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def summarise(runs: dict[str, list[dict]], n_images: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase, phase_runs in runs.items():
        chosen = median_run(phase_runs)
        walls = [r["wall_s"] for r in phase_runs]
        entry = {
            "wall_s": statistics.median(walls),
            "wall_s_runs": walls,
            "images": chosen["images"],
            "images_per_s": chosen["images"] / statistics.median(walls) if phase not in ("model_work", "cached_rerun", "ray_floor") else None,
            "peak_rss_mb": chosen["memory"]["peak_rss_mb"],
            "peak_pss_mb": chosen["memory"]["peak_pss_mb"],
            "peak_processes": chosen["memory"]["peak_processes"],
            "tree_cpu_s": chosen["memory"].get("tree_cpu_s"),
            "cpu_s_by_process": chosen["memory"].get("cpu_s_by_process"),
            # the median run's own figures (an even count of runs: the lower middle one), with its wall
            "detail": {**{k: v for k, v in chosen.items() if k not in ("wall_s", "memory", "per_metric", "images")},
                       "run_wall_s": chosen["wall_s"]},
            "per_metric": chosen["per_metric"],
        }
        if phase == "ray_floor":
            entry["ray_s_runs"] = [r["ray_s"] for r in phase_runs]
            entry["ray_s"] = statistics.median(entry["ray_s_runs"])
        if phase == "model_work":
            totals = [r["total_s"] for r in phase_runs]
            entry["total_s"] = statistics.median(totals)
            entry["total_s_runs"] = totals
            entry["images_per_s"] = chosen["images"] / entry["total_s"] if entry["total_s"] else None
        out[phase] = entry
    return out


# ----- the table ---------------------------------------------------------------------------------
def _f(value: Any, fmt: str = "{:.1f}", none: str = "-") -> str:
    return none if value is None else fmt.format(value)


def format_table(report: dict) -> str:
    s = report["settings"]
    phases = report["phases"]
    lines = [
        f"janus_ray bench: {s['models']} models, {s['folders']} folders x {s['prompts']} prompts = {s['images']} images, "
        f"{len(s['metrics'])} metrics, device {s['device']}"
        f" ({report['machine']['gpu_name'] or str(report['machine']['cpus_usable']) + ' CPUs'}), repeats {s['repeats']}",
        "",
        f"{'phase':<34}{'wall s':>9}{'images/s':>10}{'peak PSS MB':>13}{'peak RSS MB':>13}{'CPU s':>9}",
    ]
    p = phases.get("pipeline")
    if p:
        lines.append(f"{'pipeline, end to end (cold)':<34}{p['wall_s']:>9.1f}{_f(p['images_per_s'], '{:.2f}'):>10}"
                     f"{_f(p['peak_pss_mb'], '{:.0f}'):>13}{_f(p['peak_rss_mb'], '{:.0f}'):>13}{_f(p['tree_cpu_s']):>9}")
        d = p["detail"]
        lines.append(f"{'  layout: ' + str(d.get('layout')) + ', actor processes: ' + str(d.get('actor_processes')):<52}"
                     f"{_f(d.get('actor_processes_cpu_s')):>9}  (their CPU s)")
        lines.append(f"{'  Ray up, ready to stream':<34}{_f(d.get('until_stream_s')):>9}")
        lines.append(f"{'  all models loaded':<34}{_f(d.get('all_models_loaded_s')):>9}")
        lines.append(f"{'  steady state (loaded -> done)':<34}{_f(d.get('steady_s')):>9}"
                     f"{_f(d.get('steady_images_per_s'), '{:.2f}'):>10}")
        lines.append(f"{'  results reach the driver from':<34}{_f(d.get('driver_first_result_s')):>9}")
    b = phases.get("baseline")
    if b:
        lines.append(f"{'baseline (load per folder, bs 1)':<34}{b['wall_s']:>9.1f}{_f(b['images_per_s'], '{:.2f}'):>10}"
                     f"{_f(b['peak_pss_mb'], '{:.0f}'):>13}{_f(b['peak_rss_mb'], '{:.0f}'):>13}{_f(b['tree_cpu_s']):>9}")
    w = phases.get("model_work")
    if w:
        lines.append(f"{'model work (forward only, summed)':<34}{w['total_s']:>9.1f}{_f(w['images_per_s'], '{:.2f}'):>10}"
                     f"{_f(w['peak_pss_mb'], '{:.0f}'):>13}{_f(w['peak_rss_mb'], '{:.0f}'):>13}{_f(w['tree_cpu_s']):>9}")
    lines.append("")
    cuda = s["device"] == "cuda"
    header = (f"{'stage':<14}{'batch':>6} | {'pipeline: img/s':>15}{'busy s':>8}{'cpu s':>8}{'proc cpu':>9}{'load s':>8}{'MB in':>8}"
              f" | {'baseline: img/s':>15}{'load s':>8} | {'model: img/s':>12}")
    if cuda:
        header += f" | {'GPU MB: pipe':>12}{'base':>7}{'model':>7}"
    lines.append(header)
    if p and p["detail"].get("decode"):
        dec = p["detail"]["decode"]
        rate = dec["rows"] / dec["busy_s"] if dec.get("busy_s") else None
        lines.append(f"{'(decode)':<14}{'':>6} | {_f(rate, '{:.2f}'):>15}{_f(dec.get('busy_s')):>8}{_f(dec.get('cpu_s')):>8}{_f(dec.get('process_cpu_s')):>9}"
                     f"{_f(dec.get('load_s')):>8}{_f(dec.get('mb_in'), '{:.0f}'):>8} | {'':>15}{'':>8} | {'':>12}")
    for m in s["metrics"]:
        name = m["name"]
        pm = (p or {}).get("per_metric", {}).get(m["scorer"], {})
        bm = (b or {}).get("per_metric", {}).get(m["scorer"], {})
        wm = (w or {}).get("per_metric", {}).get(m["scorer"], {})
        row = (f"{name:<14}{m['batch_size']:>6} | {_f(pm.get('images_per_s'), '{:.2f}'):>15}{_f(pm.get('busy_s')):>8}"
               f"{_f(pm.get('cpu_s')):>8}{_f(pm.get('process_cpu_s')):>9}{_f(pm.get('load_s')):>8}{_f(pm.get('mb_in'), '{:.0f}'):>8}"
               f" | {_f(bm.get('images_per_s'), '{:.2f}'):>15}{_f(bm.get('load_s')):>8}"
               f" | {_f(wm.get('images_per_s'), '{:.2f}'):>12}")
        if cuda:
            row += (f" | {_f(pm.get('cuda_peak_mb'), '{:.0f}'):>12}{_f(bm.get('cuda_peak_mb'), '{:.0f}'):>7}"
                    f"{_f(wm.get('cuda_peak_mb'), '{:.0f}'):>7}")
        lines.append(row)
    lines.append("")
    r = report["ratios"]
    if r.get("baseline_over_pipeline") is not None:
        lines.append(f"speed-up, baseline wall / pipeline wall:          {r['baseline_over_pipeline']:.2f}x")
    if r.get("baseline_over_pipeline_steady") is not None:
        lines.append(f"speed-up, baseline / pipeline at steady state:     {r['baseline_over_pipeline_steady']:.2f}x")
    if r.get("efficiency") is not None:
        lines.append(f"efficiency, model work / pipeline wall:            {r['efficiency']:.2f}")
    if r.get("efficiency_steady") is not None:
        lines.append(f"efficiency, model work / pipeline steady time:     {r['efficiency_steady']:.2f}")
    lines.append("pipeline img/s = images / the stage's busy seconds (its own __call__ time, models loaded); busy/cpu s = "
                 "wall/CPU seconds inside the stage's calls; proc cpu = the actor process's whole CPU time; MB in = numeric data the stage received, pixels read from the pixel store included (decode: produced)")
    lines.append("baseline img/s = images / scoring seconds (loads excluded); load s = all its loads (one per folder); "
                 "model img/s = forward only on ready pixels")
    return "\n".join(lines)


# ----- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.folders < 1 or args.prompts < 1 or args.repeats < 1:
        raise SystemExit("--folders, --prompts and --repeats must be >= 1")
    if args.mode == "driver":
        from benchmarks.modes import run_driver_mode

        return run_driver_mode(args, argv)
    if args.phases is None:
        args.phases = MODE_PHASES.get(args.mode, MODE_PHASES["compare"])
    if args.mode == "transport" and args.metrics == DEFAULT_METRICS:
        args.metrics = SIX_METRICS
    if args.mode == "overhead" and args.metrics == DEFAULT_METRICS:
        args.metrics = ["pickscore"]
    if args.mode == "overhead" and not args.batch_size:
        args.batch_size = ["64"]  # the loop's batch size, for the pipeline too
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load_before = load_average()
    device = resolve_device(args.device)
    plan = metric_plan(args, device)
    temporary = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="janus_ray_bench_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        root, real_size = weights_root(args, work, plan)
        prompts = make_prompts(args.prompts, seed=args.seed)
        t0 = time.perf_counter()
        inputs = make_inputs(work / "inputs", args.folders, prompts, image_size=args.image_size)
        inputs_s = time.perf_counter() - t0
        print(f"[bench] {inputs['n_images']} images in {len(inputs['folders'])} folders under {inputs['root']} "
              f"({inputs_s:.1f} s); weights {root}", file=sys.stderr, flush=True)
        spec = {
            "folders": [str(f) for f in inputs["folders"]], "prompt_json": str(inputs["prompt_json"]),
            "weights_root": str(root), "metrics": plan, "device": device, "dtype": args.dtype,
            "torch_threads": args.torch_threads,
            "cli_argv_template": eval_argv(inputs, root, plan, device, args.dtype, work / "runs" / "pipeline")
            + shlex.split(args.eval_args),
        }
        if args.mode == "transport":
            from benchmarks.modes import run_transport_mode

            return run_transport_mode(args, argv, inputs, root, plan)
        runs: dict[str, list[dict]] = {}
        # repeat-major (pipeline, loop, pipeline, loop, ...): a shared machine's slow spells then fall
        # on both sides of a comparison, not on all runs of one phase
        for r in range(args.repeats):
            for phase in PHASE_NAMES:
                if phase in args.phases:
                    runs.setdefault(phase, []).append(run_phase(phase, r, spec, work, args.timeout))
        phases = summarise(runs, inputs["n_images"])
        report = build_report(args, argv, started_at, load_before, device, plan, root, real_size, inputs, spec, phases)
        if args.mode == "overhead":
            from benchmarks.modes import format_overhead, overhead_figures

            report["overhead"] = overhead_figures(report["phases"])
            text = format_overhead(report)
        else:
            text = format_table(report)
        print(text)
        report["table"] = text
        write_report(args.out, report)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def write_report(out: str | Path, report: dict) -> None:
    """Write ``report`` as JSON at ``out`` (its folder made) and say where on stderr."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\n[bench] wrote {out}", file=sys.stderr)


def build_report(args, argv, started_at, load_before, device, plan, root, real_size, inputs, spec, phases) -> dict:
    p, b, w = phases.get("pipeline"), phases.get("baseline"), phases.get("model_work")
    ratios: dict[str, float | None] = {"baseline_over_pipeline": None, "baseline_over_pipeline_steady": None,
                                       "efficiency": None, "efficiency_steady": None}
    steady_rate = p["detail"].get("steady_images_per_s") if p else None
    if p and b:
        ratios["baseline_over_pipeline"] = b["wall_s"] / p["wall_s"]
        if steady_rate:
            # the baseline's own steady rate: its scoring time alone (loads excluded)
            base_score_s = sum(m["score_s"] for m in b["per_metric"].values())
            ratios["baseline_over_pipeline_steady"] = base_score_s / (p["images"] / steady_rate)
    if p and w:
        ratios["efficiency"] = w["total_s"] / p["wall_s"]
        if steady_rate:
            ratios["efficiency_steady"] = w["total_s"] / (p["images"] / steady_rate)
    command = shlex.join(["python", "scripts/bench.py", *argv])
    return {
        "command": command,
        "mode": args.mode,
        "image_size": args.image_size,
        "argv": argv,
        "cwd": os.getcwd(),
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average(),
                         "note": "1/5/15-minute load averages: values above the CPU count mean other work competed"},
        "versions": versions(),
        "settings": {
            "models": args.models, "folders": len(inputs["folders"]), "prompts": args.prompts, "images": inputs["n_images"],
            "metrics": plan, "device": device, "dtype": args.dtype, "repeats": args.repeats,
            "phases": list(phases), "weights_root": str(root), "real_size": real_size,
            "real_size_scale": args.real_size_scale if args.models == "real-size" else None,
            "torch_threads": args.torch_threads, "seed": args.seed,
            "pipeline_command": shlex.join(["janus-ray", *spec["cli_argv_template"]]),
        },
        "phases": phases,
        "ratios": ratios,
        "methods": {
            "pipeline_wall": "wall time of a fresh process running `janus-ray eval` (janus_ray.cli.main, ending as "
                             "the console script does: janus_ray.quick_exit): Python imports, manifest, embedded Ray "
                             "start, actor start and model loads, scoring, result files, Ray shutdown, exit",
            "steady_state": "from the same run, actor-side clocks: images finished by the last stage of the chain after "
                            "the last model finished loading / seconds from then to the last batch of any stage. "
                            "Per metric, pipeline img/s = images / the stage's busy seconds (sum of its batches' "
                            "wall seconds inside __call__; actor_busy_s is the same from the _jr_sec_<metric> column)",
            "baseline": "fresh process: for each folder, for each metric, load_scorer, then scorer.score([path], "
                        "[prompt]) per image (open, preprocess, forward, batch of one), one CSV per folder",
            "model_work": "fresh process: per metric, scorer.score_pixels on pixel tensors made beforehand, pipeline "
                          "batch size and row order, after one untimed warm-up batch; total_s = sum over metrics",
            "cpu": "tree_cpu_s: user+system seconds of the phase's process and all its descendants (last value "
                   "sampled per process); per stage, cpu_s = CPU inside the stage's calls, process_cpu_s = the "
                   "actor process's whole CPU time (start-up, imports, load, Ray Data's block handling)",
            "memory": "peak_pss_mb / peak_rss_mb: sum over the phase's process and all its descendants (Ray GCS, "
                      "raylet, workers), sampled every 1 s (PSS every 3 s) with psutil; actor_peak_rss_mb: VmHWM of each actor "
                      "process; cuda_peak_mb: torch.cuda.max_memory_allocated inside the process that ran the scorer",
            "ratios": "baseline_over_pipeline = baseline wall / pipeline wall; baseline_over_pipeline_steady = "
                      "baseline scoring seconds (loads excluded) / (images / pipeline steady images/s); efficiency "
                      "= model_work total_s / pipeline wall; efficiency_steady = model_work total_s / (images / "
                      "steady images/s). Efficiency above 1 means metrics overlapped (parallel actors).",
        },
    }


if __name__ == "__main__":
    sys.exit(main())
