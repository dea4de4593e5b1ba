"""The bench's extra modes: driver (stub scoring at N rows), transport (bytes per image), and the
overhead mode's table (pipeline vs a plain batched loop, fully cached rerun, fixed costs)."""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _f(value: Any, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


# ----- driver -------------------------------------------------------------------------------------
def run_driver_mode(args, argv: list[str]) -> int:
    """``python -m benchmarks.driver`` in fresh processes at 10,000 rows and at ``--rows``."""
    from benchmarks.runner import child_pythonpath

    sizes = sorted({10_000, args.rows})
    results = {}
    with tempfile.TemporaryDirectory(prefix="janus_ray_bench_driver_", dir=args.work_dir) as tmp:
        for rows in sizes:
            out = Path(tmp) / f"driver-{rows}.json"
            print(f"[bench] driver at {rows} rows ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "benchmarks.driver", "--rows", str(rows), "--out", str(out),
                            "--work-dir", tmp], check=True, stdout=subprocess.DEVNULL, timeout=args.timeout,
                           env={**os.environ, "PYTHONPATH": child_pythonpath()})
            results[rows] = json.loads(out.read_text(encoding="utf-8"))
    lines = [f"janus_ray bench, driver mode (stub scoring stage, {results[sizes[-1]]['metrics']}, "
             f"half the rows in the resume cache)", "",
             f"{'rows':>10}{'driver s':>10}{'CPU s':>8}{'peak RSS MB':>13}{'per batch ms':>14}{'CPU ms':>8}"
             f"{'batches':>9}  steps (wall s)"]
    for rows, r in results.items():
        steps = ", ".join(f"{k} {v:.2f}" for k, v in r["steps_s"].items())
        lines.append(f"{rows:>10}{r['driver_s']:>10.1f}{r['driver_cpu_s']:>8.1f}{r['peak_rss_mb']:>13.0f}"
                     f"{r['per_batch_ms_median']:>14.2f}{r['per_batch_cpu_ms_median']:>8.2f}{r['result_batches']:>9}  {steps}")
    lines.append("per batch ms = median driver time per result batch of 1,024 rows (cache records, buffered "
                 "cache append, progress): flat when the driver does no O(n) work per batch")
    text = "\n".join(lines)
    print(text)
    _write(args, argv, {"mode": "driver", "results": {str(k): v for k, v in results.items()}, "table": text})
    return 0


# ----- transport ----------------------------------------------------------------------------------
def run_transport_mode(args, argv: list[str], inputs: dict, root: Path, plan: list[dict]) -> int:
    """Bytes per image through the object store, per-metric layout: the in-process chain without
    and with the pixel store (stand-in counting its puts), then the real pipeline on a local Ray
    without and with it (plasma's created bytes; a child process, so its Ray is its own)."""
    from benchmarks.runner import child_pythonpath
    from benchmarks.transport import measure
    from janus_ray.actors.pixel_store import InProcessPixelStore
    from janus_ray.manifest import build_manifest, load_prompts

    scans = build_manifest([str(f) for f in inputs["folders"]], load_prompts(inputs["prompt_json"]))
    rows = [r for scan in scans for r in scan.rows if r.prompt is not None and not r.error]
    paths, prompts, scorers = [str(r.image_path) for r in rows], [r.prompt for r in rows], [m["scorer"] for m in plan]
    before = measure(paths, prompts, scorers, root)
    after = measure(paths, prompts, scorers, root, store=InProcessPixelStore())
    real: dict[str, Any] = {}
    if not args.no_ray:
        with tempfile.TemporaryDirectory(prefix="janus_ray_bench_transport_", dir=args.work_dir) as tmp:
            spec = Path(tmp) / "spec.json"
            spec.write_text(json.dumps({"folders": [str(f) for f in inputs["folders"]],
                                        "prompt_json": str(inputs["prompt_json"]), "metrics": plan,
                                        "weights_root": str(root)}), encoding="utf-8")
            out = Path(tmp) / "transport.json"
            print("[bench] transport: the per-metric pipeline on a local Ray, without and with the pixel store ...",
                  file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "benchmarks.transport", "--spec", str(spec), "--work-dir", tmp,
                            "--out", str(out)], check=True, stdout=subprocess.DEVNULL, timeout=args.timeout,
                           env={**os.environ, "PYTHONPATH": child_pythonpath()})
            real = json.loads(out.read_text(encoding="utf-8"))
    lines = [(f"janus_ray bench, transport mode (per-metric layout): {after['images']} images of "
              f"{args.image_size}x{args.image_size} px, metrics {', '.join(after['metrics'])}"), "",
             "in-process chain (the real stages, no Ray), MB per image:",
             f"  {'stage output':<16}{'before (pixels in rows)':>24}{'with pixel store':>18}"]
    for stage, value in before["bytes_per_image_by_stage_output"].items():
        lines.append(f"  {stage:<16}{value / 1e6:>24.3f}{after['bytes_per_image_by_stage_output'][stage] / 1e6:>18.3f}")
    lines.append(f"  {'put in store':<16}{'-':>24}{after['bytes_per_image_put_in_store'] / 1e6:>18.3f}")
    lines.append(f"  {'object store':<16}{before['bytes_per_image_through_object_store'] / 1e6:>24.3f}"
                 f"{after['bytes_per_image_through_object_store'] / 1e6:>18.3f}"
                 "   (bytes per image through it: every stage output but the last, + the store's puts)")
    if real:
        lines += ["", ("real pipeline on a local Ray (janus_ray eval, --cpu-layout per-metric), plasma bytes created "
                       "(cumulative_created_bytes after - before) per image:")]
        for label, run in real.items():
            store = run.get("store") or {}
            extra = (f"; store put {store['held_bytes_total'] / max(1, run['images']) / 1e6:.3f} MB/image, "
                     f"keys left {store['held_keys']}, decode waits {store['waits']}" if store else "")
            lines.append(f"  {label.replace('_', ' '):<16}{run['bytes_per_image'] / 1e6:8.3f} MB per image "
                         f"({run['images']} images, {run['wall_s']:.0f} s, {run.get('tree_cpu_s')} CPU s of the "
                         f"process tree{extra})")
        if all(run.get("tree_cpu_s") is not None for run in real.values()) and len(real) == 2:
            a, b = real["without_store"], real["with_store"]
            lines.append(f"  CPU per image: {1e3 * a['tree_cpu_s'] / max(1, a['images']):.1f} ms without the store, "
                         f"{1e3 * b['tree_cpu_s'] / max(1, b['images']):.1f} ms with it (start-up included: "
                         "compare at a few hundred images)")
    text = "\n".join(lines)
    print(text)
    _write(args, argv, {"mode": "transport", "in_process": {"before": before, "with_store": after},
                        "ray": real, "table": text})
    return 0


