"""How a release's transformers loads config.json before LMDeploy's rules read it.

LMDeploy asks ``AutoConfig.from_pretrained`` for the config and, where that raises, falls back to a bare
``PretrainedConfig.from_pretrained``. Which of the two answers decides what the rules then see: the
model type's own class fills defaults and builds sub-config objects; the bare config keeps the file's
values as they are, leaves sub-configs as dicts, and, where a sub-config's ``model_type`` is the empty
string, takes that sub-config for the whole config. Some files make the bare config raise too, and
LMDeploy with it. ``load`` decides all of this from the file, the folder and the release's transformers
(``rules/transformers/``, generated from the oracle environments), and returns the view the rules read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from pytest_lmbackend.config import ModelConfig
from pytest_lmbackend.rules.releases import RuleSet

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from typing import Any

    from pytest_lmbackend.rules.model_types import TransformersFacts

__all__ = ["STRICT", "crash", "kind", "load"]

#: transformers 5 validates a config class's fields by type (huggingface_hub's strict dataclasses)
STRICT = "StrictDataclassFieldValidationError"

# A class whose ``text_config`` is built by ``model_type`` through transformers' own mapping: an unknown
# or non-string ``text_config.model_type`` makes the class fail to build (KeyError).
# RoPE parameters transformers 5 requires per ``rope_type`` (``modeling_rope_utils``, 5.12.1 and 5.17.0);
# ``rope_type`` itself is always filled in.
_ROPE_REQUIRED: Mapping[str, frozenset[str]] = {
    "linear": frozenset({"factor"}),
    "dynamic": frozenset({"factor"}),
    "yarn": frozenset({"factor", "original_max_position_embeddings"}),
    "longrope": frozenset({"short_factor", "long_factor", "original_max_position_embeddings"}),
    "llama3": frozenset({"factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor",
                         "rope_theta"}),
    "proportional": frozenset({"rope_theta"}),
}
# ... of which a model type's own class fills these from its attributes (max_position_embeddings, rope_theta)
_CLASS_FILLS = frozenset({"original_max_position_embeddings", "rope_theta"})
_SCALED_ROPE = frozenset({"llama3", "yarn", "longrope"})
# transformers releases whose RoPE validation takes each value of a per-layer-type dict for a layer's
# parameters (5.12.1 still reads such a dict as one set of global parameters)
_PER_LAYER_ROPE = frozenset({"5.17.0"})
# transformers releases whose to_dict() names a non-string torch_dtype by str(value).split(".")[1]
_DTYPE_SPLIT = frozenset({"4.51.3"})


def kind(value: Any) -> str:
    """A JSON value's Python type name, as an exception message names it."""
    return "NoneType" if value is None else type(value).__name__


def crash(cfg: ModelConfig, field: str | None, rules: RuleSet, raises: str, message: str, *,
          wrong_type: bool = False) -> Exception:
    """The typed error for a config the release raises on (imported late: the engine defines it)."""
    from pytest_lmbackend.rules.engine import crash_error

    return crash_error(cfg.path, field, rules.release, raises, message, wrong_type=wrong_type)


_KNOWN: dict[str, frozenset[str]] = {}


def _facts(rules: RuleSet) -> TransformersFacts:
    from pytest_lmbackend.rules.model_types import facts

    return facts(rules.transformers)


def _known_types(rules: RuleSet) -> frozenset[str]:
    found = _KNOWN.get(rules.release)
    if found is None:
        found = _KNOWN[rules.release] = _facts(rules).known | rules.registered_types
    return found


def _known(model_type: Any, rules: RuleSet) -> bool:
    return isinstance(model_type, str) and model_type in _known_types(rules)


def _remote_config(data: Mapping[str, Any]) -> tuple[bool, Any]:
    """(whether transformers sees remote code for the config class, the class reference)."""
    auto_map: Any = data.get("auto_map")
    try:
        has = "auto_map" in data and "AutoConfig" in auto_map  # transformers' own test
    except TypeError:
        return False, None
    if not has:
        return False, None
    try:
        return True, auto_map["AutoConfig"]
    except (TypeError, KeyError, IndexError):
        return True, None


def _code_note(cfg: ModelConfig, ref: Any, rules: RuleSet) -> tuple[bool | None, str]:
    """Whether the remote config class's code is in the folder: True, False, or None (unknowable)."""
    if isinstance(ref, (list, tuple)) and ref:
        ref = ref[0]
    if not isinstance(ref, str) or "." not in ref:
        return False, f"auto_map.AutoConfig {ref!r:.60} names no class"
    if "--" in ref:
        return None, (f"auto_map.AutoConfig {ref!r} names code in another repository, which transformers "
                      "fetches from the hub: whether it loads cannot be known from the folder")
    module = ref.rsplit(".", 1)[0] + ".py"
    if cfg.folder is None:
        return None, (f"a mapping has no folder: LMDeploy {rules.release} loads this config with its remote "
                      f"code ({module}), and fails where the folder lacks it; answered as a checkpoint that "
                      "ships it")
    if os.path.isfile(os.path.join(cfg.folder, module)):
        return True, f"its config class is remote code ({module}, in the folder)"
    return False, f"its config class is remote code, and {module} is not in the folder"


