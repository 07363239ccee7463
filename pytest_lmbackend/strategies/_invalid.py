"""Ways to break a config dict that a reader must reject with a typed error or survive."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

#: The kinds of breakage `hf_configs(valid=False)` applies, one per config.
BREAKAGES: tuple[str, ...] = (
    "no_architectures",
    "empty_architectures",
    "string_architectures",
    "non_string_architecture",
    "null_architectures",
    "mistyped_number",
    "mistyped_section",
    "mistyped_quant_method",
    "auto_map_without_target",
)

_BAD_VALUES: tuple[Any, ...] = ("128", None, 0, -1, 1.5, True, [], {})
_NUMBER_KEYS = ("hidden_size", "num_attention_heads", "head_dim", "num_key_value_heads", "num_layers")
_SECTION_KEYS = (
    "llm_config",
    "text_config",
    "language_config",
    "vision_config",
    "quantization_config",
    "auto_map",
    "visual",
)
_BREAKAGE = st.sampled_from(BREAKAGES)
_NON_STRING_ARCH = st.sampled_from((lambda a: 123, lambda a: None, lambda a: [a], lambda a: {"name": a}))
_COIN = st.booleans()
_NUMBER_KEY = st.sampled_from(_NUMBER_KEYS)
_BAD_VALUE = st.sampled_from(_BAD_VALUES)
# an index into the keys present, drawn without building a strategy per config
_PICK_PRESENT = st.integers(0, len(_SECTION_KEYS) - 1).map(lambda i: lambda keys: keys[i % len(keys)])
_SECTION_KEY = st.sampled_from(_SECTION_KEYS)
_BAD_SECTION = st.sampled_from(([], "x", None, 1, [{"quant_method": "awq"}]))
_BAD_QUANT = st.sampled_from(({"quant_method": 5}, {"quant_method": None}, "smooth_quant", {"bits": 4}))
_AUTO_MAP_WITHOUT_TARGET = st.sampled_from(
    ({}, {"AutoConfig": "configuration_x.XConfig"}, {"AutoModelForCausalLM": 7}, {"AutoModelForCausalLM": ""})
)


def break_config(draw: st.DrawFn, cfg: dict[str, Any]) -> dict[str, Any]:
    """One broken copy of `cfg` (the input is not modified)."""
    out = copy.deepcopy(cfg)
    kind = draw(_BREAKAGE)
    arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
    if kind == "no_architectures":
        out.pop("architectures", None)
        out.pop("auto_map", None)
        for nested in ("language_config", "llm_config", "text_config"):
            if isinstance(out.get(nested), dict):
                out[nested].pop("auto_map", None)
    elif kind == "empty_architectures":
        out["architectures"] = []
    elif kind == "string_architectures":
        out["architectures"] = arch
    elif kind == "non_string_architecture":
        out["architectures"] = [draw(_NON_STRING_ARCH)(arch)]
    elif kind == "null_architectures":
        out["architectures"] = None
    elif kind == "mistyped_number":
        target: dict[str, Any] = out
        inner = [k for k in ("llm_config", "text_config", "language_config") if isinstance(out.get(k), dict)]
        if draw(_COIN) and inner:
            target = out[inner[0]]
        target[draw(_NUMBER_KEY)] = copy.deepcopy(draw(_BAD_VALUE))
    elif kind == "mistyped_section":
        present = [k for k in _SECTION_KEYS if k in out]
        key = draw(_PICK_PRESENT)(present) if present else draw(_SECTION_KEY)
        out[key] = copy.deepcopy(draw(_BAD_SECTION))
    elif kind == "mistyped_quant_method":
        out["quantization_config"] = copy.deepcopy(draw(_BAD_QUANT))
    else:  # auto_map_without_target
        out.pop("architectures", None)
        out["auto_map"] = copy.deepcopy(draw(_AUTO_MAP_WITHOUT_TARGET))
    return out
