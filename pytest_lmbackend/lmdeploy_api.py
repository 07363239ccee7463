"""Drop-ins for ``lmdeploy.archs`` functions: same names and arguments, answered without LMDeploy."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from pytest_lmbackend.config import ConfigNotFoundError, from_mapping, read_config
from pytest_lmbackend.rules import detect, model_arch, resolve_release, rule_set
from pytest_lmbackend.rules.engine import check_vl, turbomind_rule

TYPE_CHECKING = False  # typing stays unimported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, Literal

__all__ = ["autoget_backend", "check_vl_llm", "get_model_arch", "get_task", "is_supported"]

PathLike = str | os.PathLike[str]


def get_model_arch(
    model_path: PathLike, trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> tuple[str, Mapping[str, Any]]:
    """``lmdeploy.archs.get_model_arch``: the architecture and the config (a read-only mapping here).

    ``trust_remote_code`` is accepted for compatibility; remote code is never run.
    """
    del trust_remote_code
    rules = rule_set(resolve_release(lmdeploy))
    cfg = read_config(model_path)
    if rules.workspace_arch and cfg.workspace_weights and cfg.workspace_arch:
        # 0.5-0.11 answer from the workspace's own config (the converted model's settings).
        return cfg.workspace_arch, MappingProxyType({})
    if cfg.data is None:
        raise ConfigNotFoundError(cfg.path, "config.json", "no config.json in this workspace")
    return model_arch(cfg, rules), cfg.data


def is_supported(
    model_path: PathLike, trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> bool:
    """``lmdeploy.turbomind.supported_models.is_supported``: would TurboMind take this model."""
    del trust_remote_code
    return detect(model_path, lmdeploy=lmdeploy).backend == "turbomind"


def autoget_backend(
    model_path: PathLike, trust_remote_code: bool = False, *, lmdeploy: str | None = None
) -> Literal["turbomind", "pytorch"]:
    """``lmdeploy.archs.autoget_backend`` on a machine where TurboMind is built."""
    del trust_remote_code
    rules = rule_set(resolve_release(lmdeploy))
    cfg = read_config(model_path)
    # Only the backend half: get_task's failures (e.g. an auto_map-only config) must not leak in.
    if cfg.triton_models and rules.workspace_is_tm:
        return "turbomind"
    if cfg.data is None:
        return detect(cfg, lmdeploy=rules.release).backend  # raises the typed error
    supported, _ = turbomind_rule(cfg, model_arch(cfg, rules), rules)
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
    return check_vl(from_mapping(config), backend, rule_set(resolve_release(lmdeploy)))[0]


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
    rules = rule_set(resolve_release(lmdeploy))
    cfg = read_config(model_path)
    llm_only = bool(rules.llm_only_switch and getattr(backend_config, rules.llm_only_switch, False))
    if llm_only:
        return "llm"
    if rules.workspace_task_llm and cfg.workspace_weights:
        return "llm"
    if cfg.data is None:
        return detect(cfg, lmdeploy=rules.release).task  # raises the typed error
    return "vlm" if check_vl(cfg, backend, rules)[0] else "llm"