def _guess_from_path(cfg: ModelConfig, rules: RuleSet) -> str | None:
    """transformers 4's last resort for a config without ``model_type``: the longest model type that
    is a substring of the path LMDeploy was given (transformers 5 has dropped it)."""
    if rules.transformers_major >= 5 or cfg.folder is None:
        return None
    path = cfg.folder
    for pattern in sorted(_facts(rules).known, key=len, reverse=True):
        if pattern in path:
            return pattern
    return None


def _rope(data: Mapping[str, Any]) -> tuple[str, Any]:
    """The RoPE parameters a config carries (``rope_scaling`` wins when truthy) and under which key."""
    scaling = data.get("rope_scaling")
    if scaling:
        return "rope_scaling", scaling
    return "rope_parameters", data.get("rope_parameters")


def _rope_type(rope: Mapping[str, Any]) -> Any:
    return rope.get("rope_type", rope.get("type", "default"))


def _rope_error(data: Mapping[str, Any], rules: RuleSet, *, bare: bool) -> tuple[str, str, str] | None:
    """(field, exception, message) where transformers 5 rejects the RoPE parameters, else None."""
    key, rope = _rope(data)
    if not rope:
        return None
    if not isinstance(rope, Mapping):
        return key, "AttributeError", f"'{kind(rope)}' object has no attribute 'get'"
    if not bare:
        model_type = data.get("model_type")
        # a class without rope_parameters of its own standardises a top-level rope_scaling as a bare
        # config does
        loose = isinstance(model_type, str) and model_type in _facts(rules).without_rope_parameters
    else:
        loose = True
    layer_types = data.get("layer_types")
    if rules.transformers in _PER_LAYER_ROPE and isinstance(layer_types, list) and all(
        isinstance(t, str) for t in layer_types
    ) and not set(rope).isdisjoint(layer_types):
        # RoPE parameters per layer type: every value is a layer's parameters (or None)
        for name, layer in rope.items():
            if layer is not None and not isinstance(layer, Mapping):
                return (f"{key}.{name}", "AttributeError",
                        f"per-layer RoPE parameters, and {name!r} holds a {kind(layer)} "
                        f"('{kind(layer)}' object has no attribute 'get')")
            if isinstance(layer, Mapping):
                found = _required(layer, bare=bare)
                if found is not None:
                    return f"{key}.{name}", "KeyError", found
        return None
    if loose and data.get("rope_scaling") and data.get("rope_theta"):
        # the bare config standardises rope_scaling before it has set max_position_embeddings
        if isinstance(_rope_type(rope), str) and _rope_type(rope) in _SCALED_ROPE:
            return (key, "AttributeError",
                    "'PreTrainedConfig' object has no attribute 'max_position_embeddings' (a bare config "
                    f"standardises a {_rope_type(rope)} rope_scaling before it has read "
                    "max_position_embeddings)")
        return None
    found = _required(rope, bare=bare)
    return None if found is None else (key, "KeyError", found)


def _required(rope: Mapping[str, Any], *, bare: bool) -> str | None:
    rope_type = _rope_type(rope)
    required = _ROPE_REQUIRED.get(rope_type) if isinstance(rope_type, str) else None
    if required is None:
        return None
    if not bare:
        required = required - _CLASS_FILLS
    missing = sorted(required - set(rope))
    if missing:
        return f"Missing required keys in `rope_parameters` for 'rope_type'='{rope_type}': {set(missing)}"
    return None


def _dtype_keys(rules: RuleSet) -> tuple[str, ...]:
    return ("torch_dtype",) if rules.transformers in _DTYPE_SPLIT else ("torch_dtype", "dtype")


def _dtype_name_error(value: Any, rules: RuleSet) -> str | None:
    """Why transformers cannot take ``value`` as a torch dtype name (``getattr(torch, value)``)."""
    if isinstance(value, str) and value not in _facts(rules).torch_dtypes:
        return f"module 'torch' has no attribute {value!r:.40}"
    return None


