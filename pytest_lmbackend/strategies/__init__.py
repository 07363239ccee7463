"""Hypothesis strategies for Hugging Face model configs, model folders and hostile config files."""

from __future__ import annotations

from . import profiles as _profiles
from ._configs import IRRELEVANT_KEYS, hf_configs, irrelevant_keys
from ._families import FAMILIES, FAMILY_TABLE, KNOWN_ARCHS, Family, named_by
from ._files import MALFORMED_KINDS, MalformedConfig, malformed_configs, model_dirs, write_model_dir
from ._invalid import (
    BREAKAGES,
    RULE_FIELDS,
    SUB_CONFIG_FIELDS,
    SWAP_KINDS,
    rule_paths,
    swapped_value,
    type_swapped,
)
from ._quant import QUANTIZATIONS

_profiles.register_profiles()

__all__ = [
    "BREAKAGES",
    "FAMILIES",
    "FAMILY_TABLE",
    "IRRELEVANT_KEYS",
    "KNOWN_ARCHS",
    "MALFORMED_KINDS",
    "QUANTIZATIONS",
    "RULE_FIELDS",
    "SUB_CONFIG_FIELDS",
    "SWAP_KINDS",
    "Family",
    "MalformedConfig",
    "hf_configs",
    "irrelevant_keys",
    "malformed_configs",
    "model_dirs",
    "named_by",
    "rule_paths",
    "swapped_value",
    "type_swapped",
    "write_model_dir",
]
