"""A weights root with every architecture at its REAL size and random weights, in the real formats.

The scorers only care about shapes, file formats and key names, so a random-weight model of the
real size has the real FLOPs and the real memory footprint: GPU throughput measured with it is
the throughput of the real checkpoints, without downloading anything. The scores are meaningless.

What is written (the layout ``janus_ray.metrics.weights.LAYOUT_HELP`` describes):

=============================  ===========================================  ======================
folder / file                  architecture (real size)                     format, dtype
=============================  ===========================================  ======================
clip-vit-large-patch14-336/    CLIP ViT-L/14 @336 + text 12x768 (CLIPScore,  HF CLIPModel folder,
                               and VQAScore's vision tower)                 model.safetensors fp32
PickScore_v1/                  CLIP ViT-H/14 + text 24x1024                 same
HPSv2/HPS_v2_compressed.pt     open_clip ViT-H-14 (x2: v2.0 and v2.1)       torch.save
HPSv2/HPS_v2.1_compressed.pt                                                {'state_dict'}, fp16
blip2-itm-vit-g/               EVA ViT-g (39x1408) + Q-Former 12x768        HF folder, fp32
ImageReward/ImageReward.pt     BLIP ViT-L/16 + BERT-base MED + reward MLP   torch.save state_dict
bert-base-uncased/             (tokenizer only)                             fp32
clip-flant5-xxl/ (or -xl)      FlanT5-XXL 24+24 x 4096 (XL: 24+24 x 2048)   safetensors shards +
                               + mlp2x_gelu projector                       index.json, bf16
=============================  ===========================================  ======================

Tokenizer files are copied from the tiny parity fixtures: their vocabularies are small, but every
embedding and ``lm_head`` keeps its real vocabulary size (CLIP 49408, BERT 30523/30524, T5 32128),
so memory and FLOPs are real. VQAScore slices its embeddings to ``len(tokenizer)``, so its
``spiece.model`` is rebuilt with the real piece count (32000, + 100 extra ids = 32100 rows, as
FlanT5's) from the fixture's pieces plus English pieces taken from CLIP's BPE vocabulary, which
also keeps the prompt token counts close to the real tokenizer's.

Memory: nothing is instantiated. The key names and shapes come from the model built on the meta
device; each tensor is drawn on its own, cast to the file dtype and appended to the current shard,
so host memory peaks at one shard (``shard_bytes``, 2 GB by default) plus one tensor in fp32
(FlanT5-XXL's 32128 x 4096 embedding: 0.5 GB). The single-file formats the scorers require
(CLIP/PickScore/BLIP-2 ``model.safetensors``, HPS and ImageReward ``.pt``) are held whole: 4.7 GB at
most (BLIP-2 in fp32).

Sizes at scale 1: 38.4 GB on disk, 16.2 B parameters, with FlanT5-XXL (22.3 GB of it); 21.8 GB with
``--vqa-model clip-flant5-xl``. ``scale`` < 1 shrinks widths (whole attention heads, head size kept), depths and
MLP sizes proportionally (vocabularies, image and patch sizes stay real) so that the same code
path runs on a CPU in seconds: ``python -m benchmarks.real_size OUT --scale 0.05``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from janus_ray.demo import FIXTURE_WEIGHTS
from janus_ray.tiny_weights import meta_shapes, random_tensor

MARKER = "janus_ray_real_size.json"
GENERATOR_VERSION = 1
ALL_METRICS = ("clipscore", "pickscore", "hpsv2", "hpsv2.1", "itmscore", "imagereward", "vqascore")
VQA_MODELS = ("clip-flant5-xxl", "clip-flant5-xl")
T5_PIECES = 32000  # FlanT5's spiece.model; + extra_ids 100 = 32100 = len(tokenizer) in t2v_metrics
T5_VOCAB = 32128  # FlanT5 config vocab_size (embedding and lm_head rows in the checkpoint)
CLIP_VOCAB = 49408
BERT_VOCAB_BLIP2 = 30523  # bert-base-uncased 30522 + [DEC]
BERT_VOCAB_IMAGEREWARD = 30524  # + [DEC] + [ENC]
DEFAULT_SHARD_BYTES = 2 * 1024**3


# ----- dimensions ------------------------------------------------------------------------------------
def heads(n: int, scale: float) -> int:
    """Attention heads at ``scale`` (head size is kept, so widths scale in whole heads)."""
    return max(1, round(n * scale))


def layers(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def multiple(x: float, of: int) -> int:
    return max(of, int(round(x / of)) * of)


def clip_dims(scale: float, kind: str) -> dict[str, Any]:
    """HF CLIPModel config overrides. ``kind``: 'vit-l-336' (openai ViT-L/14-336) or 'vit-h' (laion ViT-H/14)."""
    if kind == "vit-l-336":  # openai/clip-vit-large-patch14-336
        v_heads, v_head, v_layers, image = 16, 64, 24, 336
        t_heads, t_layers, proj = 12, 12, 768
    else:  # yuvalkirstain/PickScore_v1 = laion/CLIP-ViT-H-14-laion2B-s32B-b79K
        v_heads, v_head, v_layers, image = 16, 80, 32, 224
        t_heads, t_layers, proj = 16, 24, 1024
    v_width = heads(v_heads, scale) * v_head
    t_width = heads(t_heads, scale) * 64
    return {
        "projection_dim": multiple(proj * scale, 8),
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": 4 * v_width,
            "num_attention_heads": heads(v_heads, scale),
            "num_hidden_layers": layers(v_layers, scale),
            "image_size": image,
            "patch_size": 14,
            "projection_dim": multiple(proj * scale, 8),
        },
        "text_config": {
            "hidden_size": t_width,
            "intermediate_size": 4 * t_width,
            "num_attention_heads": heads(t_heads, scale),
            "num_hidden_layers": layers(t_layers, scale),
            "max_position_embeddings": 77,
            "vocab_size": CLIP_VOCAB,
            "projection_dim": multiple(proj * scale, 8),
        },
    }


def hps_config(scale: float) -> dict[str, Any]:
    """open_clip ViT-H-14 model_cfg (what hpsv2 builds), scaled."""
    v_heads, t_heads = heads(16, scale), heads(16, scale)
    return {
        "embed_dim": multiple(1024 * scale, 8),
        "vision_cfg": {"image_size": 224, "layers": layers(32, scale), "width": v_heads * 80, "head_width": 80, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": CLIP_VOCAB, "width": t_heads * 64, "heads": t_heads, "layers": layers(24, scale)},
    }


def blip2_dims(scale: float) -> dict[str, Any]:
    """Salesforce/blip2-itm-vit-g: EVA ViT-g/14 (39 x 1408, MLP 6144) + Q-Former (BERT-base, 32 queries)."""
    v_width = heads(16, scale) * 88
    q_width = heads(12, scale) * 64
    return {
        "num_query_tokens": 32,
        "image_text_hidden_size": multiple(256 * scale, 8),
        "vision_config": {
            "hidden_size": v_width,
            "intermediate_size": multiple(6144 * v_width / 1408, 8),
            "num_attention_heads": heads(16, scale),
            "num_hidden_layers": layers(39, scale),
            "image_size": 224,
            "patch_size": 14,
        },
        "qformer_config": {
            "hidden_size": q_width,
            "intermediate_size": 4 * q_width,
            "num_attention_heads": heads(12, scale),
            "num_hidden_layers": layers(12, scale),
            "encoder_hidden_size": v_width,
            "cross_attention_frequency": 2,
            "vocab_size": BERT_VOCAB_BLIP2,
            "max_position_embeddings": 512,
        },
    }


def imagereward_dims(scale: float) -> tuple[dict[str, int], dict[str, Any]]:
    """(vision_config.json, med_config.json overrides): BLIP ViT-L/16 + BERT-base MED."""
    v_heads, t_heads = heads(16, scale), heads(12, scale)
    vision = {"image_size": 224, "patch_size": 16, "width": v_heads * 64, "layers": layers(24, scale), "heads": v_heads}
    med = {
        "hidden_size": t_heads * 64,
        "intermediate_size": 4 * t_heads * 64,
        "num_attention_heads": t_heads,
        "num_hidden_layers": layers(12, scale),
        "vocab_size": BERT_VOCAB_IMAGEREWARD,
        "encoder_width": vision["width"],
        "max_position_embeddings": 512,
    }
    return vision, med


def t5_dims(scale: float, model: str) -> dict[str, Any]:
    """FlanT5 dims of CLIP-FlanT5 (zhiqiulin/clip-flant5-xxl / -xl), scaled."""
    n_heads, d_ff = (64, 10240) if model == "clip-flant5-xxl" else (32, 5120)
    h = heads(n_heads, scale)
    return {
        "d_model": h * 64,
        "d_kv": 64,
        "num_heads": h,
        "d_ff": multiple(d_ff * scale, 64),
        "num_layers": layers(24, scale),
        "num_decoder_layers": layers(24, scale),
        "vocab_size": T5_VOCAB,
    }


def deep_update(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        out[key] = deep_update(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


# ----- tensors ---------------------------------------------------------------------------------------
def n_params(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    return sum(math.prod(shape) for shape, _ in shapes.values())


class Writer:
    """Writes state dicts tensor by tensor; records params and bytes per artefact."""

    def __init__(self, seed: int, device: str, dry_run: bool, log: Callable[[str], None]):
        self.seed, self.device, self.dry_run, self.log = seed, device, dry_run, log
        self.summary: dict[str, dict[str, Any]] = {}

    def tensors(self, shapes: dict, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
        for name, (shape, own_dtype) in shapes.items():
            target = dtype if (dtype is not None and own_dtype.is_floating_point) else own_dtype
            yield name, random_tensor(name, shape, target, self.seed, self.device)

    def _record(self, what: str, shapes: dict, dtype: torch.dtype, files: list[Path]) -> None:
        params = n_params(shapes)
        size = sum(f.stat().st_size for f in files if f.exists())
        self.summary[what] = {"params": params, "dtype": str(dtype).removeprefix("torch."),
                              "bytes": size or params * torch.finfo(dtype).bits // 8,
                              "files": [f.name for f in files]}
        self.log(f"  {what:<52} {params / 1e6:10.1f} M params  {self.summary[what]['bytes'] / 1e9:7.2f} GB  {dtype}")

    def safetensors_file(self, what: str, path: Path, shapes: dict, dtype: torch.dtype) -> None:
        """One ``model.safetensors`` (the CLIP folders accept no index)."""
        if not self.dry_run:
            from safetensors.torch import save_file

            save_file(dict(self.tensors(shapes, dtype)), str(path), metadata={"format": "pt"})
        self._record(what, shapes, dtype, [path])

    def safetensors_shards(self, what: str, folder: Path, shapes: dict, dtype: torch.dtype, shard_bytes: int) -> None:
        """``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, one shard in memory at a time."""
        if self.dry_run:
            self._record(what, shapes, dtype, [])
            return
        from safetensors.torch import save_file

        element = torch.finfo(dtype).bits // 8
        groups: list[list[str]] = [[]]
        size = 0
        for name, (shape, _) in shapes.items():
            nbytes = math.prod(shape) * element
            if groups[-1] and size + nbytes > shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(name)
            size += nbytes
        weight_map, files, total = {}, [], 0
        for i, names in enumerate(groups, start=1):
            shard = folder / f"model-{i:05d}-of-{len(groups):05d}.safetensors"
            part = dict(self.tensors({n: shapes[n] for n in names}, dtype))
            total += sum(t.numel() * t.element_size() for t in part.values())
            save_file(part, str(shard), metadata={"format": "pt"})
            del part
            weight_map.update(dict.fromkeys(names, shard.name))
            files.append(shard)
            self.log(f"    wrote {shard.name} ({len(names)} tensors)")
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        self._record(what, shapes, dtype, files)

    def torch_file(self, what: str, path: Path, shapes: dict, dtype: torch.dtype, wrap: Callable[[dict], Any] = lambda sd: sd) -> None:
        if not self.dry_run:
            torch.save(wrap(dict(self.tensors(shapes, dtype))), path)
        self._record(what, shapes, dtype, [path])


# ----- the T5 sentencepiece model --------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _proto_fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, raw bytes incl. key) of a serialized protobuf message."""
    fields, i = [], 0
    while i < len(data):
        start = i
        key, i = _read_varint(data, i)
        wire = key & 7
        if wire == 0:
            _, i = _read_varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _read_varint(data, i)
            i += length
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((key >> 3, wire, data[start:i]))
    return fields


