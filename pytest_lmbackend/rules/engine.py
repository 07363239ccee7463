"""One release's rules applied to a ModelConfig: get_model_arch, is_supported, check_vl_llm, get_task."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pytest_lmbackend.config import (
    ConfigError,
    ConfigTypeError,
    ConfigValueError,
    MissingArchitectureError,
    MissingFieldError,
    ModelConfig,
)
from pytest_lmbackend.rules.releases import RuleSet, left_in, since
from pytest_lmbackend.rules.subconfigs import SUBCONFIGS_FIRST, SUBCONFIGS_LAST
from pytest_lmbackend.rules.tables import COMPUTED, HEAD_DIM_WHEN_UNSET, LLAMA, QWEN2, TRANSFORMERS_DEFAULTS

__all__ = ["Detection", "LMDeployCrashError", "evaluate", "model_arch"]

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from typing import Any, Literal

    Backend = Literal["turbomind", "pytorch"]
    Task = Literal["llm", "vlm"]

XCOMPOSER2 = "InternLMXComposer2ForCausalLM"
TM: Backend = "turbomind"
PT: Backend = "pytorch"


@dataclass(frozen=True)
class Detection:
    """Which backend and task an LMDeploy release gives a model, and the rule that decided."""

    arch: str | None
    backend: Backend
    task: Task
    is_vl: bool
    rule: str
    release: str


class LMDeployCrashError(ConfigError):
    """A config on which the named LMDeploy release itself raises (the exception it raises is ``raises``)."""

    def __init__(self, path: str, field: str | None, release: str, raises: str, message: str) -> None:
        self.release = release
        self.raises = raises
        super().__init__(path, field, f"LMDeploy {release} raises {raises}: {message}")


def _mentions(auto_map: Any, name: str, path: str, field: str) -> bool:
    # LMDeploy tests ``name in value`` for each auto_map value: a substring for strings, membership
    # for lists; anything else makes it raise.
    if not isinstance(auto_map, Mapping):
        raise ConfigTypeError(path, field, f"must be an object, got {type(auto_map).__name__}")
    for key, value in auto_map.items():
        if isinstance(value, (str, list)):
            if name in value:
                return True
        else:
            raise ConfigTypeError(
                path, f"{field}.{key}", f"must be a string or a list, got {type(value).__name__}"
            )
    return False


def _auto_map_arch(auto_map: Any, path: str, field: str) -> str | None:
    if not auto_map:
        return None
    if not isinstance(auto_map, Mapping):
        raise ConfigTypeError(path, field, f"must be an object, got {type(auto_map).__name__}")
    entry = auto_map.get("AutoModelForCausalLM")
    if entry is None:
        return None
    if not isinstance(entry, str):
        raise ConfigTypeError(
            path, f"{field}.AutoModelForCausalLM", f"must be a string, got {type(entry).__name__}"
        )
    return entry.split(".")[-1]


def model_arch(cfg: ModelConfig, rules: RuleSet) -> str:
    """LMDeploy's ``get_model_arch(...)[0]`` for this release (from config.json)."""
    if rules.null_quant_raises and "quantization_config" in cfg and cfg.get("quantization_config") is None:
        # get_model_arch calls the loaded config's to_dict(), and transformers 4.x calls
        # quantization_config.to_dict() on the None it kept.
        raise LMDeployCrashError(
            cfg.path, "quantization_config", rules.release, "AttributeError",
            "it is null, and the transformers 4.x this release runs with calls .to_dict() on it "
            "('NoneType' object has no attribute 'to_dict'); remove the field or use LMDeploy 0.12.2+",
        )
    archs = cfg.get("architectures")
    if archs:
        arch: str = archs[0]
        if rules.xcomposer2_auto_map and cfg.get("auto_map") and _mentions(
            cfg.get("auto_map"), XCOMPOSER2, cfg.path, "auto_map"
        ):
            arch = XCOMPOSER2
        return arch
    found = _auto_map_arch(cfg.get("auto_map"), cfg.path, "auto_map")
    if found is not None:
        return found
    if rules.language_config_auto_map:
        language = cfg.get("language_config")
        if language and isinstance(language, Mapping):
            found = _auto_map_arch(language.get("auto_map"), cfg.path, "language_config.auto_map")
            if found is not None:
                return found
    state = "is empty" if isinstance(archs, list) else "is missing"
    raise MissingArchitectureError(
        cfg.path, "architectures", f"{state} and no auto_map.AutoModelForCausalLM names the architecture"
    )


