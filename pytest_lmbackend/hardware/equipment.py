"""Profiles equipped with LMDeploy: ``h100x8+lmdeploy`` is an H100 runner with LMDeploy installed."""

from __future__ import annotations

import dataclasses
import re

from pytest_lmbackend.hardware.model import Hardware, ProfileError
from pytest_lmbackend.hardware.packages import TURBOMIND_KEY, UNSTATED


def _brief(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else f"{shown[:40]}...{shown[-10:]}"


# ``PROFILE+lmdeploy``: the runner has LMDeploy, ``+lmdeploy-pytorch``: LMDeploy without TurboMind
_EQUIPMENT = re.compile(r"^(lmdeploy|lmdeploy-pytorch)(?:=([0-9][0-9a-z.+!-]*))?$")
EQUIPMENT = ("lmdeploy", "lmdeploy-pytorch")
# what installing LMDeploy brings besides itself (requirements/runtime_cuda.txt, runtime_ascend.txt)
_LMDEPLOY_CUDA = ("torch", "transformers")
_LMDEPLOY_ASCEND = ("torch", "transformers", "torch-npu", "dlinfer-ascend")


def split_equipment(spec: str) -> tuple[str, tuple[str, str] | None]:
    """``h100x8+lmdeploy=0.14.0`` -> ``("h100x8", ("lmdeploy", "0.14.0"))``; no ``+``: no equipment."""
    base, plus, rest = spec.partition("+")
    if not plus:
        return spec, None
    match = _EQUIPMENT.match(rest.strip().lower())
    if match is None:
        raise ProfileError(f"hardware profile {_brief(spec)}: '+{rest[:40]}' is not known equipment; "
                           "say +lmdeploy (LMDeploy with TurboMind built) or +lmdeploy-pytorch (without "
                           "it), each optionally =VERSION, e.g. h100x8+lmdeploy=0.18.0", path=spec)
    return base.strip(), (match.group(1), match.group(2) or UNSTATED)


def equip(hardware: Hardware, equipment: str, version: str = UNSTATED) -> Hardware:
    """``hardware`` as a runner with LMDeploy installed (``version``, or stated without one):
    ``lmdeploy`` with its TurboMind extension built, ``lmdeploy-pytorch`` without it, and what
    LMDeploy's install brings (torch and transformers; on Ascend NPUs torch-npu and dlinfer-ascend,
    and no TurboMind, which is CUDA-only). The result states its packages: these, plus any the
    profile itself stated; it answers "what would that runner run?" on any machine."""
    packages = dict(hardware.packages) if hardware.packages_stated else {}
    ascend = bool(hardware.npus) and not hardware.gpus
    for name in _LMDEPLOY_ASCEND if ascend else _LMDEPLOY_CUDA:
        packages.setdefault(name, UNSTATED)
    packages["lmdeploy"] = version
    if equipment == "lmdeploy" and not ascend:
        packages[TURBOMIND_KEY] = version
    else:
        packages.pop(TURBOMIND_KEY, None)
    suffix = f"+{equipment}" + (f"={version}" if version else "")
    return dataclasses.replace(hardware, packages=packages, packages_stated=True,
                               profile=f"{hardware.profile}{suffix}")