def _piece_message(piece: str, score: float, kind: int = 1) -> bytes:
    """A ModelProto.SentencePiece: piece (1, string), score (2, float), type (3, enum; 1 = NORMAL)."""
    text = piece.encode("utf-8")
    body = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", score) + b"\x18" + _varint(kind)
    return b"\x0a" + _varint(len(body)) + body


def _clip_word_pieces(vocab_json: Path) -> list[str]:
    """English pieces from CLIP's BPE vocabulary in merge order (~frequency): 'word</w>' -> '▁word'."""
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    pieces = []
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if token.startswith("<|"):
            continue
        if token.endswith("</w>"):
            stem = token[: -len("</w>")]
            if stem.isascii() and stem.isprintable() and stem.strip() == stem and stem:
                pieces.append("\u2581" + stem)
        elif token.isascii() and token.isprintable() and token.strip() == token and len(token) > 1:
            pieces.append(token)
    return pieces


def build_t5_spiece(fixture_model: Path, clip_vocab: Path, n_pieces: int = T5_PIECES) -> bytes:
    """A unigram ``spiece.model`` with ``n_pieces`` pieces: the fixture's pieces, then CLIP-derived ones.

    Keeps the fixture's trainer and normalizer specs (ids <pad>=0, </s>=1, <unk>=2, legacy T5
    normalisation); new pieces get scores below the fixture's, decreasing with rank.
    """
    import sentencepiece

    data = fixture_model.read_bytes()
    fields = _proto_fields(data)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(fixture_model))
    existing = {reference.id_to_piece(i) for i in range(reference.get_piece_size())}
    lowest = min(reference.get_score(i) for i in range(reference.get_piece_size()) if not reference.is_control(i))
    extra = []
    for piece in _clip_word_pieces(clip_vocab):
        if piece not in existing:
            existing.add(piece)
            extra.append(piece)
        if reference.get_piece_size() + len(extra) >= n_pieces:
            break
    filler = 0
    while reference.get_piece_size() + len(extra) < n_pieces:  # never reached with CLIP's 49k vocabulary
        extra.append(f"\u2581\u27e8unused{filler}\u27e9")
        filler += 1
    pieces = b"".join(raw for number, _, raw in fields if number == 1)
    pieces += b"".join(_piece_message(p, lowest - 1.0 - math.log1p(rank)) for rank, p in enumerate(extra))
    # Keep the specs (2: trainer, 3: normalizer, 5: denormalizer); drop self-test samples (4).
    rest = b"".join(raw for number, _, raw in fields if number in (2, 3, 5))
    return pieces + rest


