"""`hf_configs()`: Hugging Face `config.json` dicts shaped like real checkpoints, drawn to shrink well."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from hypothesis import strategies as st

from ._families import FAMILIES, FAMILY_TABLE, Family, named_by
from ._invalid import break_config
from ._quant import QUANT_SECTIONS, QUANTIZATIONS

# Every `sampled_from` lists its most common value first: that is what a shrunk example shows.
_HEADS = (32, 16, 8, 40, 64, 28, 12, 14)
_HEAD_DIMS = (128, 64, 96, 80, 256, 112)
_LAYERS = (32, 2, 24, 28, 40, 48, 80)
_VOCABS = (32000, 151936, 128256, 92544)

_PYTORCH_ONLY_TYPES = {
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "Phi3ForCausalLM": "phi3",
    "CohereForCausalLM": "cohere",
    "GPTBigCodeForCausalLM": "gpt_bigcode",
    "Gemma2ForCausalLM": "gemma2",
    "MiniCPM3ForCausalLM": "minicpm3",
    "DeciLMForCausalLM": "nemotron-nas",
    "Glm4MoeForCausalLM": "glm4_moe",
}
_UNKNOWN_PREFIXES = ("Zeta", "Orca", "Nova", "Aurora", "Falcon", "Bloom", "Mamba", "Xverse")
_UNKNOWN_SUFFIXES = ("ForCausalLM", "LMHeadModel", "Model", "ForConditionalGeneration")

# Language models found nested inside multimodal configs (arch, model_type).
_INNER_LLMS = (
    ("LlamaForCausalLM", "llama"),
    ("Qwen2ForCausalLM", "qwen2"),
    ("InternLM2ForCausalLM", "internlm2"),
    ("Qwen3ForCausalLM", "qwen3"),
    ("MistralForCausalLM", "mistral"),
    ("Phi3ForCausalLM", "phi3"),
)
_TEXT_CONFIG_TYPES = {
    "gemma3": "gemma3_text",
    "llama4": "llama4_text",
    "mllama": "mllama_text_model",
    "qwen3_vl": "qwen3_vl_text",
    "qwen3_5": "qwen3_5_text",
}

#: Keys real configs carry that no detection rule reads, with a plausible value each.
IRRELEVANT_KEYS: dict[str, Any] = {
    "transformers_version": "4.46.0",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "rope_theta": 1000000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-06,
    "max_position_embeddings": 32768,
    "initializer_range": 0.02,
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "rope_scaling": {"type": "dynamic", "factor": 2.0},
    "_name_or_path": "org/model",
    "sliding_window": 4096,
    "custom_note": "added by a fine-tuning script",
}

# Strategies are built once here: building them inside a draw costs more than the draw itself.
_LAYER_COUNT = st.sampled_from(_LAYERS)
_COIN = st.booleans()
_HD_OR_COMMON = st.sampled_from((0, 1, 2, 3)).map(lambda i: {hd: (hd, 128, 64, 80)[i] for hd in _HEAD_DIMS})
_KV_HEADS = st.sampled_from((0, 8, 4, 1))
# Pairs drawn as one choice: fewer draws per config is most of the generation speed, and a
# shrunk pair is still the first (most common) values.
_HEADS_AND_DIMS = st.sampled_from(tuple(itertools.product(_HEADS, _HEAD_DIMS)))
_LAYERS_AND_VOCABS = st.sampled_from(tuple(itertools.product(_LAYERS, _VOCABS)))
_EXPERTS = st.sampled_from((8, 64, 128, 16))
_EXPERTS_PER_TOKEN = st.sampled_from((2, 8, 4))
_ARCH_CHOICE = {f.name: st.sampled_from(f.archs) for f in FAMILY_TABLE if f.archs}
_UNKNOWN_PREFIX = st.sampled_from(_UNKNOWN_PREFIXES)
_UNKNOWN_SUFFIX = st.sampled_from(_UNKNOWN_SUFFIXES)
_UNKNOWN_MODEL_TYPE = st.sampled_from(("zeta", "orca_lm", None))
_INNER_LLM = st.sampled_from(_INNER_LLMS)
_CHATGLM_LAYERS = st.sampled_from((40, 28))
_CHATGLM_VOCAB = st.sampled_from((151552, 65024))
_QWEN_HEADS = st.sampled_from((32, 64, 40))
_RARELY = st.sampled_from((False, False, False, True))  # rarely: three in four configs keep the key
_QUANT_BITS = st.sampled_from((4, 8))
_IRRELEVANT_NAMES = sorted(IRRELEVANT_KEYS)
# One integer whose low bits pick the extra keys (at most four): a single draw, shrinking to none.
_IRRELEVANT = st.integers(0, 2 ** len(_IRRELEVANT_NAMES) - 1).map(
    lambda bits: (
        {k: IRRELEVANT_KEYS[k] for i, k in enumerate(_IRRELEVANT_NAMES) if bits >> i & 1}
        if bin(bits).count("1") <= 4
        else {
            k: IRRELEVANT_KEYS[k] for k in [n for i, n in enumerate(_IRRELEVANT_NAMES) if bits >> i & 1][:4]
        }
    )
)


def irrelevant_keys() -> st.SearchStrategy[dict[str, Any]]:
    """Extra top-level keys (with values) that must never change a detection answer."""
    return _IRRELEVANT


def _body(draw: st.DrawFn, *, moe: bool, explicit_head_dim: bool | None) -> dict[str, Any]:
    """The decoder fields every detection rule may read: sizes, heads, explicit or derived head_dim."""
    heads, head_dim = draw(_HEADS_AND_DIMS)
    layers, vocab = draw(_LAYERS_AND_VOCABS)
    body: dict[str, Any] = {
        "hidden_size": heads * head_dim,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
    }
    explicit = draw(_COIN) if explicit_head_dim is None else explicit_head_dim
    if explicit:
        # Qwen3-style: the explicit head_dim need not equal hidden_size // num_attention_heads.
        body["head_dim"] = head_dim
        body["hidden_size"] = heads * draw(_HD_OR_COMMON)[head_dim]
    kv = draw(_KV_HEADS)
    if kv and heads % kv == 0:
        body["num_key_value_heads"] = kv
    body["intermediate_size"] = body["hidden_size"] * 3
    body["vocab_size"] = vocab
    if moe:
        body["num_experts"] = draw(_EXPERTS)
        body["num_experts_per_tok"] = draw(_EXPERTS_PER_TOKEN)
        body["moe_intermediate_size"] = 768
    return body


def _vision_config(model_type: str | None) -> dict[str, Any]:
    vision: dict[str, Any] = {
        "hidden_size": 1024,
        "image_size": 448,
        "patch_size": 14,
        "num_hidden_layers": 24,
    }
    if model_type:
        vision["model_type"] = model_type
    return vision


def _draw_arch(draw: st.DrawFn, family: Family) -> str:
    if family.archs:
        return draw(_ARCH_CHOICE[family.name])
    return draw(_UNKNOWN_PREFIX) + draw(_UNKNOWN_SUFFIX)


def _model_type(draw: st.DrawFn, family: Family, arch: str) -> str | None:
    if family.name == "pytorch_only":
        return _PYTORCH_ONLY_TYPES[arch]
    if family.model_type is None:
        return draw(_UNKNOWN_MODEL_TYPE)
    return family.model_type


def _nested_llm(draw: st.DrawFn, *, with_arch: bool | None, model_type: str | None = None) -> dict[str, Any]:
    arch, inner_type = draw(_INNER_LLM)
    inner: dict[str, Any] = {}
    if with_arch is None:
        with_arch = draw(_COIN)
    if with_arch:
        inner["architectures"] = [arch]
    inner["model_type"] = model_type or inner_type
    inner.update(_body(draw, moe=False, explicit_head_dim=None))
    return inner


def _language_part(
    draw: st.DrawFn, family: Family, arch: str, cfg: dict[str, Any], vision: bool
) -> str | None:
    """Fill `cfg` with the family's language part; returns the key of a nested LLM config, if any."""
    shape = family.shape
    if shape == "text" or shape == "vision_top":
        cfg.update(_body(draw, moe=family.moe, explicit_head_dim=family.explicit_head_dim))
        if vision and family.name == "llava":
            cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
        elif vision and family.name not in ("molmo", "xcomposer2", "phi3v", "cogvlm"):
            cfg["vision_config"] = _vision_config(None)
        return None
    if shape == "chatglm":
        cfg.update(
            {
                "num_layers": draw(_CHATGLM_LAYERS),
                "hidden_size": 4096,
                "num_attention_heads": 32,
                "kv_channels": 128,
                "multi_query_group_num": 2,
                "padded_vocab_size": draw(_CHATGLM_VOCAB),
                "seq_length": 8192,
                "ffn_hidden_size": 13696,
            }
        )
        if vision:
            cfg["vision_config"] = {
                "hidden_size": 1792,
                "image_size": 1120,
                "patch_size": 14,
                "num_heads": 16,
                "num_hidden_layers": 63,
            }
        return None
    if shape == "qwen":
        heads = draw(_QWEN_HEADS)
        cfg.update(
            {
                "hidden_size": heads * 128,
                "num_attention_heads": heads,
                "kv_channels": 128,
                "num_hidden_layers": draw(_LAYER_COUNT),
                "seq_length": 8192,
                "vocab_size": 151936,
            }
        )
        if vision:
            cfg["visual"] = {
                "image_size": 448,
                "patch_size": 14,
                "width": 1664,
                "layers": 48,
                "heads": 16,
                "output_dim": 4096,
            }
        return None
    if shape == "llm_config":
        cfg["llm_config"] = _nested_llm(draw, with_arch=True)
        cfg["vision_config"] = _vision_config("intern_vit_6b")
        cfg["template"] = "internvl2_5"
        return "llm_config"
    if shape == "text_config":
        cfg["text_config"] = _nested_llm(draw, with_arch=None, model_type=_TEXT_CONFIG_TYPES.get(family.name))
        cfg["vision_config"] = _vision_config(None)
        return "text_config"
    # language_config: DeepSeek-VL v1 (a Llama inside) or v2 (a DeepseekV2 inside)
    language: dict[str, Any] = {}
    if arch == "DeepseekVLV2ForCausalLM":
        language["architectures"] = ["DeepseekV2ForCausalLM"]
        language["model_type"] = "deepseek_v2"
    else:
        language["architectures"] = ["LlamaForCausalLM"]
        language["model_type"] = "llama"
    language.update(_body(draw, moe=False, explicit_head_dim=False))
    cfg["language_config"] = language
    cfg["vision_config"] = _vision_config(None)
    return "language_config"


