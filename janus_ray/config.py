"""One run configuration: defaults < YAML file < command line, checked by one ``validate()``."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from janus_ray.errors import ConfigError, UnknownNameError
from janus_ray.metrics import SCORERS, resolve_name
from janus_ray.plan import CPU_BATCH_SIZE, DEFAULT_BATCH_SIZE, SMALL_MODEL_BATCH_SIZE

#: the six metrics of the earlier tool, in its column order
DEFAULT_METRICS = ["hpsv2", "vqascore", "clipscore", "itmscore", "pickscore", "imagereward"]

#: the earlier tool's model flags: flag -> (scorer it selects, valid values)
LEGACY_MODEL_FLAGS = {
    "vqa_model": ("vqascore", ["clip-flant5-xxl", "clip-flant5-xl"]),
    "clip_model": ("clipscore", ["openai:ViT-L-14-336"]),
    "itm_model": ("itmscore", ["blip2-itm"]),
    "hps_model": ("hpsv2", ["hpsv2", "hpsv2.1"]),
    "pickscore_model": ("pickscore", ["pickscore-v1"]),
}

DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class MetricSpec:
    """Resources and options of one metric's actor pool."""

    batch_size: int | None = None  # None: chosen from the metric and the device (may shrink to fit memory)
    num_gpus: float | None = None  # None: the planner chooses (janus_ray/plan.py); 0 without GPUs
    replicas: int | None = None  # None: the planner chooses
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {"vqa_gpu": 1}
    options: dict[str, Any] = field(default_factory=dict)  # scorer options (e.g. vqascore model)
    dtype: str | None = None  # None: the run's dtype (RunConfig.dtype)

    def resolved_batch_size(self, name: str, on_gpu: bool) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if not on_gpu:
            return CPU_BATCH_SIZE
        return DEFAULT_BATCH_SIZE.get(name, SMALL_MODEL_BATCH_SIZE)


