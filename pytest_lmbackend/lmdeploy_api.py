"""Drop-ins for ``lmdeploy.archs`` functions: same names and arguments, answered without LMDeploy."""

from __future__ import annotations

import os
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pytest_lmbackend.config import ConfigNotFoundError, from_mapping, read_config
from pytest_lmbackend.rules import detect, model_arch, rules_for
from pytest_lmbackend.rules.engine import check_vl, turbomind_rule
from pytest_lmbackend.rules.loading import load

TYPE_CHECKING = False  # typing stays unimported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Literal

__all__ = [
    "EngineConfigPlan",
    "LMDeployNotInstalledError",
    "autoget_backend",
    "autoget_backend_config",
    "check_vl_llm",
    "get_model_arch",
    "get_task",
    "is_supported",
    "plan_backend_config",
]

PathLike = str | os.PathLike[str]


def get_model_arch(
    model_path: PathLike, trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> tuple[Any, Mapping[str, Any]]:
    """``lmdeploy.archs.get_model_arch``: the architecture and the config (a read-only mapping here; the
    values as the release's transformers loaded them). The architecture is a string unless the file's
    ``architectures`` holds something else that the release takes as it is.

    ``trust_remote_code`` is accepted for compatibility; remote code is never run.
    """
    del trust_remote_code
    rules = rules_for(lmdeploy)
    cfg = read_config(model_path)
    if rules.workspace_arch and cfg.workspace_weights and cfg.workspace_arch:
        # 0.5-0.11 answer from the workspace's own config (the converted model's settings).
        return cfg.workspace_arch, MappingProxyType({})
    if cfg.data is None:
        raise ConfigNotFoundError(cfg.path, "config.json", "no config.json in this workspace")
    view = load(cfg, rules)
    assert view.data is not None
    return model_arch(view, rules), view.data


def is_supported(
    model_path: PathLike, trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> bool:
    """``lmdeploy.turbomind.supported_models.is_supported``: would TurboMind take this model.

    Only the arch lookup, the smooth_quant check and TurboMind's table, as LMDeploy's own: what makes
    ``check_vl_llm`` or ``get_task`` fail on a config does not make this one fail.
    """
    return autoget_backend(model_path, trust_remote_code, lmdeploy=lmdeploy) == "turbomind"


def autoget_backend(
    model_path: PathLike | Mapping[str, Any], trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> Literal["turbomind", "pytorch"]:
    """``lmdeploy.archs.autoget_backend`` on a machine where TurboMind is built (a parsed config
    mapping is accepted too)."""
    del trust_remote_code
    rules = rules_for(lmdeploy)
    cfg = read_config(model_path)
    # Only the backend half: get_task's failures (e.g. an auto_map-only config) must not leak in.
    if cfg.triton_models and rules.workspace_is_tm:
        return "turbomind"
    if cfg.data is None:
        return detect(cfg, lmdeploy=rules.release).backend  # raises the typed error
    view = load(cfg, rules)
    supported, _ = turbomind_rule(view, model_arch(view, rules), rules)
    return "turbomind" if supported else "pytorch"


def check_vl_llm(
    backend: str | Mapping[str, Any], config: Mapping[str, Any] | None = None, *, lmdeploy: str | None = None
) -> bool:
    """``lmdeploy.archs.check_vl_llm(backend, config)``; the one-argument form of releases before 0.12.3,
    ``check_vl_llm(config)``, is accepted too."""
    if config is None:
        if not isinstance(backend, Mapping):
            raise TypeError("check_vl_llm(backend, config) or check_vl_llm(config): config must be a mapping")
        config, backend = backend, "pytorch"
    if not isinstance(backend, str):
        raise TypeError(f"backend must be 'turbomind' or 'pytorch', got {backend!r}")
    return check_vl(from_mapping(config), backend, rules_for(lmdeploy))[0]


def get_task(
    backend: str,
    model_path: PathLike,
    trust_remote_code: bool = False,
    backend_config: Any = None,
    *,
    lmdeploy: str | None = None,
) -> Literal["llm", "vlm"]:
    """``lmdeploy.archs.get_task``'s task name (LMDeploy also returns the engine class; not here).

    ``backend_config`` is any object; its ``language_model_only`` (0.15+) or ``disable_vision_encoder``
    (0.14) attribute forces "llm" as in LMDeploy.
    """
    del trust_remote_code
    rules = rules_for(lmdeploy)
    cfg = read_config(model_path)
    llm_only = bool(rules.llm_only_switch and getattr(backend_config, rules.llm_only_switch, False))
    if llm_only:
        return "llm"
    if rules.workspace_task_llm and cfg.workspace_weights:
        return "llm"
    if cfg.data is None:
        return detect(cfg, lmdeploy=rules.release).task  # raises the typed error
    view = load(cfg, rules)
    model_arch(view, rules)  # get_task loads the config through get_model_arch, which may fail first
    return "vlm" if check_vl(view, backend, rules)[0] else "llm"


# -- autoget_backend_config: the decision (pure, over dicts) and the build (LMDeploy's classes)

# TurboMind's and PyTorch's names for the KV-cache block size; LMDeploy copies it across
# unconditionally (falsy included), after the other fields.
_BLOCK_SIZE = {
    "turbomind": ("cache_block_seq_len", "block_size"),
    "pytorch": ("block_size", "cache_block_seq_len"),
}


@dataclass(frozen=True)
class EngineConfigPlan:
    """What ``autoget_backend_config`` does with a caller's engine config, before any class is built."""

    backend: Literal["turbomind", "pytorch"]
    """The backend, and the engine config class that comes back (``TurbomindEngineConfig`` or
    ``PytorchEngineConfig``)."""
    reuse: bool
    """The caller's own object comes back, unchanged."""
    assign: Mapping[str, Any]
    """Otherwise: the attributes set, in this order, on a fresh config of the backend's class."""
    dropped: Mapping[str, str]
    """The caller's fields that are not carried over, and why (falsy, or no such attribute)."""
    rule: str
    release: str


def plan_backend_config(
    given: Literal["turbomind", "pytorch"] | None,
    fields: Mapping[str, Any] | None = None,
    *,
    backend: Literal["turbomind", "pytorch"] | Callable[[], Literal["turbomind", "pytorch"]],
    target_attrs: Mapping[str, Container[str]] | Callable[[str], Container[str]],
    lmdeploy: str | None = None,
) -> EngineConfigPlan:
    """LMDeploy's ``autoget_backend_config`` as a decision over plain data, for one release.

    :param given: the caller's config class (``"turbomind"`` for a ``TurbomindEngineConfig``,
        ``"pytorch"`` for a ``PytorchEngineConfig``), or None when no config is passed.
    :param fields: the caller's config as ``dataclasses.asdict`` gives it (all its fields).
    :param backend: the model's backend (``autoget_backend``), or a function answering it: called
        only where LMDeploy reads the model (not for a PytorchEngineConfig from 0.12.0 on).
    :param target_attrs: per backend, the names ``hasattr`` finds on a fresh config of that class
        (a mapping, or a function of the backend); only read when fields are copied across.

    Fields are copied across classes as LMDeploy copies them, ``if v and hasattr(config, k)``: a
    falsy value (``False``, ``0``, ``0.0``, ``""``, ``None``, empty containers) is dropped and the
    class's default stays, and fields the other class lacks vanish. Then the block size is copied
    unconditionally (``cache_block_seq_len`` <-> ``block_size``). No validation runs on the result.
    """
    rules = rules_for(lmdeploy)
    rel = rules.release
    if given not in (None, "turbomind", "pytorch"):
        raise ValueError(f"given must be 'turbomind', 'pytorch' or None, got {given!r}")
    if given == "pytorch" and rules.pytorch_config_wins:
        why = f"a PytorchEngineConfig is returned as is, without reading the model ({rel}; since 0.12.0)"
        return EngineConfigPlan("pytorch", True, MappingProxyType({}), MappingProxyType({}), why, rel)
    chosen = backend() if callable(backend) else backend
    if chosen not in ("turbomind", "pytorch"):
        raise ValueError(f"backend must be 'turbomind' or 'pytorch', got {chosen!r}")
    target = _class_name(chosen)
    if given is None:
        return EngineConfigPlan(
            chosen, False, MappingProxyType({}), MappingProxyType({}), f"a default {target} for {chosen}", rel
        )
    if given == chosen:
        why = f"the {_class_name(given)} passed matches the backend and is returned as is"
        return EngineConfigPlan(chosen, True, MappingProxyType({}), MappingProxyType({}), why, rel)
    has = target_attrs(chosen) if callable(target_attrs) else target_attrs[chosen]
    source_name, target_name = _BLOCK_SIZE[given]
    assign: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    for key, value in (fields or {}).items():
        if value and key in has:
            assign[key] = value
        elif key == source_name:
            dropped[key] = f"carried as {target_name}"
        elif key not in has:
            dropped[key] = f"{target} has no such attribute"
        else:
            dropped[key] = f"falsy ({value!r}): LMDeploy copies only truthy values, {target}'s default stays"
    if fields is not None and source_name in fields:
        assign[target_name] = fields[source_name]
    why = (
        f"{_class_name(given)} converted to a fresh {target} for {chosen}: "
        f"{len(assign)} fields set, {len(dropped)} not carried over"
    )
    return EngineConfigPlan(chosen, False, MappingProxyType(assign), MappingProxyType(dropped), why, rel)


def _class_name(kind: str) -> str:
    return "TurbomindEngineConfig" if kind == "turbomind" else "PytorchEngineConfig"


class LMDeployNotInstalledError(ImportError):
    """``autoget_backend_config`` builds LMDeploy's own engine config classes, and LMDeploy cannot be
    imported here (``.missing`` names the module that is missing)."""

    def __init__(self, missing: str | None, detail: str) -> None:
        self.missing = missing
        super().__init__(
            f"autoget_backend_config returns LMDeploy's TurbomindEngineConfig / PytorchEngineConfig, but "
            f"lmdeploy.messages cannot be imported here ({detail}); install lmdeploy, or call "
            "plan_backend_config for the decision alone",
            name=missing,
        )


class _HasAttr:
    """``name in _HasAttr(obj)`` is ``hasattr(obj, name)``: LMDeploy's own test."""

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and hasattr(self.obj, name)


def autoget_backend_config(
    model_path: PathLike | Mapping[str, Any],
    backend_config: Any = None,
    trust_remote_code: bool = False,
    *,
    lmdeploy: str | None = None,
) -> tuple[Literal["turbomind", "pytorch"], Any]:
    """``lmdeploy.archs.autoget_backend_config``: (backend, engine config), with the engine config
    an instance of the installed LMDeploy's ``TurbomindEngineConfig`` or ``PytorchEngineConfig``.

    The semantics are the ``lmdeploy`` release's (default: the installed one): from 0.12.0 a
    PytorchEngineConfig wins without reading the model; a config of the backend's own class comes
    back as is; otherwise a fresh config of the backend's class gets the caller's truthy fields (see
    ``plan_backend_config``: falsy values are dropped, as LMDeploy drops them). Releases before
    0.12.0 return the config alone; here the pair is always returned. ``trust_remote_code`` is
    accepted for compatibility; remote code is never run.

    :raises LMDeployNotInstalledError: lmdeploy (or what it imports) is missing.
    :raises TypeError: ``backend_config`` is neither engine config class.
    :raises pytest_lmbackend.config.ConfigError: the model's config (where it is read).
    """
    del trust_remote_code
    try:
        from lmdeploy.messages import PytorchEngineConfig, TurbomindEngineConfig
    except ImportError as exc:  # ModuleNotFoundError included: lmdeploy itself, or torch under it
        raise LMDeployNotInstalledError(exc.name, str(exc)) from exc
    classes: dict[str, type[Any]] = {"turbomind": TurbomindEngineConfig, "pytorch": PytorchEngineConfig}
    given: Literal["turbomind", "pytorch"] | None
    if backend_config is None:
        given = None
    elif isinstance(backend_config, PytorchEngineConfig):
        given = "pytorch"
    elif isinstance(backend_config, TurbomindEngineConfig):
        given = "turbomind"
    else:
        raise TypeError(
            "backend_config must be a TurbomindEngineConfig, a PytorchEngineConfig or None, "
            f"got {type(backend_config).__name__}"
        )
    fresh: dict[str, Any] = {}

    def target_attrs(kind: str) -> _HasAttr:
        fresh[kind] = classes[kind]()
        return _HasAttr(fresh[kind])

    fields = _asdict(backend_config) if given is not None else None
    plan = plan_backend_config(
        given,
        fields,
        backend=lambda: autoget_backend(model_path, lmdeploy=lmdeploy),
        target_attrs=target_attrs,
        lmdeploy=lmdeploy,
    )
    if plan.reuse:
        return plan.backend, backend_config
    config = fresh[plan.backend] if plan.backend in fresh else classes[plan.backend]()
    for key, value in plan.assign.items():
        setattr(config, key, value)
    return plan.backend, config


def _asdict(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)
