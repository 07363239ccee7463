"""One release's rules applied to a ModelConfig: get_model_arch, is_supported, check_vl_llm, get_task.

LMDeploy's functions are plain Python over what transformers loaded (``loading.load``): a value of the
wrong type is compared, divided and indexed as Python does it, and answers or raises as it does in
LMDeploy. Each such step here runs the same Python operation on the same JSON value; where it raises,
the answer is an ``LMDeployCrashError`` naming the field and the exception LMDeploy raises, and where it
answers, the ``Detection`` carries a note saying how (``"head_dim" is a str ...``).
"""

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
from pytest_lmbackend.rules.loading import kind, load
from pytest_lmbackend.rules.releases import RuleSet, left_in, since
from pytest_lmbackend.rules.subconfigs import SUBCONFIGS_FIRST, SUBCONFIGS_LAST
from pytest_lmbackend.rules.tables import COMPUTED, HEAD_DIM_WHEN_UNSET, LLAMA, QWEN2, TRANSFORMERS_DEFAULTS

__all__ = [
    "CrashOnTypeError",
    "CrashOnValueError",
    "Detection",
    "LMDeployCrashError",
    "crash_error",
    "evaluate",
    "model_arch",
]

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from collections.abc import Callable
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
    notes: tuple[str, ...] = ()
    """How LMDeploy got there where the file is unusual: a value of the wrong type it still answers for
    (``"head_dim" is a str ('128'); 0.10.2 compares it with 64 and 128 and falls back to PyTorch``), a
    config transformers loads bare, what cannot be known from the folder."""


class LMDeployCrashError(ConfigError):
    """A config on which the named LMDeploy release itself raises (the exception it raises is ``raises``)."""

    def __init__(self, path: str, field: str | None, release: str, raises: str, message: str) -> None:
        self.release = release
        self.raises = raises
        super().__init__(path, field, f"LMDeploy {release} raises {raises}: {message}")


class CrashOnTypeError(LMDeployCrashError, ConfigTypeError):
    """LMDeploy raises because a field has the wrong type (a ``ConfigTypeError`` too)."""


class CrashOnValueError(LMDeployCrashError, ConfigValueError):
    """LMDeploy raises on a field's value, e.g. zero attention heads (a ``ConfigValueError`` too)."""


_VALUE_ERRORS = frozenset({"ZeroDivisionError", "OverflowError", "ValueError"})


def crash_error(path: str, field: str | None, release: str, raises: str, message: str, *,
                wrong_type: bool = False) -> LMDeployCrashError:
    """The error for a config LMDeploy ``release`` raises ``raises`` on, typed by what went wrong
    (``wrong_type``: a field's type is the cause, whatever exception LMDeploy raises for it)."""
    if wrong_type:
        return CrashOnTypeError(path, field, release, raises, message)
    if raises in _VALUE_ERRORS:
        return CrashOnValueError(path, field, release, raises, message)
    return LMDeployCrashError(path, field, release, raises, message)


_PY_ERRORS = (TypeError, ZeroDivisionError, OverflowError, KeyError, IndexError, AttributeError, ValueError)


def _run(cfg: ModelConfig, field: str, rules: RuleSet, what: str, op: Callable[[], Any], *,
         wrong_type: bool = True) -> Any:
    """``op()``, LMDeploy's own Python operation on JSON values; its exception becomes LMDeploy's crash
    (``wrong_type``: a value of the wrong type is what it fails on, unless it fails on a value)."""
    try:
        return op()
    except _PY_ERRORS as exc:
        detail = str(exc) if not isinstance(exc, KeyError) else repr(exc.args[0]) if exc.args else ""
        value_error = isinstance(exc, (ZeroDivisionError, IndexError, OverflowError))
        raise crash_error(cfg.path, field, rules.release, type(exc).__name__, f"{what}: {detail}",
                          wrong_type=wrong_type and not value_error) from None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _unhashable(cfg: ModelConfig, field: str, rules: RuleSet, value: Any, where: str) -> LMDeployCrashError:
    return crash_error(cfg.path, field, rules.release, "TypeError",
                       f"{where} looks the architecture up in a table, and a {kind(value)} cannot be "
                       f"(unhashable type: '{kind(value)}')", wrong_type=True)