# ----- overhead -----------------------------------------------------------------------------------
def overhead_figures(phases: dict) -> dict[str, Any]:
    """The overhead mode's derived figures (``bench.json``'s ``overhead``; the table prints them).

    With ``--repeats`` the phases alternate, so run i of the pipeline and run i of the loop shared
    the machine's mood: per-pair ratios and extra seconds, then their medians. ``allowed_s``: the
    extra time 0.8x leaves (a quarter of the loop's time); ``ray_floor_s``: the median of the
    ``ray_floor`` runs' ``ray_s``. Absent phases give None."""
    p, loop, floor = phases.get("pipeline"), phases.get("loop"), phases.get("ray_floor")
    out: dict[str, Any] = {"ratio_of_medians": None, "pair_ratios": [], "median_pair_ratio": None,
                           "extra_s": None, "allowed_s": None, "ray_floor_s": floor["ray_s"] if floor else None}
    if p and loop:
        pairs = list(zip(loop["wall_s_runs"], p["wall_s_runs"]))
        out["ratio_of_medians"] = loop["wall_s"] / p["wall_s"]
        out["pair_ratios"] = [lw / pw for lw, pw in pairs]
        out["median_pair_ratio"] = statistics.median(out["pair_ratios"])
        out["extra_s"] = statistics.median(pw - lw for lw, pw in pairs)
        out["allowed_s"] = statistics.median(0.25 * lw for lw, _ in pairs)
    return out


