"""Synthetic Hugging Face model folders: a config, optional tiny random weights and a local tokenizer."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "ModelDirError",
    "TokenizerInfo",
    "tiny_llama",
    "tiny_llama_config",
    "weight_shapes",
    "write_model_dir",
    "write_tokenizer",
]

# Ids 0, 1, 2 in every tokenizer written here; the config's bos/eos/pad ids point at them.
SPECIAL_TOKENS: tuple[str, str, str] = ("<unk>", "<s>", "</s>")
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# A byte-level BPE needs its 256-symbol alphabet plus the special tokens before any merge.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
# Merges beyond this are not trained (it would take seconds per folder); the rest are padding entries.
MAX_TRAINED_VOCAB = 8192
# Random weights are for tiny models: a real-sized config would write gigabytes.
MAX_PARAMETERS = 100_000_000

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Architectures whose checkpoints share Llama's tensor names; value: (q/k/v bias, per-head q/k norm).
_LLAMA_LIKE: dict[str, tuple[bool, bool]] = {
    "LlamaForCausalLM": (False, False),
    "MistralForCausalLM": (False, False),
    "Qwen2ForCausalLM": (True, False),
    "Qwen3ForCausalLM": (False, True),
}

_DTYPES = ("bfloat16", "float16", "float32")


class ModelDirError(ValueError):
    """A model folder cannot be written from the given config; names the field at fault."""

    def __init__(self, message: str, *, field: str | None = None, path: Path | None = None) -> None:
        where = f"{path}: " if path is not None else ""
        what = f"field {field!r}: " if field is not None else ""
        super().__init__(f"{where}{what}{message}")
        self.field = field
        self.path = path


@dataclass(frozen=True)
class TokenizerInfo:
    """What a written tokenizer looks like from the model config's side."""

    vocab_size: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    trained_tokens: int  # the rest of the vocabulary is padding tokens, so that sizes match exactly


def tiny_llama_config(
    *,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    max_position_embeddings: int = 2048,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """The config.json of a small ``LlamaForCausalLM``, laid out as transformers 5 writes it."""
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if hidden_size % num_heads:
        raise ModelDirError(f"{hidden_size} is not a multiple of num_heads={num_heads}", field="hidden_size")
    if num_heads % kv_heads:
        raise ModelDirError(
            f"{num_heads} heads cannot be shared by {kv_heads} kv heads", field="num_kv_heads"
        )
    if dtype not in _DTYPES:
        raise ModelDirError(f"{dtype!r} is not one of {', '.join(_DTYPES)}", field="dtype")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": EOS_ID,
        "dtype": dtype,
        "head_dim": hidden_size // num_heads,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "mlp_bias": False,
        "num_attention_heads": num_heads,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def tiny_llama(
    path: str | Path,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    max_position_embeddings: int = 2048,
    dtype: str = "bfloat16",
    seed: int = 0,
    weights: bool = True,
    tokenizer: bool = True,
) -> Path:
    """Write a loadable ``LlamaForCausalLM`` folder (random weights, local tokenizer) and return it.

    The default head size is 64, which every attention kernel of LMDeploy and transformers accepts.
    """
    config = tiny_llama_config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        dtype=dtype,
    )
    return write_model_dir(path, config, weights=weights, tokenizer=tokenizer, seed=seed)


def write_model_dir(
    path: str | Path,
    config: Mapping[str, Any],
    *,
    weights: bool = False,
    tokenizer: bool = False,
    seed: int = 0,
    max_parameters: int = MAX_PARAMETERS,
) -> Path:
    """Write ``config.json`` (and, when asked, weights and a tokenizer) into ``path``; return the folder.

    Weights need torch and safetensors and are written only for Llama-shaped architectures. The
    tokenizer needs ``tokenizers`` only; it is trained here on generated text, never downloaded.
    """
    folder = Path(path)
    cfg = dict(config)
    # every check before the first file: bad input leaves no half-written folder
    shapes = _checked_shapes(cfg, folder / "config.json", max_parameters) if weights else None
    vocab_size = _vocab_size(cfg, folder) if tokenizer else 0
    if tokenizer and vocab_size < MIN_VOCAB_SIZE:
        raise ModelDirError(
            f"a byte-level tokenizer needs at least {MIN_VOCAB_SIZE} tokens, got {vocab_size}",
            field="vocab_size",
            path=folder / "config.json",
        )
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer:
        info = write_tokenizer(folder, vocab_size=vocab_size, seed=seed, model_max_length=_max_positions(cfg))
        cfg.setdefault("bos_token_id", info.bos_token_id)
        cfg.setdefault("eos_token_id", info.eos_token_id)
        _write_json(
            folder / "generation_config.json",
            {
                "bos_token_id": cfg["bos_token_id"],
                "eos_token_id": cfg["eos_token_id"],
                "pad_token_id": cfg.get("pad_token_id", info.pad_token_id),
            },
        )
    if shapes is not None:
        _write_weights(folder, cfg, shapes, seed)
    _write_json(folder / "config.json", cfg)
    return folder