def _first(cfg: ModelConfig, field: str, rules: RuleSet, value: Any, what: str) -> Any:
    """``value[0]`` as LMDeploy takes it: a string's first letter, a dict's key 0, ..."""
    if type(value) is list and value:
        return value[0]
    wrong = not isinstance(value, (list, type(None)))
    return _run(cfg, field, rules, what, lambda: value[0], wrong_type=wrong)


def _typed_note(field: str, value: Any, rules: RuleSet, how: str) -> str:
    return f"{field!r} is a {kind(value)} ({value!r:.40}); LMDeploy {rules.release} {how}"


def _contains(cfg: ModelConfig, field: str, rules: RuleSet, name: str, value: Any) -> bool:
    """``name in value`` (a substring, a member or a key; anything else raises TypeError)."""
    return bool(_run(cfg, field, rules, f"it tests whether {name!r} is in it", lambda: name in value))


def _items(cfg: ModelConfig, field: str, rules: RuleSet, value: Any) -> list[tuple[Any, Any]]:
    return list(_run(cfg, field, rules, "it walks the mapping", lambda: value.items()))


def model_arch(cfg: ModelConfig, rules: RuleSet, notes: list[str] | None = None) -> Any:
    """LMDeploy's ``get_model_arch(...)[0]`` for this release, from the loaded config (``loading.load``):
    usually a string, but whatever ``architectures[0]`` holds where transformers lets it through."""
    archs = cfg.get("architectures")
    if archs:
        arch = _first(cfg, "architectures", rules, archs, "get_model_arch reads architectures[0]")
        if notes is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
            notes.append(_typed_note("architectures", archs, rules, f"takes its first item, {arch!r:.40}, "
                                     "for the architecture"))
        auto_map = cfg.get("auto_map")
        if rules.xcomposer2_auto_map and auto_map:
            for _, value in _items(cfg, "auto_map", rules, auto_map):
                if _contains(cfg, "auto_map", rules, XCOMPOSER2, value):
                    arch = XCOMPOSER2
        return arch
    found = _auto_map_arch(cfg, cfg.get("auto_map"), "auto_map", rules)
    if found is not None:
        return found
    if rules.language_config_auto_map:
        language = cfg.get("language_config")
        if language:
            inner = _run(cfg, "language_config", rules, "get_model_arch reads language_config.auto_map",
                         lambda: language.get("auto_map", None))
            found = _auto_map_arch(cfg, inner, "language_config.auto_map", rules)
            if found is not None:
                return found
    state = "is empty" if isinstance(archs, list) else "is missing" if archs is None else f"is {archs!r:.20}"
    raise MissingArchitectureError(
        cfg.path, "architectures", f"{state} and no auto_map.AutoModelForCausalLM names the architecture"
    )


def _auto_map_arch(cfg: ModelConfig, auto_map: Any, field: str, rules: RuleSet) -> Any:
    if not auto_map or not _contains(cfg, field, rules, "AutoModelForCausalLM", auto_map):
        return None
    entry = _run(cfg, field, rules, "get_model_arch reads its AutoModelForCausalLM",
                 lambda: auto_map["AutoModelForCausalLM"])
    return _run(cfg, f"{field}.AutoModelForCausalLM", rules, "get_model_arch splits it at '.'",
                lambda: entry.split(".")[-1])


def _field(cfg: ModelConfig, sub: Mapping[str, Any], key: str, prefix: str, model_type: Any,
           rules: RuleSet) -> Any:
    """An attribute LMDeploy reads: the file's value (of any type), or the class's default."""
    if key in sub:
        return sub[key]
    if not cfg.bare:
        defaults = TRANSFORMERS_DEFAULTS.get(str(sub.get("model_type", model_type)))
        if defaults is not None and key in defaults:
            return defaults[key]
    raise MissingFieldError(cfg.path, prefix + key, "missing, and LMDeploy reads it to decide the backend"
                            + (" (a bare config has no defaults)" if cfg.bare else ""))


