"""Ways to break a config dict that a reader must reject with a typed error or survive."""

from __future__ import annotations

import copy
import json
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


# -- type swaps: one field a rule reads, given a value of another JSON type -------------------------

#: Fields LMDeploy's detection reads, as dotted paths (``architectures.0`` is the first entry); the
#: nested ones are read inside ``llm_config``, ``text_config`` and ``language_config`` too.
RULE_FIELDS: tuple[str, ...] = (
    "architectures", "architectures.0", "model_type", "auto_map", "auto_map.AutoModelForCausalLM",
    "auto_map.AutoConfig", "quantization_config", "quantization_config.quant_method", "hidden_size",
    "num_attention_heads", "head_dim", "num_key_value_heads", "num_layers", "vision_config",
    "vision_config.model_type", "language_config", "llm_config", "text_config", "visual", "rope_scaling",
    "torch_dtype",
)
SUB_CONFIG_FIELDS: tuple[str, ...] = (
    "", "architectures", "architectures.0", "model_type", "hidden_size", "num_attention_heads", "head_dim",
    "num_key_value_heads", "quantization_config", "auto_map", "auto_map.AutoModelForCausalLM",
)
_SUBS = ("llm_config", "text_config", "language_config")
#: The types a swapped value takes.
SWAP_KINDS: tuple[str, ...] = (
    "str", "float", "frac", "true", "false", "null", "list", "int", "dict", "empty",
)
_SWAP_KIND = st.sampled_from(SWAP_KINDS)
_PATH_INDEX = st.integers(0, 10_000)


def rule_paths(cfg: dict[str, Any]) -> list[tuple[str, ...]]:
    """The fields of ``cfg`` a rule reads, as key paths (nested sub-configs included)."""
    paths = [tuple(p.split(".")) for p in RULE_FIELDS]
    for sub in _SUBS:
        if isinstance(cfg.get(sub), dict):
            paths += [(sub, *p.split(".")) if p else (sub,) for p in SUB_CONFIG_FIELDS]
    return [p for p in paths if _present(cfg, p)]


def _present(node: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _set(node: Any, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = path[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def swapped_value(original: Any, kind: str) -> Any:
    """``original`` as a value of another JSON type: ``str`` of a number is its text (``"128"``), of a
    list its first string (``"LlamaForCausalLM"``); ``float`` is the same number as a float (128.0),
    ``frac`` one with a fraction (128.5); ``list`` wraps it."""
    is_number = isinstance(original, (int, float)) and not isinstance(original, bool)
    if kind == "str":
        if is_number or isinstance(original, bool) or original is None:
            return json.dumps(original)
        if isinstance(original, list):
            return original[0] if original and isinstance(original[0], str) else "x"
        return "x" if isinstance(original, dict) else original + "x"
    if kind == "float":
        return float(original) if is_number else 1.0
    if kind == "frac":
        return original + 0.5 if is_number else 0.5
    if kind in ("true", "false"):
        return kind == "true"
    if kind == "null":
        return None
    if kind == "list":
        return [copy.deepcopy(original)]
    if kind == "int":
        return int(original) if is_number else 7
    if kind == "dict":
        return {}
    return "" if not is_number else 0  # empty: the falsy value of the kind a field usually holds


@st.composite
def _swapped(draw: st.DrawFn, configs: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    cfg = draw(configs)
    paths = rule_paths(cfg)
    if not paths:
        return cfg
    path = paths[draw(_PATH_INDEX) % len(paths)]
    out = copy.deepcopy(cfg)
    _set(out, path, swapped_value(_get(cfg, path), draw(_SWAP_KIND)))
    return out


def type_swapped(
    configs: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Configs with one field a rule reads (``RULE_FIELDS``, at the top level or in a nested language
    config) given a value of another type (``SWAP_KINDS``: a string, a float, a boolean, null, a list,
    ...), the way a hand-edited or converted ``config.json`` goes wrong.

    :param configs: the configs to mutate; default ``hf_configs()``.
    """
    if configs is not None and not isinstance(configs, st.SearchStrategy):
        raise TypeError(f"type_swapped(configs=...): a Hypothesis strategy of config dicts, "
                        f"not {configs!r:.80}")
    if configs is None:
        from ._configs import hf_configs

        configs = hf_configs()
    return _swapped(configs)
