"""A runner is what it claims: the machine a job runs on must hold at least what its profile states; pure.

Each fact a profile can state is checked by one function in ``CHECKS``: adding a fact to profiles
(accelerators of another kind, nodes) is one more entry there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_lmbackend.hardware import GPU, Hardware

# (claimed, actual, backends available on the actual machine) -> what is missing, or None
Check = Callable[["Hardware", "Hardware", Collection[str]], "str | None"]


def _describe(gpu: GPU) -> str:
    from pytest_lmbackend.display import printable
    from pytest_lmbackend.hardware import format_capability, format_memory

    return printable(f"{gpu.name}, {format_capability(gpu.capability)}, {format_memory(gpu.memory_total)}")


def _fits(want: GPU, have: GPU) -> bool:
    return have.capability >= want.capability and have.memory_total >= want.memory_total


def match_gpus(claimed: Sequence[GPU], actual: Sequence[GPU]) -> list[GPU]:
    """The claimed GPUs left without a distinct actual GPU of at least their compute capability and
    memory. The most demanding claim chooses first and takes the least GPU that fits it."""
    pool = sorted(actual, key=lambda g: (g.capability, g.memory_total))
    unmatched = []
    for want in sorted(claimed, key=lambda g: (g.capability, g.memory_total), reverse=True):
        have = next((g for g in pool if _fits(want, g)), None)
        if have is None:
            unmatched.append(want)
        else:
            pool.remove(have)
    return unmatched


def check_gpus(claimed: Hardware, actual: Hardware, available: Collection[str]) -> str | None:
    unmatched = match_gpus(claimed.gpus, actual.gpus)
    if not unmatched:
        return None
    from pytest_lmbackend.hardware import format_capability, format_memory

    kinds = Counter((g.name, g.capability, g.memory_total) for g in claimed.gpus)
    wanted = ", ".join(f"{n} x {name} (compute capability >= {format_capability(cap)}, "
                       f">= {format_memory(mem)})" for (name, cap, mem), n in kinds.items())
    found = "; ".join(f"GPU {g.index} ({_describe(g)})" for g in actual.gpus) or "none"
    return (f"GPUs: needs {wanted}; found {len(actual.gpus)}: {found}; "
            f"{len(unmatched)} of the {len(claimed.gpus)} without a GPU that matches")


def check_npus(claimed: Hardware, actual: Hardware, available: Collection[str]) -> str | None:
    """Ascend NPUs have no compute capability: each claimed one needs its own NPU of at least its memory."""
    from pytest_lmbackend.hardware import format_memory

    pool = sorted(n.memory_total for n in actual.npus)
    unmatched = 0
    for want in sorted((n.memory_total for n in claimed.npus), reverse=True):
        have = next((m for m in pool if m >= want), None)
        if have is None:
            unmatched += 1
        else:
            pool.remove(have)
    if not unmatched:
        return None
    kinds = Counter((n.name, n.memory_total) for n in claimed.npus)
    wanted = ", ".join(f"{n} x {name} (>= {format_memory(mem)})" for (name, mem), n in kinds.items())
    found = "; ".join(f"{n.label()}, {format_memory(n.memory_total)}" for n in actual.npus) or "none"
    return (f"NPUs: needs {wanted}; found {len(actual.npus)}: {found}; "
            f"{unmatched} of the {len(claimed.npus)} without an NPU that matches")


def check_packages(claimed: Hardware, actual: Hardware, available: Collection[str]) -> str | None:
    from pytest_lmbackend.hardware import TURBOMIND_KEY, describe_package

    problems = []
    for name, version in claimed.packages.items():
        found = actual.packages.get(name)
        if name == TURBOMIND_KEY:
            if found is None:
                problems.append("LMDeploy's TurboMind extension: not installed")
        elif found is None:
            problems.append(f"{describe_package(name, version)}: not installed")
        elif version and _older(found, version):  # "": stated without a version, any will do
            problems.append(f"{name} {version}: found {found}")
    return "packages: " + "; ".join(problems) if problems else None


def _older(found: str, wanted: str) -> bool:
    """``found`` is an older version than ``wanted`` (or, where either is no version, different)."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(found) < Version(wanted)
    except InvalidVersion:
        return found != wanted


def check_backends(claimed: Hardware, actual: Hardware, available: Collection[str]) -> str | None:
    missing = [b for b in claimed.backends or () if b not in available]
    if not missing:
        return None
    return (f"backends: {', '.join(missing)} not available here "
            f"(available: {', '.join(sorted(available)) or 'none'})")


def check_nodes(claimed: Hardware, actual: Hardware, available: Collection[str]) -> str | None:
    if actual.nodes >= claimed.nodes:
        return None
    return (f"nodes: needs {claimed.nodes} nodes; this job spans {actual.nodes} "
            "(the probe reads it from $PYTEST_LM_NODES)")


CHECKS: tuple[tuple[str, Check], ...] = (
    ("nodes", check_nodes),
    ("gpus", check_gpus),
    ("npus", check_npus),
    ("packages", check_packages),
    ("backends", check_backends),
)


def missing(claimed: Hardware, actual: Hardware, available: Collection[str]) -> list[str]:
    """What ``actual`` lacks of what the profile ``claimed`` states, one line per fact; [] when the
    runner is what it claims.

    :param available: the backends available on the actual machine (for a profile's ``backends``).
    """
    return [problem for _, check in CHECKS if (problem := check(claimed, actual, available)) is not None]