def _head_dim(cfg: ModelConfig, sub: Mapping[str, Any], rules: RuleSet, prefix: str, notes: list[str],
              model_type: Any = None) -> Any:
    if rules.explicit_head_dim:
        # head_dim = cfg.head_dim if hasattr(cfg, 'head_dim') else hidden_size // num_attention_heads
        if "head_dim" in sub and sub["head_dim"] is not None:
            return sub["head_dim"]
        kind_ = sub.get("model_type", model_type)
        if cfg.bare:
            if "head_dim" in sub:  # a bare config keeps the null
                return None
        else:
            unset = HEAD_DIM_WHEN_UNSET.get(kind_ if isinstance(kind_, str) else "", (COMPUTED, None))
            found = unset[1] if "head_dim" in sub else unset[0]
            if found != COMPUTED:
                return found
    heads = _field(cfg, sub, "num_attention_heads", prefix, model_type, rules)
    hidden = _field(cfg, sub, "hidden_size", prefix, model_type, rules)
    field = prefix + ("num_attention_heads" if type(heads) is not int else "hidden_size")
    dim = _run(cfg, field, rules, f"it computes {prefix}hidden_size // num_attention_heads "
               f"({hidden!r:.30} // {heads!r:.30})", lambda: hidden // heads)
    for key, value in (("hidden_size", hidden), ("num_attention_heads", heads)):
        if type(value) is not int:
            notes.append(_typed_note(prefix + key, value, rules, f"computes head_dim {dim!r:.30} with it"))
    return dim


def _head_dim_ok(dim: Any, rules: RuleSet, field: str, notes: list[str]) -> bool:
    """``head_dim in [128, 64]``: Python equality, so 128.0 and True count as what they equal."""
    ok = dim in sorted(rules.head_dims)
    if type(dim) is not int and dim is not None:
        result = "takes it for" if ok else "finds it is not"
        notes.append(_typed_note(field, dim, rules, f"compares it with {_dims(rules)} and {result} a "
                                 f"head_dim TurboMind supports"))
    return ok


def _shown(dim: Any) -> str:
    return "None (unset)" if dim is None else repr(dim) if type(dim) is not int else str(dim)


def _dims(rules: RuleSet) -> str:
    return " or ".join(str(d) for d in sorted(rules.head_dims))


def _sub(cfg: ModelConfig, name: str, rules: RuleSet) -> Mapping[str, Any]:
    """A nested config LMDeploy reads attributes of (``cfg.llm_config``, ``cfg.text_config``)."""
    if name not in cfg:
        raise MissingFieldError(cfg.path, name, f"missing, and LMDeploy {rules.release} reads it")
    sub = cfg.get(name)
    if isinstance(sub, Mapping) and not cfg.bare:
        return sub
    if sub is None and not cfg.bare and _class_builds(cfg, name, rules):
        return {}  # the class builds its default sub-config: no architectures, the defaults of its type
    # transformers left it as it was: a dict (a bare config), or a value of another type
    raise crash_error(
        cfg.path, f"{name}.architectures", rules.release, "AttributeError",
        f"it reads {name}.architectures, and {name} is a {kind(sub)} ('{kind(sub)}' object has no attribute "
        f"'architectures'){_why_bare(cfg)}",
        wrong_type=not isinstance(sub, Mapping),
    )


def _class_builds(cfg: ModelConfig, name: str, rules: RuleSet) -> bool:
    """Whether the config's own transformers class builds ``name`` as a sub-config object."""
    from pytest_lmbackend.rules.model_types import facts

    model_type = cfg.get("model_type")
    return isinstance(model_type, str) and name in facts(rules.transformers).sub_configs.get(model_type, ())


def _why_bare(cfg: ModelConfig) -> str:
    if not cfg.bare:
        return ""
    return " because transformers loaded a bare config" + (f" ({cfg.notes[0]})" if cfg.notes else "")


def _sub_arch(cfg: ModelConfig, name: str, sub: Mapping[str, Any], rules: RuleSet) -> Any:
    archs = sub.get("architectures")  # the class's default is None
    return _first(cfg, f"{name}.architectures", rules, archs, f"it reads {name}.architectures[0]")


def _quant_method(cfg: ModelConfig, rules: RuleSet) -> Any:
    """The ``quant_method`` LMDeploy's search meets first, in the order the release's transformers
    gives a composite config's keys (file order where remote code supplies the config class)."""
    model_type = cfg.get("model_type")
    auto_map = cfg.get("auto_map")
    remote = isinstance(auto_map, Mapping) and "AutoConfig" in auto_map
    if cfg.bare or not isinstance(model_type, str) or remote:
        return cfg.quant_method
    version = rules.transformers
    first = SUBCONFIGS_FIRST.get(version, {}).get(model_type, ())
    last = SUBCONFIGS_LAST.get(version, {}).get(model_type, ())
    return cfg.quant_method_in_order(first, last) if first or last else cfg.quant_method


def _smooth_quant(cfg: ModelConfig, rules: RuleSet) -> bool:
    if not rules.smooth_quant_pt:
        return False
    method = _quant_method(cfg, rules)
    return bool(method and method in ["smooth_quant"])


def turbomind_rule(cfg: ModelConfig, arch: Any, rules: RuleSet,
                   notes: list[str] | None = None) -> tuple[bool, str]:
    """TurboMind's ``is_supported`` for a loaded config (workspace already handled): (supported, why)."""
    notes = [] if notes is None else notes
    rel = rules.release
    if not _hashable(arch):
        if _smooth_quant(cfg, rules):  # LMDeploy looks for smooth_quant before the table
            return False, "quant_method smooth_quant is PyTorch-only since 0.6.5"
        raise _unhashable(cfg, "architectures", rules, arch, "is_supported")
    # LMDeploy looks for smooth_quant before the table; both say "not TurboMind", and the table is
    # far cheaper than the nested search, so it goes first here.
    if arch not in rules.tm_archs:
        if not isinstance(arch, str):
            return False, f"the architecture {arch!r:.40} is not in TurboMind's table"
        dropped = left_in(rel, arch)
        if dropped is not None:
            return False, f"{arch} left TurboMind's table in {dropped}"
        return False, f"{arch} is not in TurboMind's table in {rel}"
    if _smooth_quant(cfg, rules):
        return False, "quant_method smooth_quant is PyTorch-only since 0.6.5"
    first = since(rel, arch)
    base = f"{arch} is in TurboMind's table since {first}"
    data = cfg.data
    assert data is not None
    if arch == "BaichuanForCausalLM" and rules.baichuan_40_heads_pt:
        heads = _field(cfg, data, "num_attention_heads", "", None, rules)
        if heads == 40:
            return False, f"{arch} with 40 attention heads (13B) is not TurboMind's before 0.14.0"
        if type(heads) is not int:
            notes.append(_typed_note("num_attention_heads", heads, rules, "compares it with 40"))
        return True, f"{base}, with {heads!r} attention heads (not 40)"
    if arch in rules.head_dim_archs:
        dim = _head_dim(cfg, data, rules, "", notes)
        ok = _head_dim_ok(dim, rules, "head_dim", notes)
        return ok, f"{arch} with head_dim {_shown(dim)}: TurboMind {rel} takes head_dim {_dims(rules)}"
    if arch in rules.chatglm_archs:
        if "num_layers" not in data:
            raise MissingFieldError(cfg.path, "num_layers",
                                    f"missing, and LMDeploy {rel} reads it for {arch}")
        layers = data["num_layers"]
        if type(layers) is not int:
            notes.append(_typed_note("num_layers", layers, rules, "compares it with 40"))
        if layers != 40:
            return False, f"{arch} needs num_layers == 40 (GLM-4) on TurboMind, has {layers!r}"
        if rules.chatglm_vision_pt and data.get("vision_config") is not None:
            return False, f"{arch} with a vision_config (GLM-4V) is not TurboMind's"
        return True, f"{base}, with num_layers 40 (GLM-4)"
    if arch == "InternVLChatModel" and (rules.internvl_head_dim or rules.internvl_llm_in_table):
        llm = _sub(cfg, "llm_config", rules)
        if rules.internvl_llm_in_table:
            llm_arch = _sub_arch(cfg, "llm_config", llm, rules)
            if not _hashable(llm_arch):
                raise _unhashable(cfg, "llm_config.architectures", rules, llm_arch, "is_supported")
            if llm_arch not in rules.tm_archs:
                why = f"{arch}'s language model {_name(llm_arch)} is not in TurboMind's table in {rel}"
                return False, why
        dim = _head_dim(cfg, llm, rules, "llm_config.", notes)
        ok = _head_dim_ok(dim, rules, "llm_config.head_dim", notes)
        return ok, (f"{arch}'s llm_config has head_dim {_shown(dim)}: TurboMind {rel} takes head_dim "
                    f"{_dims(rules)}")
    if arch in rules.llava_archs:
        text = _sub(cfg, "text_config", rules)
        llm_arch = _sub_arch(cfg, "text_config", text, rules)
        if llm_arch in [QWEN2, LLAMA]:
            # LlavaConfig builds a text_config without model_type as a llama config.
            dim = _head_dim(cfg, text, rules, "text_config.", notes, "llama")
            ok = _head_dim_ok(dim, rules, "text_config.head_dim", notes)
            return ok, (
                f"{arch}'s text_config ({llm_arch}) has head_dim {_shown(dim)}: TurboMind {rel} takes "
                f"{_dims(rules)}"
            )
        return True, f"{base}; its text_config is {_name(llm_arch)}, which has no head_dim check"
    if arch == "MolmoForCausalLM" and rules.molmo_kv_heads:
        if "num_key_value_heads" not in data:
            raise MissingFieldError(cfg.path, "num_key_value_heads", f"missing, and LMDeploy {rel} reads it")
        if data["num_key_value_heads"] is None:
            return False, f"{arch} without num_key_value_heads (Molmo-7B-O) is not TurboMind's"
        return True, f"{base}, with num_key_value_heads set"
    if arch in rules.vision_pt_archs and data.get("vision_config") is not None:
        return False, f"{arch} with a vision_config is PyTorch-only"
    return True, base


def check_vl(cfg: ModelConfig, backend: str, rules: RuleSet) -> tuple[bool, str]:
    """LMDeploy's ``check_vl_llm`` for this release, over the loaded config: (is_vl, why)."""
    data = cfg.data
    assert data is not None
    if rules.xcomposer2_auto_map and "auto_map" in data:
        for _, value in _items(cfg, "auto_map", rules, data["auto_map"]):
            if _contains(cfg, "auto_map", rules, XCOMPOSER2, value):
                return True, f"its auto_map names {XCOMPOSER2}, vision-language (vlm)"
    if rules.deepseek_vl and "language_config" in data and "vision_config" in data:
        language = data["language_config"]
        inner = _run(cfg, "language_config", rules, "check_vl_llm reads language_config.architectures",
                     lambda: language.get("architectures", [None]))
        first = _first(cfg, "language_config.architectures", rules, inner,
                       "check_vl_llm reads language_config.architectures[0]")
        if first == "DeepseekV2ForCausalLM":
            return True, "a DeepseekV2 language_config with a vision_config is vision-language (vlm)"
    if rules.task_reads_raw_json and "architectures" not in data:
        raise crash_error(cfg.path, "architectures", rules.release, "KeyError",
                          "check_vl_llm reads architectures[0] from config.json, which has none")
    archs = data.get("architectures")  # to_dict() has the key, None by default
    arch = _first(cfg, "architectures", rules, archs, "check_vl_llm reads architectures[0]"
                  + (", and the arch came only from auto_map" if not archs else ""))
    if rules.qwen_visual_vl and arch == "QWenLMHeadModel" and "visual" in data:
        return True, "QWenLMHeadModel with a visual config is vision-language (vlm)"
    if arch == "MultiModalityCausalLM" and "language_config" in data:
        return True, "MultiModalityCausalLM with a language_config is vision-language (vlm)"
    if arch in list(rules.chatglm_vl_archs) and "vision_config" in data:
        return True, f"{arch} with a vision_config is vision-language (vlm)"
    if arch in list(rules.not_vl_archs) and (not rules.not_vl_tm_only or backend == TM):
        on = " on TurboMind" if rules.not_vl_tm_only else ""
        return False, f"{arch} runs as a language model{on} in {rules.release} (llm)"
    if not _hashable(arch):
        raise _unhashable(cfg, "architectures", rules, arch, "check_vl_llm")
    if arch in rules.vl_archs:
        return True, f"{arch} is a vision-language arch (vlm)"
    return False, "not a vision-language arch (llm)"


def _name(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _arch_shown(arch: Any) -> str | None:
    return arch if isinstance(arch, str) else None


def evaluate(cfg: ModelConfig, rules: RuleSet, *, language_model_only: bool = False) -> Detection:
    """Backend and task for one config under one release's rules."""
    rel = rules.release
    notes: list[str] = []
    # -- backend: autoget_backend / is_supported
    arch: Any
    arch_error: ConfigError | None = None
    view = cfg
    if cfg.triton_models and rules.workspace_is_tm:
        arch = None
        if rules.workspace_arch and cfg.workspace_weights:
            arch = cfg.workspace_arch  # get_model_arch reads the workspace's own config here
        elif cfg.data is not None:
            # Elsewhere get_model_arch reads config.json (architectures, then auto_map); is_supported
            # says TurboMind before asking it, so a config it fails on still runs (arch unknown),
            # unless get_task asks again below.
            try:
                view = load(cfg, rules)
                arch = model_arch(view, rules, notes)
            except ConfigError as exc:
                arch_error = exc
        backend, why = TM, "a triton_models/ folder (TurboMind workspace) runs on TurboMind"
    else:
        if cfg.data is None:
            raise LMDeployCrashError(
                cfg.path, "config.json", rel, "RuntimeError",
                f"{rel} ignores triton_models/ and reads config.json, which this workspace lacks",
            )
        view = load(cfg, rules)
        arch = model_arch(view, rules, notes)
        supported, why = turbomind_rule(view, arch, rules, notes)
        backend = TM if supported else PT
    if view.notes:
        notes = [*view.notes, *notes]
    shown = _arch_shown(arch)
    if arch is not None and shown is None:
        notes.append(f"the architecture is {arch!r:.40}, not a name: Detection.arch is None")
    # -- task: get_task / check_vl_llm
    if rules.workspace_task_llm and cfg.workspace_weights:
        return Detection(shown, backend, "llm", False, f"{why}; a workspace is a language model (llm)", rel,
                         tuple(notes))
    if language_model_only and rules.llm_only_switch is not None:
        # get_task returns before reading the config here, so a config it would fail on still gets "llm".
        try:
            is_vl = view.data is not None and arch_error is None and check_vl(view, backend, rules)[0]
        except LMDeployCrashError:
            is_vl = False
        return Detection(shown, backend, "llm", is_vl, f"{why}; {rules.llm_only_switch} forces llm", rel,
                         tuple(notes))
    if cfg.data is None:
        raise LMDeployCrashError(
            cfg.path, "config.json", rel, "RuntimeError",
            "get_task reads config.json, which this workspace lacks",
        )
    if arch_error is not None:
        raise arch_error  # get_task calls get_model_arch, which fails this time
    is_vl, vl_why = check_vl(view, backend, rules)
    if language_model_only:
        vl_why += f"; language_model_only does not exist in {rel} (0.14.0+)"
    return Detection(shown, backend, "vlm" if is_vl else "llm", is_vl, f"{why}; {vl_why}", rel, tuple(notes))
