"""Synthetic Hugging Face model folders: a config, optional tiny random weights and a local tokenizer."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "WEIGHT_ARCHITECTURES",
    "ModelDirError",
    "RawConfig",
    "TokenizerInfo",
    "tiny_llama",
    "tiny_llama_config",
    "transformers_config",
    "weight_shapes",
    "workspace_yaml",
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


@dataclass(frozen=True)
class _Family:
    """What transformers' config class for one model type fills in when config.json leaves a field
    out, for the fields that decide the checkpoint's tensors (transformers 5.17.0,
    ``models/<type>/configuration_<type>.py``: class defaults, then ``__post_init__``), and which
    optional tensors its modelling code builds. Read as data: transformers is never imported here.

    :param defaults: class defaults of the size fields. ``num_key_value_heads`` absent takes the
        default; given as null it becomes ``num_attention_heads`` (every class's ``__post_init__``).
    :param head_dim: the class default of ``head_dim``; None: ``hidden_size // num_attention_heads``
        (Llama and Mistral compute it in ``__post_init__``, Qwen2 has no such field and its attention
        reads ``getattr(config, "head_dim", hidden_size // num_attention_heads)``).
    :param attention_bias_field: q/k/v/o biases follow an ``attention_bias`` field (default False).
    :param mlp_bias_field: gate/up/down biases follow an ``mlp_bias`` field (default False).
    :param qkv_bias: q/k/v always have biases and o never (Qwen2).
    """

    model_type: str
    architecture: str
    defaults: Mapping[str, int]
    head_dim: int | None = None
    has_head_dim_field: bool = True
    attention_bias_field: bool = False
    mlp_bias_field: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False


_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _sizes(vocab: int, intermediate: int, kv_heads: int | None) -> dict[str, int]:
    sizes = {"vocab_size": vocab, "hidden_size": 4096, "intermediate_size": intermediate,
             "num_hidden_layers": 32, "num_attention_heads": 32}
    return sizes if kv_heads is None else {**sizes, "num_key_value_heads": kv_heads}


# The model types synthetic weights are written for, with transformers 5.17.0's defaults.
_FAMILIES: dict[str, _Family] = {f.model_type: f for f in (
    _Family("llama", "LlamaForCausalLM", _sizes(32000, 11008, None),
            attention_bias_field=True, mlp_bias_field=True),
    _Family("mistral", "MistralForCausalLM", _sizes(32000, 14336, 8)),
    _Family("qwen2", "Qwen2ForCausalLM", _sizes(151936, 22016, 32), has_head_dim_field=False, qkv_bias=True),
    _Family("qwen3", "Qwen3ForCausalLM", _sizes(151936, 22016, 32), head_dim=128, attention_bias_field=True,
            qk_norm=True),
)}
_BY_ARCHITECTURE = {f.architecture: f for f in _FAMILIES.values()}
#: The architectures ``write_model_dir(..., weights=True)`` writes random weights for.
WEIGHT_ARCHITECTURES: tuple[str, ...] = tuple(_BY_ARCHITECTURE)

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


class RawConfig(Protocol):
    """A ``config.json`` given as a file-system layout rather than a mapping (hostile bytes, a
    folder named config.json, ...): ``strategies.MalformedConfig`` is one."""

    def write(self, folder: Path) -> Path: ...


def write_model_dir(
    path: str | Path,
    config: Mapping[str, Any] | RawConfig,
    *,
    weights: bool = False,
    tokenizer: bool = False,
    seed: int = 0,
    max_parameters: int = MAX_PARAMETERS,
    workspace: bool = False,
) -> Path:
    """Write ``config.json`` (and, when asked, weights, a tokenizer, a TurboMind workspace) into
    ``path``, created if need be; return the folder.

    :param config: a mapping, or a ``RawConfig`` laid out as it is (no weights or tokenizer then).
    :param weights: random safetensors weights for one of ``WEIGHT_ARCHITECTURES`` (needs torch and
        safetensors). The fields that decide the tensors and that the config leaves out are filled as
        transformers' config class for its model type fills them, and written into config.json
        with ``model_type`` (``transformers_config``), so transformers and LMDeploy read one model.
    :param tokenizer: a byte-level BPE of the config's ``vocab_size``, trained here (needs
        ``tokenizers``), never downloaded.
    :param workspace: a minimal TurboMind workspace beside it (``triton_models/weights/config.yaml``).
    """
    folder = Path(path)
    if not isinstance(config, Mapping):
        if weights or tokenizer:
            raise ModelDirError("weights and a tokenizer need the config as a mapping, not a raw layout",
                                path=folder / "config.json")
        folder.mkdir(parents=True, exist_ok=True)
        config.write(folder)
        if workspace:
            _write_workspace(folder, None)
        return folder
    cfg = dict(config)
    # every check before the first file: bad input leaves no half-written folder
    if weights:
        filled = transformers_config(cfg, path=folder / "config.json")
        shapes = _checked_shapes(filled, cfg, folder / "config.json", max_parameters)
        dtype_name, std = _weight_settings(cfg, folder / "config.json")
        cfg.update((k, v) for k, v in filled.items() if k not in cfg)
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
    if weights:
        _write_weights(folder, shapes, seed, dtype_name, std)
    _write_json(folder / "config.json", cfg)
    if workspace:
        _write_workspace(folder, cfg)
    return folder


def workspace_yaml(arch: str) -> str:
    """A minimal TurboMind workspace config, in the block style ``lmdeploy convert`` writes."""
    # a JSON string is also a YAML scalar: quote anything that is not a plain identifier
    scalar = arch if arch.replace("_", "").replace(".", "").isalnum() else json.dumps(arch)
    return f"model_config:\n  model_arch: {scalar}\n"


def _write_workspace(folder: Path, config: Mapping[str, Any] | None) -> None:
    target = folder / "triton_models" / "weights"
    target.mkdir(parents=True)
    archs = config.get("architectures") if config is not None else None
    arch = str(archs[0]) if isinstance(archs, list) and archs else "LlamaForCausalLM"
    (target / "config.yaml").write_text(workspace_yaml(arch), encoding="utf-8")


def transformers_config(config: Mapping[str, Any], *, path: Path | None = None) -> dict[str, Any]:
    """The tensor-deciding fields of ``config`` as transformers (5.17.0) reads them for its model
    type: ``model_type`` (from the architecture when absent), the sizes, ``num_key_value_heads``,
    ``head_dim``, the bias switches and ``tie_word_embeddings``, each given or defaulted as that
    model type's config class does. ``ModelDirError`` names the field when the architecture is not
    one of ``WEIGHT_ARCHITECTURES``, disagrees with ``model_type``, or a size is not usable."""
    family = _family(config, path)
    out: dict[str, Any] = {"model_type": family.model_type}
    for key in _SIZES:
        out[key] = _positive_int(config, key, path) if key in config else family.defaults[key]
    heads = out["num_attention_heads"]
    kv = config.get("num_key_value_heads", family.defaults.get("num_key_value_heads"))
    out["num_key_value_heads"] = heads if kv is None else _positive_int({"num_key_value_heads": kv},
                                                                        "num_key_value_heads", path)
    if config.get("head_dim") is not None:
        head_dim = _positive_int(config, "head_dim", path)
    elif "head_dim" in config and not (family.has_head_dim_field and family.head_dim is None):
        # only Llama's and Mistral's __post_init__ turn a null head_dim into hidden_size // heads
        raise ModelDirError(f"null is not a head size {family.model_type}'s attention can use; give a number "
                            "or leave it out", field="head_dim", path=path)
    elif family.head_dim is not None and "head_dim" not in config:
        head_dim = family.head_dim
    elif out["hidden_size"] < heads:
        raise ModelDirError(f"{out['hidden_size']} is smaller than num_attention_heads={heads}: heads of "
                            "size 0 (set head_dim)", field="hidden_size", path=path)
    else:
        head_dim = out["hidden_size"] // heads  # rounded down, as transformers does
    if family.model_type == "llama" and out["hidden_size"] % heads:
        # LlamaConfig.validate_architecture refuses this whatever head_dim says
        raise ModelDirError(f"{out['hidden_size']} is not a multiple of {heads} heads (transformers' "
                            "LlamaConfig refuses it)", field="hidden_size", path=path)
    out["head_dim"] = head_dim
    if family.attention_bias_field:
        out["attention_bias"] = _flag(config, "attention_bias", path)
    if family.mlp_bias_field:
        out["mlp_bias"] = _flag(config, "mlp_bias", path)
    out["tie_word_embeddings"] = _flag(config, "tie_word_embeddings", path)
    return out


def _family(config: Mapping[str, Any], path: Path | None) -> _Family:
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    by_arch = _BY_ARCHITECTURE.get(arch) if arch is not None else None
    if by_arch is None:
        raise ModelDirError(f"random weights need one of {', '.join(WEIGHT_ARCHITECTURES)}; got {archs!r}",
                            field="architectures", path=path)
    model_type = config.get("model_type", by_arch.model_type)
    if model_type != by_arch.model_type:
        # transformers builds the class of the model type, whose tensors differ from the architecture's
        raise ModelDirError(f"{model_type!r} does not go with architecture {arch} (model_type "
                            f"{by_arch.model_type!r}): transformers would build another model",
                            field="model_type", path=path)
    return by_arch


def _flag(config: Mapping[str, Any], key: str, path: Path | None) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ModelDirError(f"must be true or false, got {value!r}", field=key, path=path)
    return value


def weight_shapes(config: Mapping[str, Any], *, path: Path | None = None) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the checkpoint transformers builds for ``config`` (one of
    ``WEIGHT_ARCHITECTURES``; fields it leaves out as ``transformers_config`` fills them)."""
    filled = transformers_config(config, path=path)
    family = _FAMILIES[filled["model_type"]]
    hidden, inter, vocab = filled["hidden_size"], filled["intermediate_size"], filled["vocab_size"]
    q_out = filled["num_attention_heads"] * filled["head_dim"]
    kv_out = filled["num_key_value_heads"] * filled["head_dim"]
    qkv_bias = family.qkv_bias or filled.get("attention_bias", False)
    o_bias = filled.get("attention_bias", False)
    mlp_bias = filled.get("mlp_bias", False)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(filled["num_hidden_layers"]):
        p = f"model.layers.{i}."
        attn = {"q_proj": (q_out, hidden), "k_proj": (kv_out, hidden), "v_proj": (kv_out, hidden),
                "o_proj": (hidden, q_out)}
        for name, shape in attn.items():
            shapes[f"{p}self_attn.{name}.weight"] = shape
            if (qkv_bias and name != "o_proj") or (o_bias and name == "o_proj"):
                shapes[f"{p}self_attn.{name}.bias"] = (shape[0],)
        if family.qk_norm:
            shapes[p + "self_attn.q_norm.weight"] = (filled["head_dim"],)
            shapes[p + "self_attn.k_norm.weight"] = (filled["head_dim"],)
        for name, shape in {"gate_proj": (inter, hidden), "up_proj": (inter, hidden),
                            "down_proj": (hidden, inter)}.items():
            shapes[f"{p}mlp.{name}.weight"] = shape
            if mlp_bias:
                shapes[f"{p}mlp.{name}.bias"] = (shape[0],)
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    if not filled["tie_word_embeddings"]:
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


def _checked_shapes(filled: Mapping[str, Any], given: Mapping[str, Any], path: Path,
                    max_parameters: int) -> dict[str, tuple[int, ...]]:
    shapes = weight_shapes({**given, **filled}, path=path)
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > max_parameters:
        defaulted = [f"{k}={filled[k]}" for k in _SIZES if k not in given]
        why = (f" ({', '.join(defaulted)} are transformers' defaults for {filled['model_type']}: set them)"
               if defaulted else "")
        raise ModelDirError(
            f"random weights of {count:,} parameters exceed max_parameters={max_parameters:,}{why}; "
            "shrink hidden_size, num_hidden_layers or vocab_size, or raise max_parameters",
            path=path,
        )
    return shapes


def _weight_settings(config: Mapping[str, Any], path: Path) -> tuple[str, float]:
    """The weights' dtype (``dtype``, else ``torch_dtype``, else bfloat16) and the spread of their
    random values (``initializer_range``), checked before any file is written."""
    key = "dtype" if config.get("dtype") is not None else "torch_dtype"
    name = config.get(key) or "bfloat16"
    if not isinstance(name, str) or name.removeprefix("torch.") not in _DTYPES:
        raise ModelDirError(f"{name!r} is not one of {', '.join(_DTYPES)}", field=key, path=path)
    std = config.get("initializer_range", 0.02)
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std <= 1e3:
        raise ModelDirError(f"must be a number from 0 to 1000, got {std!r}", field="initializer_range",
                            path=path)
    return name.removeprefix("torch."), float(std)


def _write_weights(
    folder: Path, shapes: Mapping[str, tuple[int, ...]], seed: int, dtype_name: str, std: float
) -> None:
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            tensors[name] = torch.zeros(shape, dtype=dtype)
        else:
            tensors[name] = (torch.randn(shape, generator=gen) * std).to(dtype)
    target = folder / "model.safetensors"
    save_file(tensors, str(target), metadata={"format": "pt"})
    # safetensors writes it 0600 (a private temporary file moved into place); the rest follows the umask
    from pytest_lmbackend.processes import current_umask

    target.chmod(0o666 & ~current_umask())


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
    try:
        text = json.dumps(data, indent=2, sort_keys=True)
    except TypeError:  # keys of mixed types cannot be sorted: keep the given order
        text = json.dumps(data, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