def weight_shapes(config: Mapping[str, Any], *, path: Path | None = None) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint for ``config`` (Llama-shaped architectures only)."""
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if arch not in _LLAMA_LIKE:
        known = ", ".join(sorted(_LLAMA_LIKE))
        raise ModelDirError(
            f"random weights need one of {known}; got {archs!r}", field="architectures", path=path
        )
    qkv_bias, qk_norm = _LLAMA_LIKE[arch]
    hidden = _positive_int(config, "hidden_size", path)
    inter = _positive_int(config, "intermediate_size", path)
    layers = _positive_int(config, "num_hidden_layers", path)
    heads = _positive_int(config, "num_attention_heads", path)
    kv_heads = (
        _positive_int(config, "num_key_value_heads", path) if "num_key_value_heads" in config else heads
    )
    vocab = _positive_int(config, "vocab_size", path)
    head_dim = _positive_int(config, "head_dim", path) if config.get("head_dim") else hidden // heads
    if not config.get("head_dim") and hidden % heads:
        raise ModelDirError(f"{hidden} is not a multiple of {heads} heads", field="hidden_size", path=path)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (heads * head_dim, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, heads * head_dim)
        if qkv_bias:
            shapes[p + "self_attn.q_proj.bias"] = (heads * head_dim,)
            shapes[p + "self_attn.k_proj.bias"] = (kv_heads * head_dim,)
            shapes[p + "self_attn.v_proj.bias"] = (kv_heads * head_dim,)
        if qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = (head_dim,)
            shapes[p + "self_attn.k_norm.weight"] = (head_dim,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_tokenizer(
    path: str | Path, *, vocab_size: int, seed: int = 0, model_max_length: int = 2048
) -> TokenizerInfo:
    """Train a byte-level BPE on generated text and save it as a fast tokenizer of exactly ``vocab_size``.

    Every id below ``vocab_size`` decodes to text, so a model with random weights can emit any id.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ModelDirError(
            f"a byte-level tokenizer needs at least {MIN_VOCAB_SIZE} tokens, got {vocab_size}",
            field="vocab_size",
            path=Path(path),
        )
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(vocab_size, MAX_TRAINED_VOCAB),
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # About two distinct words per wanted merge is enough text for the trainer to reach the size.
    n_words = max(200, 2 * min(vocab_size, MAX_TRAINED_VOCAB))
    tok.train_from_iterator(_corpus(seed, n_words=n_words, n_lines=max(500, n_words // 4)), trainer=trainer)
    trained = tok.get_vocab_size()
    bos = tok.token_to_id(SPECIAL_TOKENS[BOS_ID])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    data = json.loads(tok.to_str())
    if trained < vocab_size:
        # Plain vocabulary entries that no merge produces: every id decodes, the model's and the
        # tokenizer's sizes agree, and (unlike added tokens) they cost nothing when tokenizing.
        vocab = data["model"]["vocab"]
        vocab.update({f"<extra_{i}>": trained + i for i in range(vocab_size - trained)})
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SPECIAL_TOKENS[BOS_ID],
            "eos_token": SPECIAL_TOKENS[EOS_ID],
            "unk_token": SPECIAL_TOKENS[UNK_ID],
            "pad_token": SPECIAL_TOKENS[EOS_ID],
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    )
    return TokenizerInfo(
        vocab_size=vocab_size,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        trained_tokens=trained,
    )


def _checked_shapes(config: Mapping[str, Any], path: Path, max_parameters: int) -> dict[str, tuple[int, ...]]:
    shapes = weight_shapes(config, path=path)
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > max_parameters:
        raise ModelDirError(
            f"random weights of {count:,} parameters exceed max_parameters={max_parameters:,}; "
            "shrink hidden_size, num_hidden_layers or vocab_size, or raise max_parameters",
            path=path,
        )
    dtype_name = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    if dtype_name not in _DTYPES:
        raise ModelDirError(f"{dtype_name!r} is not one of {', '.join(_DTYPES)}", field="dtype", path=path)
    return shapes


def _write_weights(
    folder: Path, config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], seed: int
) -> None:
    dtype_name = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(seed)
    std = float(config.get("initializer_range", 0.02))
    tensors: dict[str, Any] = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            tensors[name] = torch.zeros(shape, dtype=dtype)
        else:
            tensors[name] = (torch.randn(shape, generator=gen) * std).to(dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _corpus(seed: int, *, n_words: int, n_lines: int) -> Iterator[str]:
    """Deterministic pseudo-text with enough distinct words for the wanted number of merges."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    common = "hi hello the a of and to in is it you that was for on are with as be at this".split()
    words = common + ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(n_words)]
    for _ in range(n_lines):
        line = [rng.choice(words) for _ in range(rng.randint(4, 16))]
        if rng.random() < 0.3:
            line[0] = line[0].capitalize()
        yield " ".join(line) + rng.choice([".", ",", "!", "?", " 42.", " (x+y)*2"])


def _vocab_size(config: Mapping[str, Any], folder: Path) -> int:
    for key in ("vocab_size",):
        if key in config:
            return _positive_int(config, key, folder / "config.json")
    for nested in ("text_config", "llm_config", "language_config"):
        sub = config.get(nested)
        if isinstance(sub, Mapping) and "vocab_size" in sub:
            return _positive_int(sub, "vocab_size", folder / "config.json", prefix=f"{nested}.")
    raise ModelDirError(
        "a tokenizer needs the vocabulary size", field="vocab_size", path=folder / "config.json"
    )


def _max_positions(config: Mapping[str, Any]) -> int:
    value = config.get("max_position_embeddings")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 2048


def _positive_int(config: Mapping[str, Any], key: str, path: Path | None, prefix: str = "") -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelDirError(f"must be a positive integer, got {value!r}", field=prefix + key, path=path)
    return value


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
