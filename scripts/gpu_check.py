#!/usr/bin/env python
"""One prepared command that proves the CUDA path within a hard time budget and records every figure.

    python scripts/gpu_check.py --out gpu_check_out              # on one GPU (default budget 420 s)
    python scripts/gpu_check.py --dry-run --out /tmp/gpu_dry     # the same code on CPU, tiny models, < 2 min

Parts, each recorded even when it fails or is skipped (its reason is written, the others go on):

a. parity: the parity fixtures on the device at float32 (every scorer output within 1e-4 of the
   goldens; vqascore relative), then the drift of each precision option (each reference's own
   dtype, bf16, fp16, TF32, VQAScore SDPA) against the same float32 goldens;
b. real-size random-weight models built directly on the device, in memory (no files): model-only
   throughput per metric over a batch-size sweep (images/s, peak GPU memory per batch size),
   VQAScore (bf16) with eager and SDPA T5 attention, and ``torch.compile`` of its T5 if the budget
   allows. Pixels are random tensors of the model's input size and every prompt is distinct
   (no text cache hits): the figures are the models' own cost, without decoding;
c. the pipeline end to end on this machine under a local Ray (tiny fixture models, generated
   images): images/s and GPU busy share. Skipped with a clear line when ``import ray`` fails;
d. ``gpu_check.json`` and ``gpu_check.md`` (machine, versions, every figure) in ``--out``, the
   markdown also printed. ``--write-table`` writes the measured per-metric cost table to
   ``janus_ray/metrics/measured_costs.json`` (the planner reads it); in ``--dry-run`` the table only
   goes to ``--out`` (CPU numbers of tiny models must never stand in for GPU costs).

Imports neither Ray nor open_clip at module level: the GPU machine may have neither (HPSv2 then
skips with its reason; see ``scripts/gpu_kit.sh`` to bring the open_clip wheels).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: this checkout's janus_ray wins
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from janus_ray.bench import parity  # noqa: E402
from janus_ray.bench import real_size as rs  # noqa: E402
from janus_ray.metrics import get_scorer_class, load_scorer  # noqa: E402
from janus_ray.metrics.base import set_tf32  # noqa: E402

WEIGHTS = parity.PARITY / "weights"
TABLE_PATH = REPO / "janus_ray" / "metrics" / "measured_costs.json"
METRICS = ("vqascore", "clipscore", "pickscore", "itmscore", "hpsv2", "imagereward")  # hpsv2.1 = hpsv2's model
GPU_BATCHES = {"vqascore": (1, 8, 16, 32), "default": (1, 16, 64, 128)}
DRY_BATCHES = {"vqascore": (1, 2), "default": (1, 4)}
VERSION_PACKAGES = ("torch", "torchvision", "transformers", "timm", "open_clip_torch", "ftfy", "ray", "numpy",
                    "pandas", "pyarrow", "safetensors", "sentencepiece", "tokenizers", "pillow", "scipy")


# ----- budget ------------------------------------------------------------------------------------
class Budget:
    """A hard wall-clock budget: parts ask before starting and are skipped with the reason if short."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def allows(self, needed: float) -> bool:
        return self.left() >= needed


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"


# ----- machine and versions ----------------------------------------------------------------------
def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": str(device),
        "torch_cuda": torch.version.cuda,
        "versions": {name: package_version(name) for name in VERSION_PACKAGES},
        "importable": {name: importlib.util.find_spec(name) is not None for name in ("ray", "open_clip", "ftfy")},
        "tf32_defaults": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 2),
                    compute_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count())
        with contextlib.suppress(Exception):
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    else:
        info["gpu"] = None
    return info


# ----- part a: parity ----------------------------------------------------------------------------
#: options of the drift table on CUDA, most useful first (the budget may cut the tail)
#: (tf32 is measured in part a already: CPU cannot show its drift at all)
GPU_DRIFT_OPTIONS = ("sdpa-bfloat16", "bfloat16", "float16", "sdpa-float32")