def _dtype_error(data: Mapping[str, Any], rules: RuleSet, path: str = "") -> tuple[str, str, str] | None:
    """(field, exception, message) where transformers fails on the dtype a config names: a string that
    is no torch dtype [AttributeError] or a list [IndexError] at the top level; in nested objects too,
    a list ``dtype`` (4.57 on), and under transformers 4.51 any ``torch_dtype`` that is not a string
    and has no dot (it names it by ``str(value).split(".")[1]``) [IndexError]."""
    old = rules.transformers in _DTYPE_SPLIT
    for key in _dtype_keys(rules):
        if key not in data:
            continue
        value = data[key]
        why = _dtype_name_error(value, rules) if not path else None
        if why is not None:
            return f"{path}{key}", "AttributeError", why
        split = old and key == "torch_dtype" and value is not None and not isinstance(value, (str, Mapping))
        if (isinstance(value, list) and (not path or key == "dtype")) or (
            split and len(str(value).split(".")) < 2
        ):
            return (f"{path}{key}", "IndexError",
                    f"it is a {kind(value)} ({value!r:.30}), and transformers {rules.transformers} takes "
                    "str(value).split('.')[1] for its name")
    for key, inner in data.items():
        if isinstance(inner, Mapping):
            found = _dtype_error(inner, rules, f"{path}{key}.")
            if found is not None:
                return found
    return None


def _layer_types_error(data: Mapping[str, Any], rules: RuleSet) -> str | None:
    """transformers 5 accepts only the ``layer_types`` entries it knows (a class validator)."""
    layer_types = data.get("layer_types")
    if not isinstance(layer_types, list):
        return None
    allowed = _facts(rules).allowed_layer_types
    if allowed is None:
        return None
    odd = [t for t in layer_types if not (isinstance(t, str) and t in allowed)]
    if odd:
        return (f"ValueError: The `layer_types` entries must be in {tuple(sorted(allowed))!r:.80} "
                f"(transformers {rules.transformers}), got {odd[0]!r:.40}")
    return None


