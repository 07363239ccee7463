"""What each pinned transformers does with a config.json, as the rules read it: one generated module
per release under ``rules/transformers/``, imported the first time a release answering with it is asked.

Regenerate with ``scripts/generate_rules_data.py`` (docs/DETECTION.md, "Regenerating the tables").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pytest_lmbackend.rules.transformers import VERSIONS

__all__ = ["VERSIONS", "TransformersFacts", "facts"]


@dataclass(frozen=True)
class TransformersFacts:
    """One transformers release (see the generated module's constants for each field's meaning)."""

    version: str
    known: frozenset[str]
    sub_config_kinds: Mapping[str, Mapping[str, str]]
    sub_configs: Mapping[str, tuple[str, ...]]
    rejected: Mapping[str, Mapping[str, str]]
    allowed_layer_types: frozenset[str] | None
    without_rope_parameters: frozenset[str]
    torch_dtypes: frozenset[str]


_LOADED: dict[str, TransformersFacts] = {}


def facts(version: str) -> TransformersFacts:
    """The facts of ``version``, one of ``VERSIONS``.

    :raises KeyError: a version no module was generated for.
    """
    found = _LOADED.get(version)
    if found is None:
        if version not in VERSIONS:
            raise KeyError(f"no transformers facts for {version}; generated: {', '.join(VERSIONS)}")
        module = importlib.import_module(f"pytest_lmbackend.rules.transformers.v{version.replace('.', '_')}")
        kinds = module.SUB_CONFIG_KINDS
        found = _LOADED[version] = TransformersFacts(
            version=version,
            known=module.KNOWN,
            sub_config_kinds=kinds,
            sub_configs=MappingProxyType({t: tuple(sorted(k)) for t, k in kinds.items()}),
            rejected=module.REJECTED,
            allowed_layer_types=module.ALLOWED_LAYER_TYPES,
            without_rope_parameters=module.WITHOUT_ROPE_PARAMETERS,
            torch_dtypes=module.TORCH_DTYPES,
        )
    return found
