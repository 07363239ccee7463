"""LMDeploy's backend and task detection, per release, without importing LMDeploy, torch or transformers."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytest_lmbackend.config import ModelConfig, from_mapping, read_config
from pytest_lmbackend.rules.engine import Detection, LMDeployCrashError, evaluate, model_arch
from pytest_lmbackend.rules.releases import (
    KNOWN_RELEASES,
    NewerReleaseWarning,
    RuleSet,
    UnknownReleaseError,
    default_release,
    newer_than_known,
    resolve_release,
    rule_set,
    rules_for,
)

__all__ = [
    "KNOWN_RELEASES",
    "Detection",
    "LMDeployCrashError",
    "NewerReleaseWarning",
    "RuleSet",
    "UnknownReleaseError",
    "default_release",
    "detect",
    "detect_all",
    "model_arch",
    "newer_than_known",
    "resolve_release",
    "rule_set",
    "rules_for",
]

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from typing import Any

    Source = str | os.PathLike[str] | Mapping[str, Any] | ModelConfig


_ANSWERS: dict[tuple[ModelConfig, str, bool], Detection] = {}
_ANSWERS_MAX = 4096


def _config(source: Source) -> ModelConfig:
    if isinstance(source, ModelConfig):
        return source
    if isinstance(source, Mapping):
        return from_mapping(source)
    return read_config(source)


def detect(source: Source, *, lmdeploy: str | None = None, language_model_only: bool = False) -> Detection:
    """Which backend and task LMDeploy ``lmdeploy`` (default: the installed release, else the newest
    known) gives ``source``: a model folder, a config.json path, a parsed config mapping, a TurboMind
    workspace, a hub id in the local Hugging Face cache, or a ``ModelConfig``.

    :raises pytest_lmbackend.config.ConfigError: a typed error naming the file and the field (an
        ``LMDeployCrashError`` where that LMDeploy release itself raises on the config).
    :raises UnknownReleaseError: ``lmdeploy`` names no known release.

    A release newer than the newest known (``lmdeploy="0.19.0"``, or such an LMDeploy installed) is
    answered with the newest rules, and warned about once (``NewerReleaseWarning``).
    """
    rules = rules_for(lmdeploy)
    if isinstance(source, Mapping):
        return evaluate(from_mapping(source), rules, language_model_only=language_model_only)
    cfg = _config(source)
    # A warm file read returns the same ModelConfig object: its answers are memoised per release.
    key = (cfg, rules.release, language_model_only)
    found = _ANSWERS.get(key)
    if found is None:
        found = evaluate(cfg, rules, language_model_only=language_model_only)
        if len(_ANSWERS) >= _ANSWERS_MAX:
            _ANSWERS.clear()
        _ANSWERS[key] = found
    return found


def detect_all(
    source: Source, *, releases: tuple[str, ...] = KNOWN_RELEASES, language_model_only: bool = False
) -> dict[str, Detection | Exception]:
    """``detect`` under every release in ``releases`` (the config is read once); errors as values."""
    out: dict[str, Detection | Exception] = {}
    cfg = _config(source)
    for release in releases:
        try:
            out[release] = evaluate(cfg, rule_set(release), language_model_only=language_model_only)
        except ValueError as exc:
            out[release] = exc
    return out
