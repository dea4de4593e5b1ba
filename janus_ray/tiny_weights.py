"""A weights root of tiny random-weight models in the real on-disk formats, written by the package.

``write_tiny_weights_root(target)`` writes, from nothing but the installed libraries (no network,
no repository checkout), every folder and file the seven scorers read, in the layout and formats
of the published checkpoints (``janus_ray.metrics.weights.LAYOUT_HELP``):

=============================  ====================================  ===============================
folder / file                  model (tiny: widths 16-32, 2-3 layers) format
=============================  ====================================  ===============================
clip-vit-large-patch14-336/    CLIPModel, 336 px                      config.json, model.safetensors
                                                                      fp32, CLIP BPE vocab.json +
                                                                      merges.txt, processor config
PickScore_v1/                  CLIPModel, 224 px, pad token ``!``     same
HPSv2/HPS_v2*_compressed.pt    open_clip CLIP                         ``{'state_dict': fp16}``
                                                                      (+ open_clip_config.json)
blip2-itm-vit-g/               Blip2ForImageTextRetrieval             model.safetensors fp32, BERT
                                                                      vocab.txt + added_tokens.json
ImageReward/ImageReward.pt     BLIP ViT + MED BERT + reward MLP       bare fp32 state_dict (+ legacy
                                                                      position_ids), med_config.json
bert-base-uncased/             (tokenizer)                            vocab.txt
clip-flant5-xxl/               FlanT5 + mlp2x_gelu projector, tower   pytorch_model.bin bf16 (tied
                               inside the checkpoint                  embedding under 3 names),
                                                                      unigram spiece.model
=============================  ====================================  ===============================

The two files that are not in the real layout (``HPSv2/open_clip_config.json``,
``ImageReward/vision_config.json``) tell the scorers the tiny sizes. Tokenizers are built here
from a small built-in English corpus: a byte-level CLIP BPE (a few hundred merges), a WordPiece
BERT vocabulary, and a sentencepiece unigram model with T5's special ids; the HPS text side uses
open_clip's own bundled BPE, so its embedding keeps CLIP's 49408 rows.

Every tensor is drawn from its own generator seeded by ``seed`` and the tensor's name, so the same
seed writes the same numbers. The scores are meaningless (random weights); the code paths and file
formats are the real ones. About 14 MB, written in about a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GENERATOR_VERSION = 1
MARKER = "janus_ray_tiny_weights.json"
INIT_STD = 0.02
LOGIT_SCALE = math.log(1 / 0.07)
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
#: open_clip's bundled BPE vocabulary size (the HPS text embedding rows)
OPEN_CLIP_VOCAB = 49408
T5_EXTRA_IDS = 100
#: FlanT5's checkpoint has 28 embedding rows more than len(tokenizer) (32128 vs 32100)
T5_SPARE_ROWS = 28

#: The tokenizers' training text: the demo's kind of prompts plus VQAScore's fixed question text.
CORPUS = """
A chat between a curious user and an artificial intelligence assistant. The assistant gives
helpful, detailed, and polite answers to the user's questions. USER: ASSISTANT: Yes No yes no
Does this figure show the picture? Please answer yes or no.
a red circle on a white background. a blue square next to a green triangle. a sign that says hello
world. a yellow sun over the sea at dusk. two cats sleeping on a sofa. a bowl of ramen noodles on a
wooden table. a photo of a dog running in the park. an astronaut riding a horse on the moon. a
painting of a city street at night with people and cars. a small house in the mountains under snow.
a cup of coffee and a book by the window. three birds flying over a lake in the morning light. an
old man reading a newspaper in a cafe. a black and white photograph of a bridge over a river. a
bright orange flower in a glass vase. a child playing with a ball on the beach. a robot cooking
dinner in a modern kitchen. a portrait of a woman with long hair smiling. a plate of fruit with
apples, bananas and grapes. a train crossing a field of tall grass. a lighthouse on a rocky coast
during a storm. a close up of a cat's face with green eyes. a tree with pink leaves in spring.
"""


# ----- tensors ---------------------------------------------------------------------------------------
_NORM = re.compile(r"(norm|(^|\.)ln)", re.IGNORECASE)


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """A deterministic tensor for parameter ``name``: the same name, seed and device give the same values.

    Biases 0, norm weights 1, ``logit_scale`` ln(1/0.07), ``position_ids`` arange, everything else
    N(0, 0.02) (ImageReward's affine reward head N(0, 1/fan_in), so rewards do not all collapse to
    one value): finite activations through every layer. ``device``: where the normal values are
    drawn (a GPU draws the real-size benchmark weights much faster; its stream differs from the
    CPU's); the tensor is always returned on the CPU, ``dtype`` ready to write.
    """
    if name.endswith("position_ids"):
        return torch.arange(shape[-1], dtype=torch.long).expand(shape).contiguous()
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if name.endswith("logit_scale"):
        return torch.full(shape, LOGIT_SCALE, dtype=dtype)
    if len(shape) == 1 and name.endswith("weight") and _NORM.search(name):
        return torch.ones(shape, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    std = shape[-1] ** -0.5 if name.startswith("mlp.layers.") and len(shape) == 2 else INIT_STD
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).mul_(std).to(dtype).cpu()


def meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """{state_dict key: (shape, dtype)} of a model built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build()
    return {key: (tuple(t.shape), t.dtype) for key, t in module.state_dict().items()}


def random_state(
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]],
    seed: int,
    dtype: torch.dtype | None = None,
    seed_name: Callable[[str], str] = lambda name: name,
) -> dict[str, torch.Tensor]:
    """Random tensors for ``shapes``; floats cast to ``dtype`` when given. ``seed_name`` maps a key
    to the name its values are drawn from (equal seed names give equal tensors)."""
    state = {}
    for name, (shape, own) in shapes.items():
        target = dtype if dtype is not None and own.is_floating_point else own
        state[name] = random_tensor(seed_name(name), shape, target, seed)
    return state