def format_overhead(report: dict) -> str:
    s, phases = report["settings"], report["phases"]
    p, loop, rerun = phases.get("pipeline"), phases.get("loop"), phases.get("cached_rerun")
    figures = overhead_figures(phases)
    lines = [f"janus_ray bench, overhead mode: {s['folders']} folders x {s['prompts']} prompts = {s['images']} images "
             f"of {report['image_size']} px, metric {', '.join(m['name'] for m in s['metrics'])}, "
             f"{report['machine']['cpus_usable']} CPUs; load average before {report['load_average']['before']}, "
             f"after {report['load_average']['after']}", ""]
    if p:
        lines.append(f"pipeline (janus-ray eval, cold)       {p['wall_s']:8.1f} s  {_f(p['images_per_s'], '{:.1f}')} img/s")
    if loop:
        d = loop["detail"]
        lines.append(f"loop ({d.get('processes')} processes, load once, bs {s['metrics'][0]['batch_size']})  {loop['wall_s']:8.1f} s  "
                     f"{_f(loop['images_per_s'], '{:.1f}')} img/s")
    if p and loop:
        pairs = list(zip(loop["wall_s_runs"], p["wall_s_runs"]))
        lines.append(f"pipeline throughput / loop throughput: {figures['ratio_of_medians']:.2f}x"
                     + (" (median loop run / median pipeline run)" if len(pairs) > 1 else ""))
        if len(pairs) > 1:  # --repeats: the runs alternated, so each pair shared the machine's mood
            lines.append("  per run (loop s / pipeline s): " + ", ".join(f"{lw:.1f} / {pw:.1f} = {lw / pw:.2f}x"
                                                                      for lw, pw in pairs)
                         + f"; median of these ratios {figures['median_pair_ratio']:.2f}x")
        # CPU seconds do not depend on what else the machine runs (wall seconds do): the fair check on a
        # shared machine
        if p.get("tree_cpu_s") and loop.get("tree_cpu_s"):
            lines.append(f"CPU seconds (whole process tree): pipeline {p['tree_cpu_s']:.1f}, loop {loop['tree_cpu_s']:.1f}"
                         f" ({loop['tree_cpu_s'] / p['tree_cpu_s']:.2f}x)")
    for name, phase in (("pipeline", p), ("loop", loop)):
        if phase and phase.get("cpu_s_by_process"):
            top = list(phase["cpu_s_by_process"].items())
            lines.append(f"  {name} CPU s by process: " + ", ".join(f"{k} {v:.1f}" for k, v in top[:8])
                         + (f", {len(top) - 8} more kinds {sum(v for _, v in top[8:]):.1f}" if len(top) > 8 else ""))
    if p:
        d = p["detail"]
        # the child's clock stops when its main returns: the rest of that run's wall time is
        # interpreter start and the process's exit (atexit hooks, then no teardown: janus_ray.quick_exit)
        shutdown = d["run_wall_s"] - d["child_s"] if d.get("child_s") and d.get("run_wall_s") else None
        lines += ["", "pipeline fixed costs (s, its median run): "
                  f"imports {_f(d.get('import_s'))}, start until streaming {_f(d.get('until_stream_s'))}, "
                  f"all models loaded at {_f(d.get('all_models_loaded_s'))}, first result at "
                  f"{_f(d.get('driver_first_result_s'))}, after the last result (assemble + write) {_f(d.get('write_s'))}, "
                  f"process start + exit {_f(shutdown)}; first actor out of work before the last "
                  f"{_f(d.get('tail_idle_s'))}"]
    floor = phases.get("ray_floor")
    if floor:
        d = floor["detail"]
        runs = floor.get("ray_s_runs", [d["ray_s"]])
        lines.append(f"Ray's floor (from `import ray` to the end of the shutdown: the embedded Ray's start, "
                     f"{d['replicas']} no-op actors over the same {d['blocks']} blocks, the shutdown; no torch, model or "
                     f"image): {figures['ray_floor_s']:.1f} s" + (f" (median of {', '.join(f'{r:.1f}' for r in runs)})"
                                                                if len(runs) > 1 else "")
                     + f"; its median run: Ray up at {d['start_s']:.1f} s, first result at {d['first_result_s']:.1f} s, "
                     f"last at {d['start_s'] + d['stream_s']:.1f} s, shut down in {d['shutdown_s']:.1f} s")
        if figures["extra_s"] is not None:
            # what the pipeline adds to the loop's time, against what Ray alone costs: 0.8x leaves a
            # quarter of the loop's time for all of it
            verdict = ("Ray alone takes more than 0.8x allows at this size" if figures["ray_floor_s"] > figures["allowed_s"]
                       else "Ray alone fits in what 0.8x allows")
            lines.append(f"  the pipeline's time over the loop's: {figures['extra_s']:.1f} s; 0.8x allows "
                         f"{figures['allowed_s']:.1f} s" + (" (medians over the pairs)" if len(p["wall_s_runs"]) > 1 else "")
                         + f"; {verdict} ({figures['ray_floor_s']:.1f} s)")
    if rerun:
        d = rerun["detail"]
        lines.append(f"fully cached rerun (janus-ray eval, resume, cold): {rerun['wall_s']:.1f} s, "
                     f"cache hits {d.get('cache_hits')}, rows to score {d.get('to_score')}")
    return "\n".join(lines)


def _write(args, argv: list[str], report: dict) -> None:
    from benchmarks.runner import write_report

    report["command"] = shlex.join(["python", "scripts/bench.py", *argv])
    write_report(args.out, report)