# ----- the generator ---------------------------------------------------------------------------------
def _copy_files(source: Path, target: Path, skip: set[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name not in skip:
            shutil.copy2(item, target / item.name)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def needed_parts(metrics: list[str]) -> set[str]:
    parts = set()
    for metric in metrics:
        parts |= {
            "clipscore": {"clip"},
            "pickscore": {"pickscore"},
            "hpsv2": {"hpsv2"},
            "hpsv2.1": {"hpsv2.1"},
            "itmscore": {"blip2"},
            "imagereward": {"imagereward"},
            "vqascore": {"clip", "vqa"},
        }[metric]
    return parts


def generate(
    target: str | Path,
    scale: float = 1.0,
    vqa_model: str = "clip-flant5-xxl",
    metrics: list[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    dry_run: bool = False,
    fixture: Path = FIXTURE_WEIGHTS,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
) -> dict[str, Any]:
    """Write a real-size (``scale`` 1) random-weight weights root at ``target``; return its description.

    ``metrics``: which scorers' files to write (default: all seven). Reuses ``target`` when its
    marker file says it was made with the same settings. ``device='cuda'`` draws the random
    numbers on the GPU (faster for the 11B-parameter XXL); files are always written from host memory.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if vqa_model not in VQA_MODELS:
        raise ValueError(f"vqa_model must be one of {VQA_MODELS}, got {vqa_model!r}")
    metrics = list(metrics or ALL_METRICS)
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {ALL_METRICS}")
    target = Path(target)
    settings = {"version": GENERATOR_VERSION, "scale": scale, "vqa_model": vqa_model, "seed": seed,
                "metrics": sorted(metrics)}
    marker = target / MARKER
    if not dry_run and marker.is_file():
        existing = json.loads(marker.read_text(encoding="utf-8"))
        if existing.get("settings") == settings:
            log(f"[real-size] reusing {target} (made with the same settings)")
            return existing
    parts = needed_parts(metrics)
    writer = Writer(seed, device, dry_run, log)
    started = time.perf_counter()
    log(f"[real-size] {'dry run: ' if dry_run else ''}writing {target} at scale {scale} ({', '.join(sorted(parts))})")
    if not dry_run:
        target.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)

    if "clip" in parts:
        _hf_clip(writer, fixture / "clip-vit-large-patch14-336", target / "clip-vit-large-patch14-336",
                 clip_dims(scale, "vit-l-336"), "clip-vit-large-patch14-336 (CLIP ViT-L/14-336)")
    if "pickscore" in parts:
        _hf_clip(writer, fixture / "PickScore_v1", target / "PickScore_v1", clip_dims(scale, "vit-h"),
                 "PickScore_v1 (CLIP ViT-H/14)")
    if parts & {"hpsv2", "hpsv2.1"}:
        _hps(writer, target / "HPSv2", scale, [p for p in ("hpsv2", "hpsv2.1") if p in parts])
    if "blip2" in parts:
        _blip2(writer, fixture / "blip2-itm-vit-g", target / "blip2-itm-vit-g", blip2_dims(scale))
    if "imagereward" in parts:
        _imagereward(writer, fixture, target, scale)
    if "vqa" in parts:
        _vqa(writer, fixture, target, scale, vqa_model, shard_bytes)

    total_bytes = sum(item["bytes"] for item in writer.summary.values())
    description = {
        "settings": settings,
        "parts": writer.summary,
        "total_params": sum(item["params"] for item in writer.summary.values()),
        "total_bytes": total_bytes,
        "seconds": round(time.perf_counter() - started, 1),
        "note": "random weights at the real architecture sizes (scale 1) in the real formats: timings and memory are real, scores are meaningless",
    }
    log(f"[real-size] {total_bytes / 1e9:.2f} GB, {description['total_params'] / 1e9:.2f} B params, {description['seconds']} s")
    if not dry_run:
        _write_json(marker, description)
    return description


def _hf_clip(writer: Writer, source: Path, folder: Path, dims: dict, what: str) -> None:
    from transformers import CLIPConfig, CLIPModel

    _hf_model(writer, source, folder, dims, what, CLIPConfig, CLIPModel)


def _hf_model(writer: Writer, source: Path, folder: Path, dims: dict, what: str, config_cls, model_cls) -> None:
    """A Hugging Face folder: the fixture's files with a scaled config and random safetensors weights."""
    config_dict = deep_update(json.loads((source / "config.json").read_text(encoding="utf-8")), dims)
    config = config_cls.from_dict(config_dict)
    shapes = meta_shapes(lambda: model_cls(config))
    if not writer.dry_run:
        _copy_files(source, folder, skip={"config.json", "model.safetensors", "pytorch_model.bin"})
        _write_json(folder / "config.json", config_dict)
    writer.safetensors_file(what, folder / "model.safetensors", shapes, torch.float32)


def _hps(writer: Writer, folder: Path, scale: float, versions: list[str]) -> None:
    import open_clip

    config = hps_config(scale)
    shapes = meta_shapes(lambda: open_clip.CLIP(**config))
    if not writer.dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        config_file = folder / "open_clip_config.json"
        if scale == 1:  # the real layout has no config: the scorer uses open_clip's built-in ViT-H-14
            config_file.unlink(missing_ok=True)
        else:
            _write_json(config_file, config)
    # HPS_v2*_compressed.pt: {'state_dict': fp16 tensors}; both versions share the architecture.
    first = None
    for version in versions:
        name = "HPS_v2_compressed.pt" if version == "hpsv2" else "HPS_v2.1_compressed.pt"
        if first is not None and not writer.dry_run:
            shutil.copyfile(first, folder / name)  # same shapes: a copy times the same as fresh numbers
            writer._record(f"HPSv2/{name} (open_clip ViT-H-14)", shapes, torch.float16, [folder / name])
            continue
        writer.torch_file(f"HPSv2/{name} (open_clip ViT-H-14)", folder / name, shapes, torch.float16,
                          wrap=lambda sd: {"state_dict": sd})
        first = folder / name


def _blip2(writer: Writer, source: Path, folder: Path, dims: dict) -> None:
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    _hf_model(writer, source, folder, dims, "blip2-itm-vit-g (EVA ViT-g + Q-Former)", Blip2Config,
              Blip2ForImageTextRetrieval)


def _imagereward(writer: Writer, fixture: Path, target: Path, scale: float) -> None:
    from janus_ray.metrics import image_reward as ir
    from transformers import BlipVisionConfig

    vision, med_updates = imagereward_dims(scale)
    med = {**json.loads((fixture / "ImageReward" / "med_config.json").read_text(encoding="utf-8")), **med_updates}
    scorer = ir.ImageRewardScorer.__new__(ir.ImageRewardScorer)  # only for its config helper (no load)
    text_config = scorer.text_config(med, target / ir.MED_CONFIG_FILE, encoder_width=vision["width"])
    vision_config = BlipVisionConfig(
        hidden_size=vision["width"], intermediate_size=vision["width"] * ir.VIT_MLP_RATIO,
        num_hidden_layers=vision["layers"], num_attention_heads=vision["heads"],
        image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_act="gelu",
        layer_norm_eps=ir.VIT_LAYER_NORM_EPS,
    )
    model_shapes = meta_shapes(lambda: ir.ImageRewardModel(vision_config, text_config))
    # The reference checkpoint's names (blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*),
    # plus BLIP_Pretrain's contrastive projections (unused by score() but present in ImageReward.pt).
    shapes = {ir.checkpoint_key_of(key): value for key, value in model_shapes.items() if not key.endswith("position_ids")}
    embed = 256
    shapes["blip.vision_proj.weight"] = ((embed, vision["width"]), torch.float32)
    shapes["blip.vision_proj.bias"] = ((embed,), torch.float32)
    shapes["blip.text_proj.weight"] = ((embed, med["hidden_size"]), torch.float32)
    shapes["blip.text_proj.bias"] = ((embed,), torch.float32)
    if not writer.dry_run:
        folder = target / "ImageReward"
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / "med_config.json", med)
        vision_file = folder / "vision_config.json"
        if scale == 1:  # the real layout has none: the scorer defaults to BLIP ViT-L/16
            vision_file.unlink(missing_ok=True)
        else:
            _write_json(vision_file, {**vision, "stands_in_for": f"BLIP ViT-L/16 at scale {scale}"})
        _copy_files(fixture / "bert-base-uncased", target / "bert-base-uncased", skip=set())
    writer.torch_file("ImageReward/ImageReward.pt (BLIP ViT-L + BERT)", target / "ImageReward" / "ImageReward.pt",
                      shapes, torch.float32)


def _vqa(writer: Writer, fixture: Path, target: Path, scale: float, model: str, shard_bytes: int) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    source = fixture / "clip-flant5-xxl"
    folder = target / model
    dims = t5_dims(scale, model)
    tower_width = clip_dims(scale, "vit-l-336")["vision_config"]["hidden_size"]
    config_dict = {**json.loads((source / "config.json").read_text(encoding="utf-8")), **dims,
                   "mm_hidden_size": tower_width, "_name_or_path": f"random-weight stand-in for zhiqiulin/{model}"}
    t5_fields = set(T5Config().to_dict()) - {"model_type", "architectures", "transformers_version", "dtype"}
    t5_config = T5Config(**{k: v for k, v in config_dict.items() if k in t5_fields})
    t5_shapes = meta_shapes(lambda: T5ForConditionalGeneration(t5_config))
    # CLIPT5's state_dict: T5 keys (the tied encoder/decoder embed_tokens aliases are left out: the
    # scorer re-ties them to shared.weight), then the mm_projector. The vision tower is not in the
    # checkpoint, so the scorer takes it from clip-vit-large-patch14-336/ (t2v builds it from there).
    shapes = {k: v for k, v in t5_shapes.items() if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    d_model = dims["d_model"]
    shapes["mm_projector.0.weight"] = ((d_model, tower_width), torch.float32)
    shapes["mm_projector.0.bias"] = ((d_model,), torch.float32)
    shapes["mm_projector.2.weight"] = ((d_model, d_model), torch.float32)
    shapes["mm_projector.2.bias"] = ((d_model,), torch.float32)
    if not writer.dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in [*folder.glob("model-*.safetensors"), folder / "model.safetensors.index.json"]:
            stale.unlink(missing_ok=True)
        _write_json(folder / "config.json", config_dict)
        for name in ("generation_config.json", "special_tokens_map.json"):
            shutil.copy2(source / name, folder / name)
        # The fixture's added-token ids belong to its 400-piece model: keep only the settings.
        tokenizer_config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer_config.pop("added_tokens_decoder", None)
        _write_json(folder / "tokenizer_config.json", tokenizer_config)
        spiece = build_t5_spiece(source / "spiece.model", fixture / "clip-vit-large-patch14-336" / "vocab.json")
        (folder / "spiece.model").write_bytes(spiece)
    writer.safetensors_shards(f"{model}/ (FlanT5 + projector)", folder, shapes, torch.bfloat16, shard_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_size", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="weights root to write")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = real size; < 1 shrinks widths/depths (tests)")
    parser.add_argument("--vqa-model", choices=VQA_MODELS, default="clip-flant5-xxl")
    parser.add_argument("--metrics", nargs="+", choices=ALL_METRICS, default=list(ALL_METRICS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where random numbers are drawn (cuda is faster for XXL)")
    parser.add_argument("--shard-gb", type=float, default=DEFAULT_SHARD_BYTES / 1024**3)
    parser.add_argument("--dry-run", action="store_true", help="print sizes only (models built on the meta device)")
    args = parser.parse_args(argv)
    description = generate(args.target, scale=args.scale, vqa_model=args.vqa_model, metrics=args.metrics,
                           seed=args.seed, device=args.device, shard_bytes=int(args.shard_gb * 1024**3),
                           dry_run=args.dry_run)
    print(json.dumps({k: v for k, v in description.items() if k != "parts"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