# ----- tokenizers ------------------------------------------------------------------------------------
def corpus_words(text: str = CORPUS) -> list[str]:
    """Lower-cased words and punctuation marks of the corpus, in order."""
    return re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (the base alphabet of a byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_bpe(words: list[str], n_merges: int = 400) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE learnt from ``words``: (vocab.json mapping, merges).

    The vocabulary has CLIP's layout: 256 byte characters, the same with ``</w>``, one token per
    merge, then ``<|startoftext|>`` and ``<|endoftext|>`` (the highest id, where CLIP pools).
    Ties between equally frequent pairs are broken by the pair itself, so the result is deterministic.
    """
    table = bytes_to_unicode()
    alphabet = list(table.values())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet)]
    counts: Counter[tuple[str, ...]] = Counter()
    for word in words:
        chars = [table[b] for b in word.encode("utf-8")]
        counts[(*chars[:-1], chars[-1] + "</w>")] += 1
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        if best[0] + best[1] not in known:
            known.add(best[0] + best[1])
            tokens.append(best[0] + best[1])
        counts = Counter({_merge(word, best): n for word, n in counts.items()})
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def bert_vocab(words: list[str]) -> list[str]:
    """A WordPiece vocabulary: BERT's special tokens first, characters, ``##`` characters, words."""
    chars = [*"abcdefghijklmnopqrstuvwxyz0123456789", *'!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~']
    specials = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    whole = sorted({w for w in words if len(w) > 1})
    return [*specials, *chars, *(f"##{c}" for c in chars), *whole]


def t5_spiece_model(text: str = CORPUS, vocab_size: int = 300) -> bytes:
    """A unigram ``spiece.model`` with T5's special ids (<pad>=0, </s>=1, <unk>=2, no <s>).

    Trained single-threaded on ``text``, so the same text gives the same model.
    """
    import sentencepiece

    sentences = [line.strip() for line in re.split(r"(?<=[.?!])\s+", " ".join(text.split())) if line.strip()]
    sentences = sentences * 8  # enough occurrences for the unigram EM to keep whole words
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
        eos_piece="</s>", unk_piece="<unk>", num_threads=1, minloglevel=2, character_coverage=1.0,
    )  # fmt: skip
    return model.getvalue()


# ----- writers ---------------------------------------------------------------------------------------
def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})