def _replacement(data: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """The sub-config a bare ``PretrainedConfig.from_pretrained`` takes for the whole config: a top-level
    ``model_type`` other than "" makes it look for a dict whose ``model_type`` is "" (the bare class's)."""
    if "model_type" not in data or data["model_type"] == "":
        return None
    found = None
    for key, value in data.items():
        if isinstance(value, Mapping) and value.get("model_type") == "":
            found = (key, value)  # the last one wins: transformers keeps reassigning
    return found


def load(cfg: ModelConfig, rules: RuleSet) -> ModelConfig:
    """The config as LMDeploy of ``rules.release`` sees it after transformers loaded it.

    :raises LMDeployCrashError: where loading it raises in that release.
    """
    data = cfg.data
    assert data is not None
    notes: list[str] = []
    strict = rules.transformers_major >= 5
    archs = data.get("architectures")
    names = isinstance(archs, list) and all(isinstance(a, str) for a in archs)
    if strict and archs is not None and not names:
        raise crash(cfg, "architectures", rules, STRICT,
                    f"the transformers {rules.transformers} this release runs with requires a list of "
                    f"strings, got {kind(archs)} {archs!r:.60}", wrong_type=True)
    model_type = data.get("model_type")
    remote, ref = _remote_config(data)
    typed: bool
    if remote and rules.trust_remote_code:
        has_code, why = _code_note(cfg, ref, rules)
        notes.append(why)
        typed = has_code is not False  # unknowable: answered as the checkpoint that ships it
    elif remote and not _known(model_type, rules):
        typed = False
        notes.append(f"its config class is remote code, which LMDeploy {rules.release} does not run "
                     "(trust_remote_code=False), and transformers has no class of its own for it")
    elif "model_type" not in data:
        guessed = _guess_from_path(cfg, rules)
        typed = guessed is not None
        if guessed is not None:
            model_type = guessed
            notes.append(f"no model_type: transformers {rules.transformers} takes {guessed!r} from the "
                         f"folder's path ({cfg.folder}); another folder name can give another answer")
        elif cfg.folder is None:
            notes.append("no model_type: a bare config (transformers 4 would guess a config class from the "
                         "folder's path, which a mapping does not have)")
        else:
            notes.append("no model_type, and none in the folder's path: a bare config")
    elif not _known(model_type, rules):
        typed = False
        notes.append(f"transformers {rules.transformers} knows no model_type {model_type!r:.60}: LMDeploy "
                     "reads a bare config (no defaults, sub-configs as dicts)")
    else:
        typed = True
    if not typed and rules.registered_types and not _hashable(model_type):
        # LMDeploy asks its own config registry (an lru_cache) about the model_type
        raise crash(cfg, "model_type", rules, "TypeError",
                    "it looks up its own config classes by model_type "
                    f"(unhashable type: '{kind(model_type)}')", wrong_type=True)
    rejected = _sub_config_rejected(data, model_type, rules) if typed else None
    if rejected is not None:
        typed = False
        notes.append(f"{rejected}: transformers fails to build the {model_type} class, LMDeploy reads a bare "
                     "config")
    if strict:
        layers = None if typed else _layer_types_error(data, rules)  # a class may widen what it takes
        if layers is not None:
            raise crash(cfg, "layer_types", rules, "StrictDataclassClassValidationError", layers)
        rope = _rope_error(data, rules, bare=not typed)
        if rope is not None and typed:
            typed = False  # the class rejects it; the bare config is asked next
            rope = _rope_error(data, rules, bare=True) or rope
        if rope is not None:
            field, raises, message = rope
            raise crash(cfg, field, rules, raises, message,
                        wrong_type=raises == "AttributeError" and "max_position_embeddings" not in message)
    dtype = _dtype_error(data, rules)
    if dtype is not None:
        raise crash(cfg, dtype[0], rules, dtype[1], dtype[2], wrong_type=True)
    view = data
    if typed and model_type != data.get("model_type"):
        view = {**data, "model_type": model_type}  # the guessed class's to_dict() names its type
    if not typed:
        replaced = _replacement(data)
        if replaced is not None:
            key, view = replaced
            notes.append(f"the bare config takes {key} (its model_type is \"\") for the whole config")
    _check_quantization(cfg, view, rules)
    if view is data and typed and not notes:
        return cfg
    return replace(cfg, data=view, bare=not typed, notes=tuple(notes))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_KIND_LETTERS = {str: "s", float: "f", bool: "b", type(None): "n", list: "l"}


def _rejected_field(data: Mapping[str, Any], model_type: Any, rules: RuleSet, prefix: str = "") -> str | None:
    """A size field whose type the model type's class fails on (it computes with it, or checks it)."""
    if not isinstance(model_type, str):
        return None
    rejected = _facts(rules).rejected.get(model_type)
    if not rejected:
        return None
    for field, letters in rejected.items():
        letter = _KIND_LETTERS.get(type(data[field])) if field in data else None
        if letter is not None and letter in letters:
            return f"{prefix}{field} is a {kind(data[field])} ({data[field]!r:.30})"
    return None


def _sub_config_rejected(data: Mapping[str, Any], model_type: Any, rules: RuleSet) -> str | None:
    """Why the model type's class cannot be built from the file, or None: a size field of a type it
    rejects, or a sub-config it cannot build (not an object, of a model type it cannot look up, with
    such a field, a torch dtype it cannot name, a quantization_config that is not an object)."""
    found = _rejected_field(data, model_type, rules)
    if found is not None:
        return found
    kinds = _facts(rules).sub_config_kinds.get(model_type, {}) if isinstance(model_type, str) else {}
    for key, how in kinds.items():
        if key not in data:
            continue
        sub = data[key]
        if sub is None:
            continue  # the class builds its default
        if not isinstance(sub, Mapping):
            if how.endswith("+"):
                continue  # this class keeps it as it is
            return f"{key} is a {kind(sub)}, not an object"
        sub_type: Any = how.rstrip("+")
        if sub_type == "auto":
            sub_type = sub.get("model_type")
            if "model_type" in sub and not _known(sub_type, rules):
                return (f"{key}.model_type {sub_type!r:.40} names no class transformers "
                        f"{rules.transformers} has")
        found = _rejected_field(sub, sub_type, rules, f"{key}.")
        if found is not None:
            return found
        for dtype_key in _dtype_keys(rules):
            if _dtype_name_error(sub.get(dtype_key), rules) is not None:
                return f"{key}.{dtype_key} {sub[dtype_key]!r:.30} names no torch dtype"
        if "quantization_config" in sub:
            quant = sub["quantization_config"]
            if not isinstance(quant, Mapping) and (quant is not None or rules.null_quant_raises):
                # the class logs its repr while it loads, and the repr calls .to_dict() on it
                return f"{key}.quantization_config is a {kind(quant)}, not an object"
    return None


def _check_quantization(cfg: ModelConfig, data: Mapping[str, Any], rules: RuleSet) -> None:
    """``to_dict()`` calls ``quantization_config.to_dict()`` on a top-level one that is not a dict (null
    too, under transformers 4): the bare config fails there as the class did."""
    for prefix, where in (("", data),):
        if "quantization_config" not in where:
            continue
        quant = where["quantization_config"]
        if isinstance(quant, Mapping):
            continue
        if quant is None:
            if not rules.null_quant_raises:
                continue
            raise crash(
                cfg, f"{prefix}quantization_config", rules, "AttributeError",
                "it is null, and the transformers 4.x this release runs with calls .to_dict() on it "
                "('NoneType' object has no attribute 'to_dict'); remove the field or use LMDeploy 0.12.2+",
            )
        raise crash(cfg, f"{prefix}quantization_config", rules, "AttributeError",
                    f"it is a {kind(quant)}, and transformers calls .to_dict() on it "
                    f"('{kind(quant)}' object has no attribute 'to_dict')", wrong_type=True)