@dataclass
class RunConfig:
    """Everything ``janus-ray eval`` needs. Field names are the YAML keys."""

    folders: list[str] = field(default_factory=list)
    weights_root: str | None = None
    prompt_json: str | None = None
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    metric_specs: dict[str, MetricSpec] = field(default_factory=dict)
    output_dir: str | None = None  # None: results into each folder, summary at their common parent
    cache_dir: str | None = None  # resume cache; None: <output root>/.janus_ray_cache
    all_samples: bool = False
    device: str = "auto"  # auto | cpu | cuda
    dtype: str | None = None  # None: reference precision on CUDA, float32 on CPU
    tf32: bool = False  # opt-in TF32 matmuls for the fp32 metrics on CUDA (no effect on CPU)
    limit: int | None = None
    ray_address: str | None = None
    strict: bool = False
    resume: bool = True
    decode_batch_size: int = 16
    #: without GPUs: "fused" = decode + all metrics in each actor (fewer copies and processes),
    #: "per-metric" = the GPU layout (one actor pool per metric) on CPU
    cpu_layout: str = "fused"
    cpu_replicas: int | None = None  # fused CPU actors; None: one per CPU, one torch thread each
    #: per-metric layout: the decoded pixels go through pixel-store actors (one object-store write
    #: per image, actors/pixel_store.py); False: they travel in the rows, copied at every stage hop
    pixel_store: bool = True
    max_image_pixels: int | None = 178_956_970
    #: seconds a metric's actor pool may take to start before the run ends with what is missing
    pool_start_timeout_s: float = 600.0
    #: memory of each GPU, GB; None: probed on each GPU node before the run
    gpu_memory_gb: float | None = None
    # the earlier tool's model flags (resolved into metrics / options by validate())
    vqa_model: str | None = None
    clip_model: str | None = None
    itm_model: str | None = None
    hps_model: str | None = None
    pickscore_model: str | None = None
    imagereward_ckpt: str | None = None

    def spec(self, metric: str) -> MetricSpec:
        return self.metric_specs.setdefault(metric, MetricSpec())

    def resolve_names(self) -> None:
        """Aliases (clip-flant5-xl ...) and the earlier tool's flags -> scorer names + options, in place.

        Idempotent, so validate() may run more than once. Raises UnknownNameError / ConfigError.
        """
        specs: dict[str, MetricSpec] = {}
        for key, spec in self.metric_specs.items():
            scorer, implied = resolve_name(key)
            spec.options = {**implied, **spec.options}
            if scorer in specs and specs[scorer] is not spec:
                raise ConfigError(f"Settings given twice for {scorer} (as {key!r} and under another name).")
            specs[scorer] = spec
        self.metric_specs = specs
        self.metrics = normalize_metrics(list(self.metrics), self.metric_specs)
        apply_legacy_flags(self, {flag: getattr(self, flag) for flag in LEGACY_MODEL_FLAGS})
        if self.imagereward_ckpt:
            if "imagereward" not in self.metrics:
                raise ConfigError("--imagereward_ckpt given but imagereward is not among --metrics.")
            self.spec("imagereward").options["checkpoint"] = self.imagereward_ckpt

    def validate(self, require_inputs: bool = True) -> None:
        """Resolve names, then check every field and cross-field rule; raise ConfigError saying what is valid.

        require_inputs=False (``janus-ray plan``): folders and weights root may be absent.
        """
        self.resolve_names()
        self._validate_settings()
        if require_inputs:
            self._validate_inputs()

    def _validate_inputs(self) -> None:
        if not self.folders:
            raise ConfigError("No input folders given: pass one or more FOLDER arguments (or `folders:` in the config).")
        for folder in self.folders:
            if not Path(folder).is_dir():
                raise ConfigError(f"Input folder {folder!r} does not exist or is not a directory.")
        if not self.weights_root:
            raise ConfigError("--weights-root is required: the folder holding the model checkpoints.")
        if not Path(self.weights_root).is_dir():
            raise ConfigError(f"--weights-root {self.weights_root!r} does not exist or is not a directory.")
        if self.prompt_json is not None and not Path(self.prompt_json).is_file():
            raise ConfigError(f"--prompt-json {self.prompt_json!r} does not exist.")
        for flag, value in (("--output-dir", self.output_dir), ("--cache-dir", self.cache_dir)):
            # a directory to create or reuse: an existing file there would fail deep inside the run
            if value and Path(value).exists() and not Path(value).is_dir():
                raise ConfigError(f"{flag} {value!r} is a file, not a directory: give a directory (created if missing).")

    def _validate_settings(self) -> None:
        if self.weights_root and not Path(self.weights_root).is_dir():
            raise ConfigError(f"--weights-root {self.weights_root!r} does not exist or is not a directory.")
        if not self.metrics:
            raise ConfigError(f"No metrics selected. Available: {', '.join(SCORERS)}.")
        if len(set(self.metrics)) != len(self.metrics):
            twice = sorted({m for m in self.metrics if self.metrics.count(m) > 1})
            raise ConfigError(f"Metric listed twice: {', '.join(twice)} (after resolving aliases, e.g. "
                              f"openai:ViT-L-14-336 is clipscore): {self.metrics}.")
        for metric in list(self.metric_specs):
            if metric not in self.metrics:
                raise ConfigError(
                    f"Settings given for metric {metric!r}, which is not enabled. Enabled: {', '.join(self.metrics)}."
                )
        for metric, spec in self.metric_specs.items():
            if spec.batch_size is not None and spec.batch_size < 1:
                raise ConfigError(f"Batch size of {metric} must be >= 1, got {spec.batch_size}.")
            if spec.num_gpus is not None and not 0 <= spec.num_gpus:
                raise ConfigError(f"GPU share of {metric} must be >= 0, got {spec.num_gpus}.")
            if spec.num_gpus is not None and spec.num_gpus > 1 and spec.num_gpus != int(spec.num_gpus):
                raise ConfigError(f"GPU share of {metric} above 1 must be a whole number, got {spec.num_gpus}.")
            if spec.dtype not in (None, *DTYPE_NAMES):
                raise ConfigError(f"dtype of {metric} must be float32, bfloat16 or float16, got {spec.dtype!r}.")
            if spec.replicas is not None and spec.replicas < 1:
                raise ConfigError(f"Replicas of {metric} must be >= 1, got {spec.replicas}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}.")
        if self.dtype not in (None, *DTYPE_NAMES):
            raise ConfigError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}.")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}.")
        if self.cpu_layout not in ("fused", "per-metric"):
            raise ConfigError(f"cpu_layout must be 'fused' or 'per-metric', got {self.cpu_layout!r}.")
        if not isinstance(self.pixel_store, bool):
            raise ConfigError(f"pixel_store must be true or false, got {self.pixel_store!r}.")
        if self.cpu_replicas is not None and self.cpu_replicas < 1:
            raise ConfigError(f"cpu_replicas must be >= 1, got {self.cpu_replicas}.")
        if self.decode_batch_size < 1:
            raise ConfigError(f"decode_batch_size must be >= 1, got {self.decode_batch_size}.")
        if self.gpu_memory_gb is not None and not self.gpu_memory_gb > 0:
            raise ConfigError(f"--gpu-memory-gb must be > 0, got {self.gpu_memory_gb}.")
        if not self.pool_start_timeout_s > 0:
            raise ConfigError(f"pool_start_timeout_s must be > 0 seconds, got {self.pool_start_timeout_s}.")


def normalize_metrics(names: list[str], specs: dict[str, MetricSpec]) -> list[str]:
    """Resolve aliases (clip-flant5-xl, pickscore-v1, ...) to scorer names, moving implied options into specs."""
    resolved = []
    for name in names:
        scorer, implied = resolve_name(name)  # raises UnknownNameError listing the valid names
        if implied:
            specs.setdefault(scorer, MetricSpec()).options.update(implied)
        resolved.append(scorer)
    return resolved