def _clip_folder(folder: Path, seed: int, image_size: int, vision_layers: int, pad_token: str) -> None:
    """An HF CLIPModel folder as the openai / PickScore repositories hold it (legacy config fields)."""
    from transformers import CLIPConfig, CLIPModel

    vocab, merges = clip_bpe(corpus_words())
    config = {
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": 16,
        # eos_token_id 2 is what the legacy openai configs say: transformers then pools the text at
        # argmax(input_ids), i.e. at <|endoftext|>, the highest id.
        "text_config": {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "hidden_size": 16,
                        "intermediate_size": 48, "model_type": "clip_text_model", "num_attention_heads": 2,
                        "num_hidden_layers": 2, "projection_dim": 16, "vocab_size": len(vocab),
                        "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
        "vision_config": {"hidden_size": 32, "image_size": image_size, "intermediate_size": 64,
                          "model_type": "clip_vision_model", "num_attention_heads": 2,
                          "num_hidden_layers": vision_layers, "patch_size": 14, "projection_dim": 16,
                          "hidden_act": "quick_gelu"},
        "torch_dtype": "float32",
        "transformers_version": "4.49.0",
    }  # fmt: skip
    shapes = meta_shapes(lambda: CLIPModel(CLIPConfig.from_dict(config)))
    folder.mkdir(parents=True, exist_ok=True)
    _json(folder / "config.json", config)
    _save_safetensors(folder / "model.safetensors", random_state(shapes, seed, torch.float32))
    _json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    special = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    _json(folder / "special_tokens_map.json", {
        "bos_token": {"content": "<|startoftext|>", **special},
        "eos_token": {"content": "<|endoftext|>", **special},
        "pad_token": {"content": pad_token, **special, "normalized": pad_token != "!"},
        "unk_token": {"content": "<|endoftext|>", **special},
    })  # fmt: skip
    _json(folder / "tokenizer_config.json", {
        "bos_token": "<|startoftext|>", "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>",
        "errors": "replace", "model_max_length": 77, "pad_token": pad_token, "processor_class": "CLIPProcessor",
        "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>",
    })  # fmt: skip
    _json(folder / "preprocessor_config.json", {
        "crop_size": {"height": image_size, "width": image_size}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": OPENAI_CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
        "image_std": OPENAI_CLIP_STD, "processor_class": "CLIPProcessor", "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": image_size},
    })  # fmt: skip


def _hps(folder: Path, seed: int) -> None:
    """Both HPS checkpoints: ``{'state_dict': fp16 tensors}`` with open_clip CLIP's key names."""
    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": OPEN_CLIP_VOCAB, "width": 16, "heads": 2, "layers": 2},
    }
    shapes = meta_shapes(lambda: open_clip.CLIP(**config))
    folder.mkdir(parents=True, exist_ok=True)
    _json(folder / "open_clip_config.json", config)
    for offset, name in enumerate(("HPS_v2_compressed.pt", "HPS_v2.1_compressed.pt")):
        # Two fine-tunings of one architecture: same names, different numbers.
        torch.save({"state_dict": random_state(shapes, seed + offset, torch.float16)}, folder / name)


