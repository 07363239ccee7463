"""Installed packages and accelerators read from files only: nothing here imports what it reports."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

TURBOMIND_KEY = "lmdeploy.turbomind"
# shown in headers and the env command, in this order, when installed
NOTABLE = ("lmdeploy", TURBOMIND_KEY, "torch", "transformers", "triton", "flash-attn", "flash-attn-3",
           "vllm", "xformers", "nvidia-ml-py", "torch-npu", "dlinfer-ascend")


def normalize(name: str) -> str:
    """PEP 503 form, so ``flash_attn``, ``Flash-Attn`` and ``flash.attn`` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version_of_egg_info(path: str) -> str | None:
    pkg_info = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
    try:
        with open(pkg_info, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        return None
    return None


def installed_distributions(paths: Iterable[str] | None = None) -> dict[str, str]:
    """Normalised distribution name -> version, from ``*.dist-info`` / ``*.egg-info`` names on ``paths``.

    Reads directory listings, not metadata files (about 1 ms, against 100+ ms for
    ``importlib.metadata.distributions()``); the first hit on the path wins, as imports do.
    """
    found: dict[str, str] = {}
    for entry in sys.path if paths is None else paths:
        try:
            listing = os.scandir(entry or ".")
        except OSError:
            continue
        with listing:
            for item in listing:
                name = item.name
                if name.endswith(".dist-info"):
                    dist, _, version = name[: -len(".dist-info")].partition("-")
                elif name.endswith(".egg-info"):
                    stem = name[: -len(".egg-info")]
                    dist, _, version = stem.partition("-")
                    version = version.split("-py")[0] if version else (_version_of_egg_info(item.path) or "")
                else:
                    continue
                if dist and version:
                    found.setdefault(normalize(dist), version)
    return found


# Where LMDeploy's wheels put the compiled TurboMind module (``_turbomind`` + an extension suffix),
# inside the ``lmdeploy`` package, by release; read from the wheels' RECORD files and the build rules:
#   0.4.0 - 0.17.0  lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so   CMakeLists.txt installs
#                   _turbomind to lmdeploy/lib; from 0.10.0 setup.py builds it with
#                   install_prefix='lmdeploy/lib'; RECORD of 0.7.3, 0.10.2, 0.14.0, 0.16.0, 0.17.0
#   0.18.0          lmdeploy/turbomind/_turbomind.cpython-311-x86_64-linux-gnu.so   RECORD of 0.18.0;
#                   lmdeploy/turbomind/__init__.py imports it as ``from . import _turbomind``
# tests/test_hardware.py checks both layouts, and the real environments of the differential tests.
TURBOMIND_FOLDERS: tuple[str, ...] = ("lib", "turbomind")


def turbomind_extension(locations: Iterable[str], suffixes: Iterable[str] | None = None) -> Path | None:
    """LMDeploy's compiled TurboMind module inside the ``lmdeploy`` package folders ``locations``:
    ``_turbomind`` with a suffix this interpreter imports (``EXTENSION_SUFFIXES``: a module built for
    another Python is not one LMDeploy could load), in ``lib/`` or ``turbomind/`` (see above)."""
    import importlib.machinery

    endings = tuple(importlib.machinery.EXTENSION_SUFFIXES if suffixes is None else suffixes)
    for folder in locations:
        for sub in TURBOMIND_FOLDERS:
            base = Path(folder, sub)
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in sorted(names):
                if name.startswith("_turbomind.") and name[len("_turbomind"):] in endings:
                    return base / name
    return None


def lmdeploy_locations() -> list[str]:
    """The folders of the top-level ``lmdeploy`` package, found without running its ``__init__``.

    ``find_spec("lmdeploy.lib._turbomind")`` would import ``lmdeploy`` (and torch with it) to reach
    the submodule; a top-level ``find_spec`` only searches the path.
    """
    try:
        spec = importlib.util.find_spec("lmdeploy")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return list(spec.submodule_search_locations)


def read_packages(paths: Iterable[str] | None = None,
                  locate_lmdeploy: Callable[[], list[str]] = lmdeploy_locations) -> dict[str, str]:
    """Installed distributions plus ``"lmdeploy.turbomind"`` (LMDeploy's version) when its extension
    file is present."""
    packages = installed_distributions(paths)
    if "lmdeploy" in packages and turbomind_extension(locate_lmdeploy()) is not None:
        packages[TURBOMIND_KEY] = packages["lmdeploy"]
    return packages


UNSTATED = ""  # a profile's package version when it states the package installed, at no version


def describe_package(name: str, version: str) -> str:
    """``torch 2.8.0``, or ``torch (version not stated)`` for a profile's package without a version."""
    return f"{name} {version}" if version != UNSTATED else f"{name} (version not stated)"


def notable_packages(packages: Mapping[str, str]) -> list[tuple[str, str]]:
    """The packages a report shows, in a fixed order."""
    return [(name, packages[name]) for name in NOTABLE if name in packages]


def detect_ascend(environ: Mapping[str, str], which: Callable[..., str | None] = shutil.which,
                  exists: Callable[[str], bool] = os.path.exists) -> bool:
    """An Ascend NPU is present: its tool ``npu-smi`` is on PATH or its device node exists.

    The CANN toolkit's variables (``ASCEND_HOME_PATH``) alone mean a toolkit, not a device.
    """
    if which("npu-smi", path=environ.get("PATH")) is not None:
        return True
    return exists("/dev/davinci_manager")