@st.composite
def _config(
    draw: st.DrawFn,
    families: st.SearchStrategy[Family],
    vl: bool | None,
    quantizations: st.SearchStrategy[str],
    valid: bool,
) -> dict[str, Any]:
    family = draw(families)
    arch = _draw_arch(draw, family)
    if family.vision is None:
        vision = draw(_COIN) if vl is None else vl
    else:
        vision = family.vision
    cfg: dict[str, Any] = {"architectures": [arch]}
    model_type = _model_type(draw, family, arch)
    if model_type is not None:
        cfg["model_type"] = model_type
    nested = _language_part(draw, family, arch, cfg, vision)

    auto_map_module = family.auto_map
    if auto_map_module is None and not family.tabled and draw(_COIN):
        auto_map_module = "modeling_custom"  # a remote-code model LMDeploy does not know
    if auto_map_module is not None:
        cfg["auto_map"] = {
            "AutoConfig": f"configuration_{model_type or 'custom'}.CustomConfig",
            "AutoModelForCausalLM": f"{auto_map_module}.{arch}",
        }
        # LMDeploy falls back to auto_map's class name when `architectures` is absent
        if draw(_RARELY):
            del cfg["architectures"]
    elif nested == "language_config" and draw(_RARELY):
        # DeepSeek-VL without `architectures`: the arch comes from language_config.auto_map
        del cfg["architectures"]
        cfg["language_config"]["auto_map"] = {"AutoModelForCausalLM": f"modeling_deepseek.{arch}"}

    quant = draw(quantizations)
    if quant == "quantization_bit":
        cfg["quantization_bit"] = draw(_QUANT_BITS)
    elif quant != "none":
        section = draw(QUANT_SECTIONS[quant])
        if nested is not None and draw(_COIN):
            cfg[nested]["quantization_config"] = section
        else:
            cfg["quantization_config"] = section

    cfg.update(draw(_IRRELEVANT))
    if not valid:
        cfg = break_config(draw, cfg)
    return cfg