def part_parity(device: torch.device, budget: Budget, dry_run: bool) -> dict[str, Any]:
    """float32 parity per scorer output (TF32 off) and the drift at each reference dtype; the other
    options' drift comes after the throughput part (part_drift)."""
    result: dict[str, Any] = {"float32": [], "drift": [], "skipped": []}

    def skipped(scorer: str, reason: str) -> None:
        result["skipped"].append({"scorer": scorer, "reason": reason})
        log(f"parity: {scorer} skipped ({reason})")

    rows = parity.drift_rows(parity.OPTIONS_BY_NAME["float32"], device=str(device), scorers=[*METRICS, "hpsv2.1"],
                             on_skip=skipped)
    for row in rows:
        row["pass"] = parity.within_float32_tolerance(row)
    result["float32"] = rows
    result["float32_pass"] = bool(rows) and all(r["pass"] for r in rows)
    for name in ["reference"] if dry_run else ["reference", "tf32"]:
        result["drift"] += parity.drift_rows(parity.OPTIONS_BY_NAME[name], device=str(device),
                                             scorers=[*METRICS, "hpsv2.1"], on_skip=skipped)
    return result


def part_drift(result: dict[str, Any], device: torch.device, budget: Budget, dry_run: bool) -> dict[str, Any]:
    """Each option's drift from the float32 goldens, appended to the parity result while budget lasts.

    Runs after the throughput part: the targets (throughput, memory, float32 parity) come first.
    """
    def skipped(scorer: str, reason: str) -> None:
        result["skipped"].append({"scorer": scorer, "reason": reason})
        log(f"drift: {scorer} skipped ({reason})")

    # The dry run keeps to the reference precisions (part_parity); on CUDA every other option.
    names = [] if dry_run else list(GPU_DRIFT_OPTIONS)
    for name in names:
        if not budget.allows(30 if not dry_run else 5):
            result["skipped"].append({"option": name, "reason": f"budget ({budget.left():.0f} s left)"})
            continue
        result["drift"] += parity.drift_rows(parity.OPTIONS_BY_NAME[name], device=str(device),
                                             scorers=[*METRICS, "hpsv2.1"], on_skip=skipped)
    return result


# ----- part b: real-size models in memory --------------------------------------------------------
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def fixture_json(*parts: str) -> dict:
    return json.loads(WEIGHTS.joinpath(*parts).read_text(encoding="utf-8"))


def build_real_size(metric: str, scorer, scale: float, device: torch.device) -> int:
    """Swap the tiny fixture model of ``scorer`` for a random-weight one of the real size (x scale),
    built directly on ``device``; return the input image side. The scorer's tokenizer, prompt
    handling and forward stay the fixture's: only the model (shapes, FLOPs, memory) changes."""
    from torch import nn

    if metric in ("clipscore", "pickscore"):
        from transformers import CLIPConfig, CLIPModel

        folder = "clip-vit-large-patch14-336" if metric == "clipscore" else "PickScore_v1"
        dims = rs.clip_dims(scale, "vit-l-336" if metric == "clipscore" else "vit-h")
        config = CLIPConfig.from_dict(rs.deep_update(fixture_json(folder, "config.json"), dims))
        with torch.device(device):
            scorer.model = CLIPModel(config).to(dtype=scorer.dtype).eval()
        scorer.clear_text_cache()
        return dims["vision_config"]["image_size"]
    if metric in ("hpsv2", "hpsv2.1"):
        import open_clip

        config = rs.hps_config(scale)
        with torch.device(device):
            scorer.model = open_clip.CLIP(**config).eval()
        scorer._text_cache.clear()
        return config["vision_cfg"]["image_size"]
    if metric == "itmscore":
        from transformers import Blip2Config, Blip2ForImageTextRetrieval

        dims = rs.blip2_dims(scale)
        config = Blip2Config.from_dict(rs.deep_update(fixture_json("blip2-itm-vit-g", "config.json"), dims))
        config._attn_implementation = "eager"
        with torch.device(device):
            scorer.model = Blip2ForImageTextRetrieval(config).eval()
        scorer.num_query_tokens = scorer.model.query_tokens.shape[1]
        return dims["vision_config"]["image_size"]
    if metric == "imagereward":
        from transformers import BlipVisionConfig

        from janus_ray.metrics import image_reward as ir

        vision, med_updates = rs.imagereward_dims(scale)
        med = {**fixture_json("ImageReward", "med_config.json"), **med_updates}
        text_config = scorer.text_config(med, WEIGHTS / ir.MED_CONFIG_FILE, encoder_width=vision["width"])
        vision_config = BlipVisionConfig(
            hidden_size=vision["width"], intermediate_size=vision["width"] * ir.VIT_MLP_RATIO,
            num_hidden_layers=vision["layers"], num_attention_heads=vision["heads"], image_size=vision["image_size"],
            patch_size=vision["patch_size"], hidden_act="gelu", layer_norm_eps=ir.VIT_LAYER_NORM_EPS,
            attn_implementation="eager")
        with torch.device(device):
            model = ir.ImageRewardModel(vision_config, text_config).eval()
        model.vision.to(scorer.dtype)
        model.text.to(scorer.dtype)
        scorer.model = model
        return vision["image_size"]
    if metric == "vqascore":
        from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

        clip = rs.clip_dims(scale, "vit-l-336")["vision_config"]
        vision_config = CLIPVisionConfig(**{k: v for k, v in clip.items() if k != "projection_dim"},
                                         hidden_act="quick_gelu")
        fixture = fixture_json("clip-flant5-xxl", "config.json")
        dims = rs.t5_dims(scale, "clip-flant5-xxl")
        real_size_tokenizer(scorer)
        t5_fields = set(T5Config().to_dict()) - {"model_type", "architectures", "transformers_version", "dtype"}
        kwargs = {k: v for k, v in {**fixture, **dims}.items() if k in t5_fields}
        kwargs.update(vocab_size=scorer.vocab_rows, use_cache=False, tie_word_embeddings=False)
        attention = scorer.options.get("attn_implementation", "eager")
        t5_config = T5Config(**kwargs, attn_implementation=attention)
        scorer.vision_tower = scorer.mm_projector = scorer.t5 = None
        gc.collect()
        with torch.device(device), default_dtype(scorer.dtype):
            scorer.vision_tower = CLIPVisionModel(vision_config).eval()
            scorer.mm_projector = nn.Sequential(nn.Linear(clip["hidden_size"], dims["d_model"]), nn.GELU(),
                                                nn.Linear(dims["d_model"], dims["d_model"])).eval()
            scorer.t5 = T5ForConditionalGeneration(t5_config).eval()
        return clip["image_size"]
    raise ValueError(f"no real-size builder for {metric}")