def _bert_tokenizer_files(folder: Path, vocab: list[str], bos_dec: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    config = {
        "clean_up_tokenization_spaces": True, "cls_token": "[CLS]", "do_basic_tokenize": True,
        "do_lower_case": True, "mask_token": "[MASK]", "model_max_length": 512, "never_split": None,
        "pad_token": "[PAD]", "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True,
        "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
    }  # fmt: skip
    special = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}
    if bos_dec:  # BLIP-2's tokenizer: bert-base-uncased + the [DEC] bos token, saved as an added token
        config["bos_token"] = "[DEC]"
        special["bos_token"] = {"content": "[DEC]", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
        _json(folder / "added_tokens.json", {"[DEC]": len(vocab)})
    _json(folder / "tokenizer_config.json", config)
    _json(folder / "special_tokens_map.json", special)


def _blip2(folder: Path, seed: int, vocab: list[str]) -> None:
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    config = {
        "architectures": ["Blip2ForImageTextRetrieval"], "image_text_hidden_size": 16, "initializer_factor": 1.0,
        "initializer_range": 0.02, "model_type": "blip-2", "num_query_tokens": 4,
        "qformer_config": {"cross_attention_frequency": 1, "encoder_hidden_size": 32, "hidden_size": 32,
                           "intermediate_size": 64, "model_type": "blip_2_qformer", "num_attention_heads": 2,
                           "num_hidden_layers": 2, "use_qformer_text_input": True, "vocab_size": len(vocab) + 1},
        "text_config": {"model_type": "opt"}, "torch_dtype": "float32", "transformers_version": "4.36.0.dev0",
        "use_decoder_only_language_model": True,
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "model_type": "blip_2_vision_model",
                          "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 224, "patch_size": 14},
    }  # fmt: skip
    shapes = meta_shapes(lambda: Blip2ForImageTextRetrieval(Blip2Config.from_dict(config)))
    folder.mkdir(parents=True, exist_ok=True)
    _json(folder / "config.json", config)
    _save_safetensors(folder / "model.safetensors", random_state(shapes, seed, torch.float32))
    _bert_tokenizer_files(folder, vocab, bos_dec=True)
    _json(folder / "preprocessor_config.json", {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": OPENAI_CLIP_MEAN, "image_processor_type": "BlipImageProcessor", "image_std": OPENAI_CLIP_STD,
        "processor_class": "Blip2Processor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"height": 224, "width": 224},
    })  # fmt: skip
    _json(folder / "processor_config.json", {"num_query_tokens": None, "processor_class": "Blip2Processor"})


def _imagereward(target: Path, seed: int, vocab: list[str]) -> None:
    """ImageReward.pt as image-reward publishes it: a bare fp32 state_dict of the reference module's keys."""
    from transformers import BlipVisionConfig

    from janus_ray.metrics import image_reward as ir

    vision = {"image_size": 224, "patch_size": 16, "width": 32, "layers": 2, "heads": 2}
    med = {
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 64,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 2,
        "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2,
        "vocab_size": len(vocab) + 2,  # + BLIP's [DEC] and [ENC]
        "encoder_width": 32, "add_cross_attention": True,
    }  # fmt: skip
    folder = target / "ImageReward"
    _json(folder / "med_config.json", med)
    _json(folder / "vision_config.json", {**vision, "stands_in_for": "BLIP ViT-L/16 (tiny random weights)"})
    scorer = ir.ImageRewardScorer.__new__(ir.ImageRewardScorer)  # only its config helper; nothing loaded
    text_config = scorer.text_config(med, folder / "med_config.json", encoder_width=vision["width"])
    vision_config = BlipVisionConfig(
        hidden_size=vision["width"], intermediate_size=vision["width"] * ir.VIT_MLP_RATIO,
        num_hidden_layers=vision["layers"], num_attention_heads=vision["heads"], image_size=vision["image_size"],
        patch_size=vision["patch_size"], hidden_act="gelu", layer_norm_eps=ir.VIT_LAYER_NORM_EPS,
    )  # fmt: skip
    model_shapes = meta_shapes(lambda: ir.ImageRewardModel(vision_config, text_config))
    # The reference checkpoint's names, its legacy position_ids buffer, and BLIP_Pretrain's
    # contrastive projections (in the file, unused by score()).
    shapes = {ir.checkpoint_key_of(key): value for key, value in model_shapes.items()}
    shapes[ir.POSITION_IDS_KEY] = ((1, med["max_position_embeddings"]), torch.long)
    shapes["blip.vision_proj.weight"] = ((16, vision["width"]), torch.float32)
    shapes["blip.vision_proj.bias"] = ((16,), torch.float32)
    shapes["blip.text_proj.weight"] = ((16, med["hidden_size"]), torch.float32)
    shapes["blip.text_proj.bias"] = ((16,), torch.float32)
    torch.save(random_state(shapes, seed, torch.float32), folder / "ImageReward.pt")
    _bert_tokenizer_files(target / "bert-base-uncased", vocab, bos_dec=False)


def _clip_flant5(folder: Path, seed: int, tower_dir: Path) -> None:
    """A CLIP-FlanT5 training-output folder: bf16 ``pytorch_model.bin`` holding T5 (embedding tied
    under ``shared`` / ``encoder.embed_tokens`` / ``decoder.embed_tokens``, untied ``lm_head``), the
    vision tower (the CLIP folder's vision weights, as t2v's frozen tower) and the projector."""
    import sentencepiece
    from transformers import CLIPVisionConfig, CLIPVisionModel, T5Config, T5ForConditionalGeneration

    spiece = t5_spiece_model()
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    tower_config = CLIPVisionConfig.from_pretrained(str(tower_dir), local_files_only=True)
    d_model = 32
    config = {
        "architectures": ["CLIPT5ForConditionalGeneration"], "d_ff": 64, "d_kv": 8, "d_model": d_model,
        "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
        "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True,
        "is_gated_act": True, "layer_norm_epsilon": 1e-06, "mm_hidden_size": tower_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu", "mm_use_im_patch_token": False, "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336", "model_type": "t5", "num_decoder_layers": 2,
        "num_heads": 4, "num_layers": 2, "pad_token_id": 0, "relative_attention_max_distance": 128,
        "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right", "torch_dtype": "bfloat16", "transformers_version": "4.31.0",
        "use_cache": True, "use_mm_proj": True, "vocab_size": pieces + T5_EXTRA_IDS + T5_SPARE_ROWS,
    }  # fmt: skip
    t5_fields = set(T5Config().to_dict()) - {"model_type", "architectures", "transformers_version", "dtype"}
    t5_config = T5Config(**{k: v for k, v in config.items() if k in t5_fields})
    t5 = random_state(meta_shapes(lambda: T5ForConditionalGeneration(t5_config)), seed, torch.bfloat16)
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        t5[alias] = t5["shared.weight"]  # one storage under three names, as DeepSpeed saved it
    tower_prefix = "vision_tower.vision_tower.vision_model."  # t2v's CLIPVisionTower -> HF CLIPVisionModel
    tower_shapes = {f"vision_model.{k}": v for k, v in meta_shapes(lambda: CLIPVisionModel(tower_config)).items()}
    # Drawn under the CLIP folder's own names: the same numbers as its vision half (a frozen tower).
    tower = random_state(tower_shapes, seed, torch.bfloat16)
    projector_shapes = {
        "mm_projector.0.weight": ((d_model, tower_config.hidden_size), torch.float32),
        "mm_projector.0.bias": ((d_model,), torch.float32),
        "mm_projector.2.weight": ((d_model, d_model), torch.float32),
        "mm_projector.2.bias": ((d_model,), torch.float32),
    }
    state = {**t5, **{tower_prefix + k.removeprefix("vision_model."): v for k, v in tower.items()}, **random_state(projector_shapes, seed, torch.bfloat16)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "pytorch_model.bin")
    _json(folder / "config.json", config)
    _json(folder / "generation_config.json", {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
                                              "transformers_version": "4.31.0"})
    (folder / "spiece.model").write_bytes(spiece)
    extra = [f"<extra_id_{i}>" for i in range(T5_EXTRA_IDS)]
    # 4.31-style: no added_tokens_decoder, no legacy key, no added_tokens.json.
    _json(folder / "tokenizer_config.json", {
        "additional_special_tokens": extra, "eos_token": "</s>", "extra_ids": T5_EXTRA_IDS,
        "model_max_length": 2048, "pad_token": "<pad>", "padding_side": "right",
        "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>",
    })  # fmt: skip
    _json(folder / "special_tokens_map.json", {"additional_special_tokens": extra, "eos_token": "</s>",
                                               "pad_token": "<pad>", "unk_token": "<unk>"})


def write_tiny_weights_root(target: str | Path, seed: int = 0) -> Path:
    """Write the tiny weights root at ``target`` (reused when it was written with the same seed).

    Returns ``target``. Raises ``OSError`` if ``target`` cannot be written.
    """
    target = Path(target)
    marker = target / MARKER
    settings = {"generator_version": GENERATOR_VERSION, "seed": seed}
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("settings") == settings:
                return target
        except ValueError:
            pass
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tiny tensors: threads only add start-up cost
        _clip_folder(target / "clip-vit-large-patch14-336", seed, image_size=336, vision_layers=3, pad_token="<|endoftext|>")
        _clip_folder(target / "PickScore_v1", seed + 1, image_size=224, vision_layers=2, pad_token="!")
        _hps(target / "HPSv2", seed + 2)
        vocab = bert_vocab(corpus_words())
        _blip2(target / "blip2-itm-vit-g", seed + 4, vocab)
        _imagereward(target, seed + 5, vocab)
        _clip_flant5(target / "clip-flant5-xxl", seed, target / "clip-vit-large-patch14-336")
    finally:
        torch.set_num_threads(torch_threads)
    files = sorted(p for p in target.rglob("*") if p.is_file() and p.name != MARKER)
    _json(marker, {
        "settings": settings,
        "note": "tiny RANDOM-weight models in the real checkpoint formats: scores are meaningless",
        "sha256": {str(p.relative_to(target)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files},
    })  # fmt: skip
    return target