def _select_families(
    family: str | Iterable[str] | None, vl: bool | None, lmdeploy: str | None
) -> tuple[Family, ...]:
    if family is None:
        chosen = FAMILY_TABLE
    else:
        names = (family,) if isinstance(family, str) else tuple(family)
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            raise ValueError(f"hf_configs(family=...): unknown family {unknown!r}; known: {sorted(FAMILIES)}")
        chosen = tuple(FAMILIES[n] for n in names)
    if vl is not None:
        chosen = tuple(f for f in chosen if f.vision is None or f.vision == vl)
    if lmdeploy is not None:
        chosen = tuple(f for f in chosen if not f.tabled or named_by(f, lmdeploy))
    if not chosen:
        raise ValueError(f"hf_configs: no family matches family={family!r}, vl={vl!r}, lmdeploy={lmdeploy!r}")
    return chosen


def _names(value: object, what: str, strategy: str = "hf_configs") -> tuple[str, ...] | None:
    """None, one name or an iterable of names; anything else is the caller's mistake, said now."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        names = tuple(value)
        if all(isinstance(n, str) for n in names):
            return names
    raise TypeError(f"{strategy}({what}=...): a name or a list of names, not {value!r:.80}")


def _flag(value: object, what: str, *, optional: bool) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        allowed = "True, False or None" if optional else "True or False"
        raise TypeError(f"hf_configs({what}=...): {allowed}, not {value!r}")


def _answered(release: str) -> Any:
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.rules import detect

    def answered(cfg: dict[str, Any]) -> bool:
        # Every typed error means LMDeploy raises too (an LMDeployCrashError says so outright; a
        # MissingArchitectureError is its RuntimeError, a MissingFieldError its AttributeError, ...).
        try:
            detect(cfg, lmdeploy=release)
        except ConfigError:
            return False
        return True

    return answered


def hf_configs(
    family: str | Iterable[str] | None = None,
    vl: bool | None = None,
    quantization: str | Iterable[str] | None = None,
    lmdeploy: str | None = None,
    valid: bool = True,
    answered_by: str | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Hugging Face `config.json` dicts shaped like real checkpoints.

    :param family: one family name or several (see ``FAMILIES``); None draws from all of them,
        unknown architectures included.
    :param vl: True for configs with a vision part only, False for text-only ones, None for both.
    :param quantization: one kind or several of ``QUANTIZATIONS`` ("none" = no quantization
        section); None draws any, none included.
    :param lmdeploy: a release: only families whose architectures that release's detection
        tables name, plus the families no table names.
    :param valid: False breaks each config in one way a reader must reject or survive
        (missing, empty or mistyped `architectures`, mistyped numbers, mistyped sections).
    :param answered_by: a release: only configs that release answers, i.e. on which ``detect``
        raises no typed error. Valid configs include some LMDeploy itself fails on (an arch named
        only by ``auto_map`` makes ``check_vl_llm`` raise, older releases find no arch in
        ``language_config.auto_map``), for which ``detect`` raises a ``ConfigError``.
    """
    _flag(vl, "vl", optional=True)
    _flag(valid, "valid", optional=False)
    families = _select_families(_names(family, "family"), vl, lmdeploy)
    quants_given = _names(quantization, "quantization")
    if quants_given is None:
        quants = QUANTIZATIONS
    else:
        quants = quants_given
        bad = [q for q in quants if q not in QUANTIZATIONS]
        if bad or not quants:
            raise ValueError(
                f"hf_configs(quantization=...): unknown kind {bad!r}; known: {list(QUANTIZATIONS)}"
            )
    strategy = _config(st.sampled_from(families), vl, st.sampled_from(quants), valid)
    if answered_by is not None:
        from pytest_lmbackend.rules import resolve_release

        strategy = strategy.filter(_answered(str(resolve_release(answered_by))))
    return strategy