def real_size_tokenizer(scorer) -> None:
    """Give a VQAScorer FlanT5's real piece count (32000 + 100 extra ids), so prompts have about the
    real number of tokens (the fixture's 400-piece model splits words into many more pieces)."""
    from janus_ray.metrics.vqa_score import ANSWER, SYSTEM_MSG, SentencePieceT5Tokenizer

    source = WEIGHTS / "clip-flant5-xxl"
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_spiece_"))
    try:
        spiece = rs.build_t5_spiece(source / "spiece.model", WEIGHTS / "clip-vit-large-patch14-336" / "vocab.json")
        (folder / "spiece.model").write_bytes(spiece)
        config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        config.pop("added_tokens_decoder", None)  # the fixture's ids belong to its 400-piece model
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        scorer.tokenizer = SentencePieceT5Tokenizer(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    scorer.prefix_ids = scorer.tokenizer.encode(SYSTEM_MSG + " USER: ")
    scorer.answer_ids = scorer.tokenizer.encode(ANSWER)
    scorer.vocab_rows = len(scorer.tokenizer)


def model_bytes(scorer) -> int:
    seen, total = set(), 0
    for module in (getattr(scorer, n, None) for n in ("model", "vision_tower", "mm_projector", "t5")):
        if isinstance(module, torch.nn.Module):
            for t in [*module.parameters(), *module.buffers()]:
                if t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(scorer, side: int, batch: int, device: torch.device, min_seconds: float, max_iters: int,
                 counter: list[int]) -> dict[str, Any]:
    """One warm-up batch, then batches until ``min_seconds`` or ``max_iters``: images/s and peak memory."""
    from janus_ray.bench.inputs import make_prompts

    def one() -> None:
        counter[0] += 1
        prompts = [f"{p} #{counter[0]}" for p in make_prompts(batch, seed=counter[0])]  # never a cache hit
        pixels = torch.randn(batch, 3, side, side, device=device)
        with torch.inference_mode():
            out = scorer.forward(pixels, prompts)
        next(iter(out.values())).float().sum().item()  # waits for the device

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    one()
    synchronize(device)
    start, iters = time.perf_counter(), 0
    while iters < max_iters and (iters == 0 or time.perf_counter() - start < min_seconds):
        one()
        iters += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    row = {"batch_size": batch, "iterations": iters, "seconds": round(seconds, 4),
           "images_per_s": round(batch * iters / seconds, 3)}
    row["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 3) if device.type == "cuda" else None
    return row


def sweep(metric: str, scorer, side: int, batches: tuple[int, ...], device: torch.device, budget: Budget,
          dry_run: bool, counter: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        if not budget.allows(20 if not dry_run else 3):
            rows.append({"batch_size": batch, "skipped": f"budget ({budget.left():.0f} s left)"})
            continue
        try:
            rows.append(time_batches(scorer, side, batch, device, min_seconds=0.3 if dry_run else 2.0,
                                     max_iters=2 if dry_run else 50, counter=counter))
        except torch.OutOfMemoryError as exc:
            rows.append({"batch_size": batch, "error": error_text(exc)})
            torch.cuda.empty_cache()
            break  # larger batches cannot fit either
        log(f"throughput {metric} batch {batch}: {rows[-1]}")
    return rows


#: the fp32 metrics' opt-ins, measured at the best batch size of their default sweep
OPT_INS = (("tf32", "float32", True), ("bfloat16", "bfloat16", False))
OPT_IN_METRICS = ("clipscore", "pickscore", "imagereward")


def measure(result: dict[str, Any], label: str, metric: str, options: dict[str, Any], dtype: str | None,
            batches: tuple[int, ...], tf32: bool, ctx: dict[str, Any]) -> Any:
    """Build ``metric`` at real size on the device and sweep ``batches``; the entry goes to result.
    Returns the scorer when ``ctx['keep']`` names this label (for torch.compile later), else None."""
    device, budget, dry_run = ctx["device"], ctx["budget"], ctx["dry_run"]
    entry: dict[str, Any] = {"metric": metric, "options": options, "dtype": dtype, "tf32": tf32}
    result["metrics"][label] = entry
    if not budget.allows(40 if not dry_run else 4):
        entry["skipped"] = f"budget ({budget.left():.0f} s left)"
        return None
    scorer = None
    try:
        if dtype is None:  # imports the scorer's module: inside the try (hps_v2 needs open_clip)
            dtype = entry["dtype"] = get_scorer_class(metric).cuda_dtype
        set_tf32(tf32)
        scorer = load_scorer(metric, WEIGHTS, device=str(device), dtype=dtype, **options)
        start = time.perf_counter()
        side = build_real_size(metric, scorer, ctx["scale"], device)
        synchronize(device)
        entry.update(build_seconds=round(time.perf_counter() - start, 2), image_side=side,
                     weights_gb=round(model_bytes(scorer) / 1e9, 3))
        if metric == "vqascore":  # encoder length per pair: text ids (minus the image slot) + patches
            from janus_ray.bench.inputs import make_prompts

            text = [len(scorer.input_ids(p)) - 1 for p in make_prompts(64)]
            patches = (side // scorer.vision_tower.config.patch_size) ** 2
            entry["encoder_tokens_per_pair"] = round(sum(text) / len(text) + patches, 1)
        entry["sweep"] = sweep(label, scorer, side, batches, device, budget, dry_run, ctx["counter"])
        if label == ctx.get("keep"):
            scorer.image_side = side
            return scorer
    except ImportError as exc:  # open_clip absent on a bare GPU machine
        entry["skipped"] = f"{error_text(exc)} (bring the wheels: scripts/gpu_kit.sh)"
        log(f"throughput {label}: {entry['skipped']}")
    except Exception as exc:  # noqa: BLE001 - one metric's failure is recorded, the others go on
        entry["error"] = error_text(exc)
        entry["traceback"] = traceback.format_exc(limit=6)
        log(f"throughput {label}: {entry['error']}")
    finally:
        set_tf32(False)
        scorer = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return None


def part_throughput(device: torch.device, budget: Budget, dry_run: bool, scale: float,
                    compile_model: bool) -> dict[str, Any]:
    """Default precisions over the batch sweep first, then VQAScore SDPA, the fp32 metrics' opt-ins
    (TF32, bf16) at their best batch, and torch.compile last: the budget cuts the least needed."""
    result: dict[str, Any] = {"scale": scale, "metrics": {}, "vqascore_attention": {}, "compile": None}
    ctx = {"device": device, "budget": budget, "dry_run": dry_run, "scale": scale, "counter": [0],
           "keep": "vqascore" if compile_model else None}
    sweeps = DRY_BATCHES if dry_run else GPU_BATCHES
    kept = None
    plan = [(m, m, {}) for m in METRICS]
    plan.insert(1, ("vqascore[sdpa]", "vqascore", {"attn_implementation": "sdpa"}))
    for label, metric, options in plan:
        # dtype None: the reference precision (bf16 VQA, fp16 autocast ITM/HPS, fp32 the rest)
        scorer = measure(result, label, metric, options, None, sweeps.get(metric, sweeps["default"]), False, ctx)
        kept = scorer if scorer is not None else kept
    for metric in OPT_IN_METRICS:
        best = best_row(result["metrics"].get(metric, {}))
        for name, dtype, tf32 in OPT_INS:
            label = f"{metric}[{name}]"
            if best is None:
                result["metrics"][label] = {"metric": metric, "skipped": "the default run has no figures"}
                continue
            measure(result, label, metric, {}, dtype, (best["batch_size"],), tf32, ctx)
    if kept is not None:
        result["compile"] = compile_vqa(kept, kept.image_side, device, budget, dry_run, ctx["counter"])
        kept = None
        gc.collect()
    elif compile_model:
        result["compile"] = {"skipped": "VQAScore did not run"}
    for label in ("vqascore", "vqascore[sdpa]"):
        best = best_row(result["metrics"].get(label, {}))
        result["vqascore_attention"][label] = best and best["images_per_s"]
    return result


def compile_vqa(scorer, side: int, device: torch.device, budget: Budget, dry_run: bool, counter: list[int]) -> dict:
    """VQAScore with its T5 under torch.compile (the tower stays eager): images/s at one batch size."""
    if dry_run:
        return {"skipped": "dry run (CPU compile is not what the GPU run would measure)"}
    if not budget.allows(150):
        return {"skipped": f"budget ({budget.left():.0f} s left)"}
    batch = 16
    eager = scorer.t5
    try:
        scorer.t5 = torch.compile(eager)
        start = time.perf_counter()
        row = time_batches(scorer, side, batch, device, min_seconds=3.0, max_iters=10, counter=counter)
        row["compile_and_run_seconds"] = round(time.perf_counter() - start, 1)
        return row
    except Exception as exc:  # noqa: BLE001
        return {"error": error_text(exc)}
    finally:
        scorer.t5 = eager


def best_row(entry: dict[str, Any]) -> dict[str, Any] | None:
    rows = [r for r in entry.get("sweep", []) if "images_per_s" in r]
    return max(rows, key=lambda r: r["images_per_s"]) if rows else None


def cost_table(throughput: dict[str, Any], gpu: str) -> dict[str, Any]:
    """The planner's table: per metric, the fastest measured batch and its memory.

    activation_gb_per_image is the slope of peak memory over batch size (two largest measured
    batches), so the planner can size other batches: peak ~ weights_gb + batch * slope.
    """
    metrics = {}
    for label, entry in throughput["metrics"].items():
        if label != entry["metric"]:
            continue  # option variants (sdpa) are not the defaults the planner sizes
        best = best_row(entry)
        if best is None:
            continue
        measured = sorted((r for r in entry["sweep"] if r.get("peak_gpu_memory_gb") is not None),
                          key=lambda r: r["batch_size"])
        slope = 0.0
        if len(measured) >= 2:
            a, b = measured[-2], measured[-1]
            slope = max(0.0, (b["peak_gpu_memory_gb"] - a["peak_gpu_memory_gb"]) / (b["batch_size"] - a["batch_size"]))
        metrics[entry["metric"]] = {
            "dtype": entry["dtype"],
            "batch_size": best["batch_size"],
            "images_per_s": best["images_per_s"],
            "peak_gpu_memory_gb": best["peak_gpu_memory_gb"] if best["peak_gpu_memory_gb"] is not None else 0.0,
            "weights_gb": entry["weights_gb"],
            "activation_gb_per_image": round(slope, 4),
        }
    if "hpsv2" in metrics:  # same architecture and code: HPSv2.1 costs what HPSv2 costs
        metrics["hpsv2.1"] = dict(metrics["hpsv2"])
    return {"gpu": gpu, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "metrics": metrics}


# ----- part c: pipeline --------------------------------------------------------------------------
class GpuBusySampler:
    """GPU busy share from ``nvidia-smi`` sampled every 200 ms in a thread (None without a GPU)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            self._stop.wait(0.2)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(timeout=10)

    def share(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def part_pipeline(device: torch.device, budget: Budget, dry_run: bool, n_images: int) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "Ray is not installed on this machine (import ray fails): pipeline part skipped. "
                           "Bring it in parts: scripts/gpu_kit.sh fetch-ray (README 'GPU check')."}
    needed = 60 if dry_run else 120
    if not budget.allows(needed):
        return {"skipped": f"budget ({budget.left():.0f} s left, needs ~{needed} s)"}
    from janus_ray.bench.inputs import make_inputs, make_prompts
    from janus_ray.config import RunConfig
    from janus_ray.pipeline import evaluate

    metrics = ["clipscore", "pickscore"] if dry_run else ["vqascore", "clipscore", "itmscore", "pickscore", "imagereward"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_pipeline_") as tmp:
        root = Path(tmp)
        info = make_inputs(root / "inputs", 1, make_prompts(n_images))
        config = RunConfig(folders=[str(f) for f in info["folders"]], weights_root=str(WEIGHTS), metrics=metrics,
                           output_dir=str(root / "out"), device="cuda" if device.type == "cuda" else "cpu",
                           resume=False, prompt_json=str(info["prompt_json"]))
        if device.type == "cuda":  # every metric on the one GPU (the default gives VQAScore a whole GPU)
            from janus_ray.config import MetricSpec

            config.metric_specs = {m: MetricSpec(num_gpus=round(0.95 / len(metrics), 3)) for m in metrics}
        config.validate()
        with GpuBusySampler(device.type == "cuda") as busy:
            start = time.perf_counter()
            result = evaluate(config, stream=sys.stderr)
            seconds = time.perf_counter() - start
        rows = int(result.n_rows)
        return {"metrics": metrics, "images": rows, "seconds": round(seconds, 2),
                "images_per_s": round(rows / seconds, 3), "gpu_busy_share": busy.share(),
                "failed_rows": int(result.n_failed),
                "note": "tiny fixture models: the pipeline's own ceiling (decode, transfer, Ray), not model cost"}


# ----- part d: report ----------------------------------------------------------------------------
def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# gpu_check {'(dry run, CPU, tiny models)' if report['dry_run'] else ''}".rstrip(), "",
             f"- when: {report['started_at']}, {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget",
             f"- machine: {m['host']}, {m['platform']}, Python {m['python']}, {m['cpus']} CPUs, "
             f"GPU {m.get('gpu')} ({m.get('gpu_memory_gb', '-')} GB), CUDA {m['torch_cuda']}, driver {m.get('driver', '-')}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             "- missing: " + (", ".join(k for k, v in m["versions"].items() if not v) or "none"), ""]
    a = report["parity"]
    lines += ["## a. Parity on the device", ""]
    if "error" in a:
        lines += [f"ERROR: {a['error']}", ""]
    else:
        verdict = "PASS" if a["float32_pass"] else "FAIL"
        lines += [f"float32 within {parity.FLOAT32_ATOL:g} of the goldens (vqascore relative): **{verdict}**", "",
                  parity.format_table(a["float32"]), ""]
        if a["drift"]:
            lines += ["Drift of each option from the float32 goldens:", "", parity.format_table(a["drift"]), ""]
        lines += [f"- skipped: {s}" for s in a["skipped"]] + [""]
    b = report["throughput"]
    lines += [f"## b. Model-only throughput, real-size random weights (scale {b.get('scale')})", ""]
    if "error" in b:
        lines += [f"ERROR: {b['error']}", ""]
    else:
        lines += ["| metric | dtype | weights GB | batch | images/s | peak GPU GB |", "|---|---|---:|---:|---:|---:|"]
        for label, entry in b["metrics"].items():
            if "sweep" not in entry:
                lines.append(f"| {label} | {entry.get('dtype', '-')} | - | - | {entry.get('skipped') or entry.get('error')} | - |")
                continue
            for r in entry["sweep"]:
                result = r.get("images_per_s", r.get("skipped") or r.get("error"))
                lines.append(f"| {label} | {entry['dtype']} | {entry['weights_gb']} | {r['batch_size']} | {result} | "
                             f"{r.get('peak_gpu_memory_gb', '-')} |")
            if "error" in entry:
                lines.append(f"| {label} | | | | error: {entry['error']} | |")
        lines += ["", f"VQAScore best images/s, eager vs SDPA: {b['vqascore_attention']}",
                  f"VQAScore T5 under torch.compile: {b['compile']}", ""]
    c = report["pipeline"]
    lines += ["## c. Pipeline end to end (local Ray)", ""]
    if "images_per_s" in c:
        lines += [f"{c['images']} images x {', '.join(c['metrics'])}: {c['seconds']} s, {c['images_per_s']} images/s "
                  f"(cold start included), GPU busy share {c['gpu_busy_share']}, failed rows {c['failed_rows']}. "
                  f"{c['note']}.", ""]
    else:
        lines += [f"SKIPPED: {c['skipped']}" if "skipped" in c else f"ERROR: {c.get('error')}", ""]
    if report.get("table_written"):
        lines += [f"Cost table written to {report['table_written']}", ""]
    return "\n".join(lines)


def run_part(name: str, fn, *args) -> dict[str, Any]:
    log(f"part {name} ...")
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - every part is recorded, even a failing one
        log(f"part {name} failed: {error_text(exc)}")
        return {"error": error_text(exc), "traceback": traceback.format_exc(limit=8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_out", help="directory for gpu_check.json / gpu_check.md")
    parser.add_argument("--budget", type=float, help="hard time budget in seconds (default 420; 110 in the dry run)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny fixtures, real-size models at --scale")
    parser.add_argument("--scale", type=float, help="model size factor (default 1.0 on GPU, 0.05 in the dry run)")
    parser.add_argument("--write-table", action="store_true",
                        help=f"also write the measured cost table to {TABLE_PATH.relative_to(REPO)} (GPU only; "
                             "it is always written to OUT/measured_costs.json)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile of VQAScore's T5")
    parser.add_argument("--no-pipeline", action="store_true", help="skip part c (the pipeline under Ray)")
    parser.add_argument("--pipeline-images", type=int, help="images for part c (default 256 on GPU, 8 in the dry run)")
    args = parser.parse_args(argv)

    if args.dry_run and args.write_table:
        parser.error("--write-table needs a GPU run: CPU figures of tiny models must not become the planner's table")
    if args.budget is None:
        args.budget = 110.0 if args.dry_run else 420.0
    budget = Budget(args.budget)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # the goldens were made single-threaded
    elif torch.cuda.is_available():
        device = torch.device("cuda:0")
    else:
        parser.error("no CUDA device: run with --dry-run on CPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "dry_run": args.dry_run,
        "budget_s": args.budget,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine_info(device),
    }
    set_tf32(False)  # strict float32 unless an option asks (PyTorch enables TF32 convolutions by default)
    report["parity"] = run_part("a (float32 parity)", part_parity, device, budget, args.dry_run)
    scale = args.scale if args.scale is not None else (0.05 if args.dry_run else 1.0)
    report["throughput"] = run_part("b (throughput)", part_throughput, device, budget, args.dry_run, scale,
                                    not args.no_compile)
    if "error" not in report["parity"]:
        drift = run_part("a (drift table)", part_drift, report["parity"], device, budget, args.dry_run)
        if "error" in drift:
            report["parity"]["drift_error"] = drift["error"]
    n_images = args.pipeline_images or (8 if args.dry_run else 256)
    if args.no_pipeline:
        report["pipeline"] = {"skipped": "--no-pipeline"}
    else:
        report["pipeline"] = run_part("c (pipeline)", part_pipeline, device, budget, args.dry_run, n_images)
    if "error" not in report["throughput"]:
        table = cost_table(report["throughput"], report["machine"].get("gpu") or "cpu (dry run)")
        report["cost_table"] = table
        # Always into --out (only that folder comes back from a device machine); into the package
        # only from a real GPU run with --write-table.
        targets = [out / "measured_costs.json"] + ([TABLE_PATH] if args.write_table and not args.dry_run else [])
        if table["metrics"]:
            for target in targets:
                target.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
            report["table_written"] = ", ".join(str(t) for t in targets)
    report["seconds"] = round(budget.elapsed(), 1)
    report["within_budget"] = report["seconds"] <= args.budget
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    text = markdown(report)
    (out / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if report["parity"].get("float32_pass") else 1


if __name__ == "__main__":
    sys.exit(main())