def _int(value: Any, path: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigTypeError(path, field, f"must be an integer, got {type(value).__name__} {value!r:.40}")
    return value


def _field(sub: Mapping[str, Any], key: str, path: str, prefix: str, model_type: str | None) -> int:
    field = prefix + key
    if key in sub:  # null included: transformers keeps it, and LMDeploy's division fails on it
        return _int(sub[key], path, field)
    defaults = TRANSFORMERS_DEFAULTS.get(str(sub.get("model_type", model_type)))
    if defaults is not None and key in defaults:
        return defaults[key]
    raise MissingFieldError(path, field, "missing, and LMDeploy reads it to decide the backend")


def _head_dim(
    sub: Mapping[str, Any], rules: RuleSet, path: str, prefix: str, model_type: str | None = None
) -> int | None:
    if rules.explicit_head_dim:
        value = sub.get("head_dim")
        if value is not None:
            return _int(value, path, prefix + "head_dim")
        kind = sub.get("model_type", model_type)
        unset = HEAD_DIM_WHEN_UNSET.get(kind if isinstance(kind, str) else "", (COMPUTED, None))
        found = unset[1] if "head_dim" in sub else unset[0]
        if found != COMPUTED:
            return None if found is None else int(found)
    heads = _field(sub, "num_attention_heads", path, prefix, model_type)
    hidden = _field(sub, "hidden_size", path, prefix, model_type)
    if heads == 0:
        raise ConfigValueError(path, prefix + "num_attention_heads", "is 0 (head_dim would divide by zero)")
    return hidden // heads


def _shown(dim: int | None) -> str:
    return "None (unset)" if dim is None else str(dim)


def _dims(rules: RuleSet) -> str:
    return " or ".join(str(d) for d in sorted(rules.head_dims))


def _sub(cfg: ModelConfig, name: str, rules: RuleSet) -> Mapping[str, Any]:
    sub = cfg.get(name)
    if isinstance(sub, Mapping):
        return sub
    if sub is None:
        raise MissingFieldError(cfg.path, name, f"missing, and LMDeploy {rules.release} reads it")
    raise ConfigTypeError(cfg.path, name, f"must be an object, got {type(sub).__name__}")


def _sub_arch(cfg: ModelConfig, name: str, sub: Mapping[str, Any], rules: RuleSet) -> str:
    archs = sub.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    if archs is None or archs == []:
        raise LMDeployCrashError(
            cfg.path, f"{name}.architectures", rules.release, "TypeError" if archs is None else "IndexError",
            "it reads the nested architecture, which is missing or empty",
        )
    raise ConfigTypeError(cfg.path, f"{name}.architectures", "must be a list of strings")


def _quant_method(cfg: ModelConfig, rules: RuleSet) -> Any:
    """The ``quant_method`` LMDeploy's search meets first, in the order the release's transformers
    gives a composite config's keys (file order where remote code supplies the config class)."""
    model_type = cfg.get("model_type")
    auto_map = cfg.get("auto_map")
    if not isinstance(model_type, str) or (isinstance(auto_map, Mapping) and "AutoConfig" in auto_map):
        return cfg.quant_method
    major = rules.transformers_major
    first = SUBCONFIGS_FIRST.get(major, {}).get(model_type, ())
    last = SUBCONFIGS_LAST.get(major, {}).get(model_type, ())
    return cfg.quant_method_in_order(first, last) if first or last else cfg.quant_method


def turbomind_rule(cfg: ModelConfig, arch: str, rules: RuleSet) -> tuple[bool, str]:
    """TurboMind's ``is_supported`` for a config (workspace already handled): (supported, why)."""
    rel = rules.release
    # LMDeploy looks for smooth_quant before the table; both say "not TurboMind", and the table is
    # far cheaper than the nested search, so it goes first here.
    if arch not in rules.tm_archs:
        dropped = left_in(rel, arch)
        if dropped is not None:
            return False, f"{arch} left TurboMind's table in {dropped}"
        return False, f"{arch} is not in TurboMind's table in {rel}"
    if rules.smooth_quant_pt and _quant_method(cfg, rules) == "smooth_quant":
        return False, "quant_method smooth_quant is PyTorch-only since 0.6.5"
    first = since(rel, arch)
    base = f"{arch} is in TurboMind's table since {first}"
    path = cfg.path
    data = cfg.data
    assert data is not None
    if arch == "BaichuanForCausalLM" and rules.baichuan_40_heads_pt:
        heads = _field(data, "num_attention_heads", path, "", None)
        if heads == 40:
            return False, f"{arch} with 40 attention heads (13B) is not TurboMind's before 0.14.0"
        return True, f"{base}, with {heads} attention heads (not 40)"
    if arch in rules.head_dim_archs:
        dim = _head_dim(data, rules, path, "")
        ok = dim in rules.head_dims
        return ok, f"{arch} with head_dim {_shown(dim)}: TurboMind {rel} takes head_dim {_dims(rules)}"
    if arch in rules.chatglm_archs:
        layers = _int(data["num_layers"], path, "num_layers") if "num_layers" in data else None
        if layers is None:
            raise MissingFieldError(path, "num_layers", f"missing, and LMDeploy {rel} reads it for {arch}")
        if layers != 40:
            return False, f"{arch} needs num_layers == 40 (GLM-4) on TurboMind, has {layers}"
        if rules.chatglm_vision_pt and data.get("vision_config") is not None:
            return False, f"{arch} with a vision_config (GLM-4V) is not TurboMind's"
        return True, f"{base}, with num_layers 40 (GLM-4)"
    if arch == "InternVLChatModel" and (rules.internvl_head_dim or rules.internvl_llm_in_table):
        llm = _sub(cfg, "llm_config", rules)
        if rules.internvl_llm_in_table:
            llm_arch = _sub_arch(cfg, "llm_config", llm, rules)
            if llm_arch not in rules.tm_archs:
                return False, f"{arch}'s language model {llm_arch} is not in TurboMind's table in {rel}"
        dim = _head_dim(llm, rules, path, "llm_config.")
        return dim in rules.head_dims, (
            f"{arch}'s llm_config has head_dim {_shown(dim)}: TurboMind {rel} takes head_dim {_dims(rules)}"
        )
    if arch in rules.llava_archs:
        text = _sub(cfg, "text_config", rules)
        llm_arch = _sub_arch(cfg, "text_config", text, rules)
        if llm_arch in (QWEN2, LLAMA):
            # LlavaConfig builds a text_config without model_type as a llama config.
            dim = _head_dim(text, rules, path, "text_config.", "llama")
            return dim in rules.head_dims, (
                f"{arch}'s text_config ({llm_arch}) has head_dim {_shown(dim)}: "
                f"TurboMind {rel} takes {_dims(rules)}"
            )
        return True, f"{base}; its text_config is {llm_arch}, which has no head_dim check"
    if arch == "MolmoForCausalLM" and rules.molmo_kv_heads:
        if "num_key_value_heads" not in data:
            raise MissingFieldError(path, "num_key_value_heads", f"missing, and LMDeploy {rel} reads it")
        if data["num_key_value_heads"] is None:
            return False, f"{arch} without num_key_value_heads (Molmo-7B-O) is not TurboMind's"
        return True, f"{base}, with num_key_value_heads set"
    if arch in rules.vision_pt_archs and data.get("vision_config") is not None:
        return False, f"{arch} with a vision_config is PyTorch-only"
    return True, base


def check_vl(cfg: ModelConfig, backend: str, rules: RuleSet) -> tuple[bool, str]:
    """LMDeploy's ``check_vl_llm`` for this release: (is_vl, why)."""
    data = cfg.data
    assert data is not None
    path = cfg.path
    if rules.xcomposer2_auto_map and "auto_map" in data:
        if _mentions(data["auto_map"], XCOMPOSER2, path, "auto_map"):
            return True, f"its auto_map names {XCOMPOSER2}, vision-language (vlm)"
    if rules.deepseek_vl and "language_config" in data and "vision_config" in data:
        language = data["language_config"]
        if not isinstance(language, Mapping):
            kind = type(language).__name__
            raise ConfigTypeError(path, "language_config", f"must be an object, got {kind}")
        inner = language.get("architectures", [None])
        if not isinstance(inner, list) or not inner:
            raise LMDeployCrashError(
                path, "language_config.architectures", rules.release,
                "IndexError" if inner == [] else "TypeError", "check_vl_llm reads its first entry",
            )
        if inner[0] == "DeepseekV2ForCausalLM":
            return True, "a DeepseekV2 language_config with a vision_config is vision-language (vlm)"
    archs = data.get("architectures")
    if not archs:
        raises = "TypeError" if archs is None else "IndexError"
        if rules.task_reads_raw_json and "architectures" not in data:
            raises = "KeyError"
        raise LMDeployCrashError(
            path, "architectures", rules.release, raises,
            "check_vl_llm reads architectures[0], and the arch came only from auto_map",
        )
    arch: str = archs[0]
    if rules.qwen_visual_vl and arch == "QWenLMHeadModel" and "visual" in data:
        return True, "QWenLMHeadModel with a visual config is vision-language (vlm)"
    if arch == "MultiModalityCausalLM" and "language_config" in data:
        return True, "MultiModalityCausalLM with a language_config is vision-language (vlm)"
    if arch in rules.chatglm_vl_archs and "vision_config" in data:
        return True, f"{arch} with a vision_config is vision-language (vlm)"
    if arch in rules.not_vl_archs and (not rules.not_vl_tm_only or backend == TM):
        on = " on TurboMind" if rules.not_vl_tm_only else ""
        return False, f"{arch} runs as a language model{on} in {rules.release} (llm)"
    if arch in rules.vl_archs:
        return True, f"{arch} is a vision-language arch (vlm)"
    return False, "not a vision-language arch (llm)"


def evaluate(cfg: ModelConfig, rules: RuleSet, *, language_model_only: bool = False) -> Detection:
    """Backend and task for one config under one release's rules."""
    rel = rules.release
    # -- backend: autoget_backend / is_supported
    arch: str | None
    arch_error: ConfigError | None = None
    if cfg.triton_models and rules.workspace_is_tm:
        arch = None
        if rules.workspace_arch and cfg.workspace_weights:
            arch = cfg.workspace_arch  # get_model_arch reads the workspace's own config here
        elif cfg.data is not None:
            # Elsewhere get_model_arch reads config.json (architectures, then auto_map); is_supported
            # says TurboMind before asking it, so a config it fails on still runs (arch unknown),
            # unless get_task asks again below.
            try:
                arch = model_arch(cfg, rules)
            except ConfigError as exc:
                arch_error = exc
        backend, why = TM, "a triton_models/ folder (TurboMind workspace) runs on TurboMind"
    else:
        if cfg.data is None:
            raise LMDeployCrashError(
                cfg.path, "config.json", rel, "RuntimeError",
                f"{rel} ignores triton_models/ and reads config.json, which this workspace lacks",
            )
        arch = model_arch(cfg, rules)
        supported, why = turbomind_rule(cfg, arch, rules)
        backend = TM if supported else PT
    # -- task: get_task / check_vl_llm
    if rules.workspace_task_llm and cfg.workspace_weights:
        return Detection(arch, backend, "llm", False, f"{why}; a workspace is a language model (llm)", rel)
    if language_model_only and rules.llm_only_switch is not None:
        # get_task returns before reading the config here, so a config it would fail on still gets "llm".
        try:
            is_vl = cfg.data is not None and arch_error is None and check_vl(cfg, backend, rules)[0]
        except LMDeployCrashError:
            is_vl = False
        return Detection(arch, backend, "llm", is_vl, f"{why}; {rules.llm_only_switch} forces llm", rel)
    if cfg.data is None:
        raise LMDeployCrashError(
            cfg.path, "config.json", rel, "RuntimeError",
            "get_task reads config.json, which this workspace lacks",
        )
    if arch_error is not None:
        raise arch_error  # get_task calls get_model_arch, which fails this time
    is_vl, vl_why = check_vl(cfg, backend, rules)
    if language_model_only:
        vl_why += f"; language_model_only does not exist in {rel} (0.14.0+)"
    return Detection(arch, backend, "vlm" if is_vl else "llm", is_vl, f"{why}; {vl_why}", rel)