def apply_legacy_flags(config: RunConfig, flags: dict[str, str | None]) -> None:
    """Apply the earlier tool's ``--vqa_model`` / ``--hps_model`` ... flags to the metric list."""
    for flag, value in flags.items():
        if value is None:
            continue
        scorer, valid = LEGACY_MODEL_FLAGS[flag]
        if value not in valid:
            extra = ""
            if value == "blip2-flan-t5-xxl":
                extra = " (no t2v_metrics release ever had blip2-flan-t5-xxl; the earlier tool produced no VQAScore with it)"
            raise ConfigError(f"--{flag} {value!r} is not available{extra}. Valid: {', '.join(valid)}.")
        if flag == "hps_model":
            if value in config.metrics:
                continue
            if value == "hpsv2.1" and "hpsv2" in config.metrics:
                # hpsv2.1 takes hpsv2's place (and its settings, unless it has its own)
                config.metrics[config.metrics.index("hpsv2")] = "hpsv2.1"
                if "hpsv2" in config.metric_specs and "hpsv2.1" not in config.metric_specs:
                    config.metric_specs["hpsv2.1"] = config.metric_specs.pop("hpsv2")
            else:  # like the other model flags: the flag enables its metric
                config.metrics.append(value)
            continue
        scorer_name, implied = resolve_name(value)
        if implied:
            config.spec(scorer_name).options.update(implied)
        if scorer_name not in config.metrics:
            config.metrics.append(scorer_name)


#: YAML value types: (accepted types, description); None is accepted for every field whose default is None
_YAML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    **{name: ((str,), "a string") for name in ("weights_root", "prompt_json", "output_dir", "cache_dir", "device",
                                              "dtype", "ray_address", "imagereward_ckpt", *LEGACY_MODEL_FLAGS)},
    **{name: ((bool,), "true or false") for name in ("all_samples", "strict", "resume", "tf32", "pixel_store")},
    **{name: ((int,), "an integer") for name in ("limit", "decode_batch_size", "max_image_pixels")},
    "pool_start_timeout_s": ((int, float), "a number of seconds"),
    "gpu_memory_gb": ((int, float), "a number of GB"),
    "folders": ((list,), "a list of folders"),
    "metrics": ((list,), "a list of metric names"),
    # MetricSpec fields
    "batch_size": ((int,), "an integer"),
    "num_gpus": ((int, float), "a number"),
    "replicas": ((int,), "an integer"),
    "resources": ((dict,), "a mapping of resource name -> amount"),
    "options": ((dict,), "a mapping of option -> value"),
}


def _check_yaml_types(data: dict[str, Any], where: str, nullable: set[str]) -> None:
    """Raise ConfigError for a value of the wrong type (a YAML typo would otherwise fail deep inside)."""
    for key, value in data.items():
        if key not in _YAML_TYPES or (value is None and key in nullable):
            continue
        types, description = _YAML_TYPES[key]
        wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        if key in ("folders", "metrics") and not wrong:
            wrong = not all(isinstance(item, str) for item in value)
        if wrong:
            raise ConfigError(f"{key} in {where} must be {description}, got {value!r}.")


def _metric_spec_from_mapping(metric: str, value: Any) -> MetricSpec:
    if value is True or value is None:
        return MetricSpec()
    if not isinstance(value, dict):
        raise ConfigError(f"metric_specs.{metric} must be a mapping, got {type(value).__name__}.")
    known = {f.name for f in dataclasses.fields(MetricSpec)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in metric_specs.{metric}. Valid: {', '.join(sorted(known))}.")
    _check_yaml_types(value, f"metric_specs.{metric}", nullable={"batch_size", "num_gpus", "dtype"})
    return MetricSpec(**value)


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict of RunConfig fields (unknown keys are an error).

    Relative paths are kept as written, so they are taken from the working directory like the
    command line's (a `ray job submit --working-dir .` job runs the same file), not from the
    YAML's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of settings, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in {path}. Valid: {', '.join(sorted(known))}.")
    for key in ("folders", "metrics"):  # a single name is a one-item list, not a list of characters
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    nullable = {f.name for f in dataclasses.fields(RunConfig) if f.default is None} | {"max_image_pixels"}
    _check_yaml_types(data, str(path), nullable)
    specs = data.pop("metric_specs", None) or {}
    if not isinstance(specs, dict):
        raise ConfigError(f"metric_specs in {path} must be a mapping of metric -> settings.")
    data["metric_specs"] = {}
    for metric, value in specs.items():
        scorer, implied = resolve_name(metric)
        spec = _metric_spec_from_mapping(metric, value)
        spec.options = {**implied, **spec.options}
        data["metric_specs"][scorer] = spec
    return data


__all__ = [
    "DEFAULT_METRICS",
    "MetricSpec",
    "RunConfig",
    "UnknownNameError",
    "apply_legacy_flags",
    "load_yaml_config",
    "normalize_metrics",
]
