"""Hardware facts without torch: probe (profile, NVML, nvidia-smi), visibility mask, derived capabilities."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_lmbackend.hardware.capability import (
    DTYPE_ALIASES,
    DTYPE_MIN_CAPABILITY,
    TURBOMIND_BUILDS,
    has_turbomind_kernels,
    native_bf16,
    native_fp8,
    supports_dtype,
    turbomind_builds,
    turbomind_kernels_missing,
)
from pytest_lmbackend.hardware.model import GPU, NPU, SOURCES, Accelerator, Hardware, ProfileError, Source
from pytest_lmbackend.hardware.units import format_capability, format_memory, parse_capability, parse_memory

if TYPE_CHECKING:
    from pytest_lmbackend.hardware.packages import (
        TURBOMIND_KEY,
        UNSTATED,
        describe_package,
        detect_ascend,
        normalize,
        notable_packages,
    )
    from pytest_lmbackend.hardware.probing import (
        DEFAULT_TIMEOUT,
        ENV_PROFILE,
        probe,
        probe_many,
        profile_spec,
    )
    from pytest_lmbackend.hardware.profiles import load_profile, load_profiles, shipped_profiles
    from pytest_lmbackend.hardware.visibility import apply_visibility

# Loaded on first use: importing this package (as the plugin does at start-up) must stay cheap, and
# profiles (tomllib), nvidia-smi (subprocess) and package scanning are needed only once a session probes.
_LAZY: dict[str, str] = {
    "TURBOMIND_KEY": "packages", "UNSTATED": "packages", "describe_package": "packages",
    "detect_ascend": "packages", "normalize": "packages",
    "notable_packages": "packages",
    # the module is "probing", not "probe": importing a submodule binds its name on this package,
    # which would hide the function probe()
    "DEFAULT_TIMEOUT": "probing", "ENV_PROFILE": "probing", "probe": "probing", "probe_many": "probing",
    "profile_spec": "probing",
    "load_profile": "profiles", "load_profiles": "profiles", "shipped_profiles": "profiles",
    "apply_visibility": "visibility",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(f"{__name__}.{module}")
    for other, where in _LAZY.items():  # every name of that module at once
        if where == module:
            globals()[other] = getattr(loaded, other)
    return globals()[name]


__all__ = [
    "DEFAULT_TIMEOUT",
    "DTYPE_ALIASES",
    "DTYPE_MIN_CAPABILITY",
    "ENV_PROFILE",
    "GPU",
    "NPU",
    "SOURCES",
    "TURBOMIND_BUILDS",
    "TURBOMIND_KEY",
    "UNSTATED",
    "Accelerator",
    "Hardware",
    "ProfileError",
    "Source",
    "apply_visibility",
    "describe_package",
    "detect_ascend",
    "format_capability",
    "format_memory",
    "has_turbomind_kernels",
    "load_profile",
    "load_profiles",
    "native_bf16",
    "native_fp8",
    "normalize",
    "notable_packages",
    "parse_capability",
    "parse_memory",
    "probe",
    "probe_many",
    "profile_spec",
    "shipped_profiles",
    "supports_dtype",
    "turbomind_builds",
    "turbomind_kernels_missing",
]
