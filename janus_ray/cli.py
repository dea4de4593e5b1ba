"""janus-ray: score generated images with six text-to-image metrics on Ray (eval | plan | report | validate | check-weights | list | demo)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from janus_ray.errors import JanusRayError
from janus_ray.quick_exit import end_at_exit


def _key_value(kind: type):
    def parse(text: str) -> tuple[str, Any]:
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"expected METRIC=VALUE, got {text!r}")
        key, value = text.split("=", 1)
        try:
            return key.strip(), kind(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad value in {text!r}: {exc}") from exc

    return parse


def _dtype(text: str) -> tuple[str | None, str]:
    """``DTYPE`` (every metric) or ``METRIC=DTYPE`` (one metric) -> (metric or None, dtype)."""
    from janus_ray.config import DTYPE_NAMES

    metric, _, dtype = text.rpartition("=")
    if dtype not in DTYPE_NAMES or (_ and not metric):
        raise argparse.ArgumentTypeError(f"expected DTYPE or METRIC=DTYPE with DTYPE one of {', '.join(DTYPE_NAMES)}, got {text!r}")
    return (metric.strip() or None), dtype


def _resource(text: str) -> tuple[str, tuple[str, float]]:
    metric, _, rest = text.partition("=")
    name, _, amount = rest.partition(":")
    if not metric or not name:
        raise argparse.ArgumentTypeError(f"expected METRIC=RESOURCE[:AMOUNT], got {text!r}")
    return metric, (name, float(amount or 1))


def add_eval_arguments(parser: argparse.ArgumentParser, for_plan: bool = False) -> None:
    """Flags of ``eval``; the earlier tool's snake_case flags are accepted as they were. ``for_plan``
    (``plan``, ``validate``): the flags that cannot change a plan (outputs, resume, report, timeouts)
    are still accepted, so an ``eval`` command line runs as is with ``plan`` or ``validate`` in its
    place, but left out of their ``--help``."""

    def run_only(text: str) -> str:
        return argparse.SUPPRESS if for_plan else text

    parser.add_argument("folders", nargs="*", help="variant folders to score")
    parser.add_argument("--config", help="YAML file with RunConfig keys (command-line flags override it)")
    parser.add_argument("--weights-root", "--weights_root", dest="weights_root", help="folder holding the checkpoints")
    parser.add_argument("--prompt-json", "--prompt_json", dest="prompt_json", help='prompt.json: {"prompts": [...]} or a list')
    parser.add_argument("--metrics", nargs="+", help="scorer names or model aliases (default: the six metrics)")
    parser.add_argument("--output-dir", dest="output_dir", help=run_only("write results here (default: into each folder)"))
    parser.add_argument("--cache-dir", "--cache_dir", dest="cache_dir", help=run_only("resume cache (default: <output root>/.janus_ray_cache)"))
    parser.add_argument("--all-samples", dest="all_samples", action="store_true", default=None, help="score every sample, not only the first per prompt")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--dtype", action="append", type=_dtype, default=[], metavar="[METRIC=]DTYPE",
                        help="float32 | bfloat16 | float16, for every metric or (METRIC=DTYPE, repeatable) one; default: reference precision on GPU, float32 on CPU")
    parser.add_argument("--tf32", action="store_true", default=None, help="opt-in TF32 matmuls for the fp32 metrics on CUDA (faster, ~1e-3 relative rounding)")
    parser.add_argument("--limit", type=int, help="score only N images per folder, of the same prompts in every folder (smoke runs)")
    parser.add_argument("--ray-address", dest="ray_address", help="join a running Ray cluster ('auto' or host:port); default: embedded local Ray")
    parser.add_argument("--strict", action="store_true", default=None, help=run_only("exit non-zero if any row failed"))
    parser.add_argument("--no-resume", dest="resume", action="store_false", default=None, help=run_only("ignore the resume cache"))
    parser.add_argument("--decode-batch-size", dest="decode_batch_size", type=int, help="images per decode-stage batch (default 16)")
    parser.add_argument("--cpu-layout", dest="cpu_layout", choices=["fused", "per-metric"], help="without GPUs: decode + all metrics in each actor (fused, default) or one actor pool per metric")
    parser.add_argument("--no-pixel-store", dest="pixel_store", action="store_false", default=None,
                        help=run_only("one actor pool per metric: carry the decoded pixels in the rows instead of through the pixel stores (more object-store copies)"))
    parser.add_argument("--cpu-replicas", dest="cpu_replicas", type=int, help="fused CPU actors (default: one per CPU, one torch thread each)")
    parser.add_argument("--gpu-memory-gb", dest="gpu_memory_gb", type=float, metavar="GB", help="memory of each GPU (default: probed on each GPU node)")
    parser.add_argument("--pool-start-timeout", dest="pool_start_timeout_s", type=float, metavar="SECONDS", help=run_only("end the run when a metric's actors cannot start within this time (default 600)"))
    parser.add_argument("--no-report", dest="report", action="store_false", help=run_only("skip the comparison report at the end"))
    parser.add_argument("--batch-size", action="append", type=_key_value(int), default=[], metavar="METRIC=N")
    parser.add_argument("--num-gpus", action="append", type=_key_value(float), default=[], metavar="METRIC=F", help="GPU share per actor (fractional packs small models)")
    parser.add_argument("--replicas", action="append", type=_key_value(int), default=[], metavar="METRIC=N")
    parser.add_argument("--resource", action="append", type=_resource, default=[], metavar="METRIC=NAME[:AMOUNT]", help="custom Ray resource, e.g. vqascore=vqa_gpu:1")
    legacy = parser.add_argument_group("earlier tool's flags")
    legacy.add_argument("--vqa_model", help="clip-flant5-xxl | clip-flant5-xl")
    legacy.add_argument("--clip_model", help="openai:ViT-L-14-336")
    legacy.add_argument("--itm_model", help="blip2-itm")
    legacy.add_argument("--hps_model", help="hpsv2 | hpsv2.1")
    legacy.add_argument("--pickscore_model", help="pickscore-v1")
    legacy.add_argument("--imagereward_ckpt", help="path of ImageReward.pt (default: <weights-root>/ImageReward/ImageReward.pt)")


def config_from_args(args: argparse.Namespace, require_inputs: bool = True):
    """defaults < YAML (--config) < command line; then validate()."""
    from janus_ray.config import DEFAULT_METRICS, LEGACY_MODEL_FLAGS, MetricSpec, RunConfig, load_yaml_config, normalize_metrics
    from janus_ray.errors import ConfigError

    values: dict[str, Any] = load_yaml_config(args.config) if getattr(args, "config", None) else {}
    scalar_flags = ["weights_root", "prompt_json", "output_dir", "cache_dir", "all_samples", "device", "tf32",
                    "limit", "ray_address", "strict", "resume", "decode_batch_size", "cpu_layout", "cpu_replicas", "pixel_store",
                    "pool_start_timeout_s", "gpu_memory_gb", "imagereward_ckpt", *LEGACY_MODEL_FLAGS]
    for name in scalar_flags:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    for metric, dtype in args.dtype:  # plain --dtype DTYPE: the run's dtype (the last one wins)
        if metric is None:
            values["dtype"] = dtype
    if args.folders:
        values["folders"] = args.folders
    if args.metrics:
        values["metrics"] = args.metrics
    if isinstance(values.get("device"), str) and values["device"].startswith("cuda:"):
        values["device"] = "cuda"  # Ray assigns the GPUs; a fixed index has no meaning across actors
    hps_asked = "hpsv2" in (values.get("metrics") or DEFAULT_METRICS)
    config = RunConfig(**values)
    config.resolve_names()  # aliases and the earlier tool's flags (validate() repeats it, idempotently)
    if hps_asked and "hpsv2.1" in config.metrics and "hpsv2" not in config.metrics:
        print("[janus-ray] --hps_model hpsv2.1: HPS v2.1 is scored in HPS v2.0's place (column HPSv2.1Score; "
              "HPSv2Score stays empty). `--metrics hpsv2 hpsv2.1` scores both.", file=sys.stderr)
    if args.metrics and getattr(args, "config", None):
        # --metrics narrows the YAML's list (flags win): its settings of the metrics left out do not apply
        for metric in [m for m in config.metric_specs if m not in config.metrics]:
            del config.metric_specs[metric]
    per_metric = [("batch_size", args.batch_size), ("num_gpus", args.num_gpus), ("replicas", args.replicas),
                  ("dtype", [(metric, dtype) for metric, dtype in args.dtype if metric is not None])]
    for attr, pairs in per_metric:
        for metric, value in pairs:
            scorer = normalize_metrics([metric], config.metric_specs)[0]
            if scorer not in config.metrics:
                raise ConfigError(f"--{attr.replace('_', '-')} given for {metric!r}, which is not enabled. Enabled: {', '.join(config.metrics)}.")
            setattr(config.metric_specs.setdefault(scorer, MetricSpec()), attr, value)
    for metric, (name, amount) in args.resource:
        scorer = normalize_metrics([metric], config.metric_specs)[0]
        config.metric_specs.setdefault(scorer, MetricSpec()).resources[name] = amount
    config.validate(require_inputs=require_inputs)
    return config


def interrupted_message(exc: KeyboardInterrupt, config: RunConfig, report: bool = False) -> str:
    """The one line for Ctrl-C during eval: how many rows reached the resume cache, and where it is
    (or, once every result file is written, where they are and how to build the ``report``)."""
    from janus_ray.errors import InterruptedAfterWrite
    from janus_ray.pipeline import cache_directory, output_dirs

    if isinstance(exc, InterruptedAfterWrite):
        root = exc.output_root
        return (f"janus-ray: interrupted as the run ended; every score is written under {root}"
                + (f": `janus-ray report {root}` builds the report." if report else "."))
    cache = getattr(exc, "cache_dir", None) or cache_directory(config, output_dirs(config)[0])
    received = getattr(exc, "rows_received", None)
    if not received:  # before scoring started (scan, plan, Ray start) or before the first result batch
        return (f"janus-ray: interrupted before any score arrived; nothing new in the resume cache ({cache}). "
                "Run the same command again to start over.")
    return (f"janus-ray: interrupted; the {received} row(s) scored so far are in the resume cache ({cache}): "
            "run the same command again to score only what is missing.")


def cmd_eval(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # every flag checked before ray is even imported
    from janus_ray.pipeline import evaluate
    from janus_ray.report import build_report, preload

    try:
        # the report's imports overlap Ray's start, the report itself Ray's shutdown
        result = evaluate(config, preload=preload if args.report else None,
                          then=(lambda run: build_report(run.output_root)) if args.report else None)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line instead of Ray's traceback; what was scored is cached
        # A second Ctrl-C would break Ray's shutdown at exit with a traceback (and leave its agents
        # running): the run is over, the exit that follows only stops Ray.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        then = getattr(exc, "then", None)  # a Ctrl-C as the run ended: the report is already being built
        print(interrupted_message(exc, config, report=args.report and then is None), file=sys.stderr)
        if then is not None:
            print_report(then, exc.output_root)
        return 130
    if args.report and print_report(result.then, result.output_root) == 130:
        return 130
    if result.n_failed:
        print(f"[janus-ray] {result.n_failed} row(s) failed; see the `error` column of janus_eval_scores.parquet "
              "or .json (the CSV keeps the earlier tool's columns).", file=sys.stderr)
    return 1 if (config.strict and result.n_failed) else 0


def print_report(then, output_root) -> int | None:
    """Wait for the report ``evaluate(then=...)`` builds and print its files (or why there is none:
    a report problem must not turn a finished eval into a failure). 130 if Ctrl-C came first."""
    try:
        for path in then.result():
            print(f"[janus-ray] report: {path}", file=sys.stderr)
    except (JanusRayError, OSError) as exc:
        print(f"[janus-ray] warning: no comparison report: {exc}", file=sys.stderr)
    except KeyboardInterrupt:  # the scores are written: say so, and how to get the report
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the exit waits for the report's thread
        print(f"janus-ray: interrupted while building the report; every score is written under "
              f"{output_root}: `janus-ray report {output_root}` builds it.", file=sys.stderr)
        return 130
    return None


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the placement plan for the cluster at hand or a described one; exit 2 when none fits."""
    import json

    from janus_ray.errors import ConfigError
    from janus_ray.plan import ClusterShape, plan_run

    from janus_ray.pipeline import check_metric

    config = config_from_args(args, require_inputs=False)
    for metric in config.metrics:  # what eval refuses before it starts: no plan for a run that cannot be
        check_metric(config, metric)
    if args.cluster_yaml:
        import yaml

        from janus_ray.plan import shape_from_cluster_yaml

        if args.gpus is not None or args.ray_address:
            raise ConfigError("--cluster-yaml describes the cluster: give it without --gpus / --ray-address.")
        path = Path(args.cluster_yaml)
        if not path.is_file():
            raise ConfigError(f"--cluster-yaml {path} does not exist.")
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"--cluster-yaml {path} is not valid YAML: {str(exc).splitlines()[0]}.") from None
        shape = shape_from_cluster_yaml(document, every_gpu_gb=config.gpu_memory_gb)  # one size for every GPU type
    elif args.gpus is not None:
        if args.ray_address:
            raise ConfigError("--gpus describes a cluster; --ray-address plans the one at that address: give one of them.")
        if args.gpus < 0 or args.nodes < 1:
            raise ConfigError(f"--gpus must be >= 0 and --nodes >= 1, got {args.gpus} and {args.nodes}.")
        if args.gpus > 0 and not config.gpu_memory_gb:
            raise ConfigError("--gpu-memory-gb is required with --gpus > 0 (memory of each GPU, in GB).")
        if args.cpus is None:
            raise ConfigError("--cpus is required with --gpus (CPUs per node).")
        if args.cpus <= 0:  # a node without a CPU cannot decode (nor run Ray's own tasks)
            raise ConfigError(f"--cpus must be > 0 (CPUs per node), got {args.cpus:g}.")
        shape = ClusterShape.uniform(args.gpus, config.gpu_memory_gb or 0.0, args.cpus, args.nodes)
    else:
        if args.cpus is not None or args.nodes != 1:  # else silently ignored: the plan was for this machine
            raise ConfigError("--cpus and --nodes describe a cluster together with --gpus (--gpus 0 for nodes "
                              "without GPUs); without --gpus, plan asks Ray about the cluster at hand.")
        from janus_ray.stream import cluster_shape, connect, join_address, local_shape

        if join_address(config.ray_address):
            shape = cluster_shape(connect(config.ray_address), config.gpu_memory_gb)
        else:
            shape = local_shape(config.gpu_memory_gb)
    plan = plan_run(config, shape, use_weight_files=bool(config.weights_root))
    document = plan.to_json()
    text = plan.table()
    if config.folders:  # the run's size: how long the plan's rate takes for these folders
        from janus_ray.manifest import build_manifest, load_prompts
        from janus_ray.plan import run_estimate

        prompts = load_prompts(config.prompt_json) if config.prompt_json else None
        scans = build_manifest(config.folders, prompts, all_samples=config.all_samples, limit=config.limit)
        estimate = run_estimate(plan, [len(scan.rows) for scan in scans])
        document["run"] = estimate.to_json()
        text += "\n" + estimate.line()
    print(json.dumps(document, indent=2) if args.json else text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Scan the folders of an eval command line (flags or --config) and print what would be scored;
    exit 1 when a folder has a problem. Flags that only matter once models load are accepted."""
    from janus_ray.errors import ConfigError
    from janus_ray.manifest import load_prompts, validate_folders

    config = config_from_args(args, require_inputs=False)  # folder problems are validate's own report
    if not config.folders:
        raise ConfigError("No input folders given: pass one or more FOLDER arguments (or `folders:` in the config).")
    from janus_ray.metrics.weights import LAYOUT_HELP
    from janus_ray.pipeline import run_problems

    prompts = load_prompts(config.prompt_json) if config.prompt_json else None
    text, ok = validate_folders(config.folders, prompts, all_samples=config.all_samples, check_images=True,
                                limit=config.limit)
    # what eval refuses before it starts (output mapping, weight files): reported, with the folders
    problems = run_problems(config)
    *report, last = text.split("\n")  # the summary line stays the last one
    if problems:
        lines = ["== the run's settings (what eval checks before it starts)"]
        lines += ["  " + line for problem in problems for line in problem.splitlines()]
        if any("weight files" in problem for problem in problems):
            lines += ["  " + line for line in LAYOUT_HELP.splitlines()]
        lines += ["  status: PROBLEMS", ""]
        last, ok = last.replace("OK: ", "PROBLEMS FOUND in the run's settings; ", 1), False
    else:
        lines = [] if config.weights_root else ["(weight files not checked: give --weights-root, or run `janus-ray check-weights`)"]
    print("\n".join([*report, *lines, last]))
    return 0 if ok else 1


def cmd_check_weights(args: argparse.Namespace) -> int:
    """List every weight file of the run's metrics (eval's command line: --metrics, --config, the
    earlier tool's model flags) as OK / MISSING / UNREADABLE; exit 1 if any is not OK. Without a
    metric list: the six metrics and HPSv2.1."""
    from janus_ray.config import DEFAULT_METRICS, load_yaml_config
    from janus_ray.errors import ConfigError
    from janus_ray.metrics import get_scorer_class
    from janus_ray.metrics.weights import file_status

    config = config_from_args(args, require_inputs=False)  # a root that is not a directory: one line
    if not config.weights_root:
        raise ConfigError("--weights-root is required: the folder holding the model checkpoints.")
    root = Path(config.weights_root)
    listed = bool(args.metrics) or list(config.metrics) != list(DEFAULT_METRICS) or bool(
        args.config and "metrics" in load_yaml_config(args.config))
    names = list(config.metrics) if listed else [*config.metrics, "hpsv2.1"]
    classes = {name: get_scorer_class(name) for name in names}  # an unknown name fails before any check
    bad = 0
    for name, cls in classes.items():
        print(f"{name}:")
        for item in cls.required_files(root, **config.spec(name).options):
            found = item.resolve()
            status = file_status(found, deep=args.deep) if found else "MISSING"
            shown = found or item.path
            bad += status != "OK"
            print(f"  {status:<10} {shown}  ({item.purpose})")
    print("all weight files present" if not bad else f"{bad} file(s) missing or unreadable")
    return 1 if bad else 0


def cmd_list(args: argparse.Namespace) -> int:
    from janus_ray.metrics import ALIASES, get_scorer_class, list_scorers

    for name in list_scorers():
        cls = get_scorer_class(name)
        aliases = [a for a, (target, _) in ALIASES.items() if target == name]
        direction = "higher is better" if cls.higher_is_better else "lower is better"
        print(f"{name:<12} {cls.column:<14} {direction:<17} range {cls.score_range}  aliases: {', '.join(aliases) or '-'}")
        print(f"{'':<12} reference: {cls.reference}")
    testing = [name for name in list_scorers(include_testing=True) if name not in list_scorers()]
    if testing:
        print(f"\nTest and benchmark scorers (not metrics, no model): {', '.join(testing)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from janus_ray.demo import run_demo

    return run_demo(Path(args.dir), fresh=args.fresh)


def eval_like(sub, name: str, help: str, description: str, hide_run_only: bool = True) -> argparse.ArgumentParser:
    """A subcommand that takes eval's command line as is (``add_eval_arguments``); ``hide_run_only``:
    the flags that only matter to a run are accepted but left out of its --help."""
    parser = sub.add_parser(name, help=help, description=description)
    add_eval_arguments(parser, for_plan=hide_run_only)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus-ray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("eval", help="score every folder's images with every metric on Ray")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)
    p = eval_like(sub, "plan", "the placement plan (phases, pools, GPU memory, images/s) for a cluster, without running",
                  "The placement plan for the cluster at hand or a described one, without running anything. It takes "
                  "eval's command line as is (flags that cannot change a plan, such as --output-dir or --no-resume, "
                  "are accepted and not listed here); with folders it also estimates the run's time.")
    p.add_argument("--gpus", type=int, help="describe a cluster instead of asking Ray: GPUs per node")
    p.add_argument("--cpus", type=float, help="CPUs per node (with --gpus)")
    p.add_argument("--nodes", type=int, default=1, help="identical nodes (with --gpus; default 1)")
    p.add_argument("--cluster-yaml", dest="cluster_yaml", help="plan for the nodes a Ray cluster-launcher config declares (cluster.yaml)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)
    # every flag listed: --output-dir, for one, changes what validate checks
    p = eval_like(sub, "validate", "report what would be scored, before any model loads",
                  "Scan the folders and report, per folder, the layout found, the rows that would be scored and "
                  "every problem (unreadable images, prompts that do not match), without loading a model. It takes "
                  "eval's command line as is (--config, --weights-root and the other flags of a run are accepted).",
                  hide_run_only=False)
    p.set_defaults(func=cmd_validate)
    p = eval_like(sub, "check-weights", "list every weight file each metric needs: OK / MISSING / UNREADABLE",
                  "List every weight file the metrics need under --weights-root: OK / MISSING / UNREADABLE (a file's "
                  "structure only; --deep reads every byte). It takes eval's command line as is (--config, --metrics, "
                  "the earlier tool's model flags); without a metric list it checks the six metrics and HPSv2.1.")
    p.add_argument("--deep", action="store_true",
                   help="also CRC-check every member of zip checkpoints (reads every byte; slow on real weights)")
    p.set_defaults(func=cmd_check_weights)
    from janus_ray.report import add_report_subcommand

    add_report_subcommand(sub)
    p = sub.add_parser("list", help="the scorers, their columns, direction and reference")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("demo", help="tiny random models + sample folders, scored end to end on local Ray")
    p.add_argument("--dir", default="janus_ray_demo", help="where to create the demo (default: ./janus_ray_demo)")
    p.add_argument("--fresh", action="store_true", help="delete an earlier demo (its weights and variants) first; a directory holding anything else is refused")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except JanusRayError as exc:
        print(f"janus-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("janus-ray: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``janus-ray`` console script: ``main()``, then the process ends with its exit code but
    without Python's interpreter teardown (``janus_ray.quick_exit``: ~0.5 s of destroying pandas,
    Ray and the report's libraries after the results are written). Tests call ``main()``."""
    set_code = end_at_exit()  # before main(): every atexit hook registered by then (Ray's) runs first
    try:
        code = main()
    except BrokenPipeError:  # `janus-ray list | head -2`: the reader left; no traceback into a closed pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
        code = 1
    set_code(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
