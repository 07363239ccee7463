"""A ``Hardware`` as text (pytest header, ``env`` command) and as JSON; pure formatting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_lmbackend.display import printable
from pytest_lmbackend.hardware import (
    GPU,
    NPU,
    TURBOMIND_KEY,
    Hardware,
    describe_package,
    format_capability,
    format_memory,
    notable_packages,
    turbomind_kernels_missing,
)

HEADER_PREFIX = "lmbackend: "


def gpu_line(gpu: GPU) -> str:
    """``GPU 0 -> physical 3: NVIDIA H100 80GB HBM3, sm90 (9.0), 79.65 GiB total, 79.18 GiB free``."""
    return (f"GPU {gpu.index} -> physical {gpu.physical_index}: {gpu.name}, sm{gpu.sm} "
            f"({format_capability(gpu.capability)}), {format_memory(gpu.memory_total)} total, "
            f"{format_memory(gpu.memory_free)} free")


def npu_line(npu: NPU) -> str:
    """``NPU 0 -> device 0: Ascend910B3, 64 GiB total, 60.68 GiB free``."""
    return (f"NPU {npu.index} -> device {npu.physical_index}: {npu.name}, {format_memory(npu.memory_total)} "
            f"total, {format_memory(npu.memory_free)} free")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _source_line(hw: Hardware) -> str:
    count = _count(len(hw.gpus), "GPU")
    if hw.npus:
        npus = _count(len(hw.npus), "Ascend NPU")
        count = f"{count}, {npus}" if hw.gpus else npus
    if hw.nodes > 1:
        count = f"{hw.nodes} nodes of {count} each"
    if hw.source == "profile":
        where = f"profile {hw.profile!r} (fake hardware, nothing probed)"
    elif hw.source == "none":
        where = "no NVIDIA GPU found"
    else:
        where = f"read through {hw.source}"
    facts = [] if hw.npus and not hw.gpus and not hw.driver else [
        f"driver {hw.driver or 'none'}, CUDA {hw.cuda or 'none'}"]
    if hw.npus:
        facts.append(f"Ascend driver {hw.npu_driver or 'unknown'}")
    elif hw.ascend:
        facts.append("Ascend NPU present")
    return f"hardware: {count}, {where}; {', '.join(facts)}"


def _packages_line(hw: Hardware) -> str:
    shown = []
    for name, version in notable_packages(hw.packages):
        if name == TURBOMIND_KEY:
            continue
        extra = ""
        if name == "lmdeploy":
            present = TURBOMIND_KEY in hw.packages
            extra = " (TurboMind extension present)" if present else " (no TurboMind extension)"
        shown.append(f"{describe_package(name, version)}{extra}")
    return f"packages: {', '.join(shown) or 'none of lmdeploy, torch, transformers, triton, flash-attn'}"


def text_lines(hw: Hardware, *, backends: Mapping[str, str | None] | None = None) -> list[str]:
    """Source, driver and CUDA; one line per GPU; packages; backends; warnings; unprefixed."""
    lines = [_source_line(hw)]
    lmdeploy = hw.packages.get("lmdeploy")
    for gpu in hw.gpus:
        missing = turbomind_kernels_missing(gpu.capability, hw.cuda, lmdeploy=lmdeploy)
        kernels = "TurboMind kernels: yes" if missing is None else "TurboMind kernels: no"
        lines.append(f"  {gpu_line(gpu)}; {kernels}")
    lines.extend(f"  {npu_line(npu)}" for npu in hw.npus)
    lines.append(_packages_line(hw))
    if hw.backends is not None:
        lines.append(f"backends stated by the profile: {', '.join(hw.backends) or 'none'}")
    if backends is not None:
        ready = [name for name, why in backends.items() if why is None]
        lines.append(f"backends available: {', '.join(ready) or 'none'}")
        lines.extend(f"  {name}: {why}" for name, why in backends.items() if why is not None)
    lines.extend(f"warning: {w}" for w in hw.warnings)
    # GPU names, profile names and fields, driver strings, package versions: text from outside, one
    # safe line each (a NUL, an escape sequence or a newline in a name must not reach the terminal)
    return [printable(line) for line in lines]


def header_lines(hw: Hardware) -> list[str]:
    """The pytest report header: ``text_lines`` with the plugin's prefix (backends come from the plugin)."""
    return [HEADER_PREFIX + line for line in text_lines(hw)]


def env_text(hw: Hardware, *, backends: Mapping[str, str | None] | None = None) -> str:
    """What ``python -m pytest_lmbackend env`` prints."""
    return "\n".join(text_lines(hw, backends=backends)) + "\n"


def gpu_json(gpu: GPU) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "physical_index": gpu.physical_index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "capability": format_capability(gpu.capability),
        "memory_total": gpu.memory_total,
        "memory_free": gpu.memory_free,
        "pci_bus_id": gpu.pci_bus_id,
    }


def to_json(hw: Hardware, *, backends: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """A JSON-ready dict: every ``Hardware`` field, memory in bytes, capability as ``"9.0"``.

    ``backends`` (name -> None when available, else why not) is added when given.
    """
    lmdeploy = hw.packages.get("lmdeploy")
    data: dict[str, Any] = {
        "source": hw.source,
        "profile": hw.profile,
        "driver": hw.driver,
        "cuda": hw.cuda,
        "ascend": hw.ascend,
        "nodes": hw.nodes,
        "gpus": [
            {**gpu_json(g), "turbomind_kernels": turbomind_kernels_missing(g.capability, hw.cuda,
                                                                           lmdeploy=lmdeploy) is None}
            for g in hw.gpus
        ],
        "npus": [{"index": n.index, "physical_index": n.physical_index, "name": n.name,
                  "memory_total": n.memory_total, "memory_free": n.memory_free, "pci_bus_id": n.pci_bus_id}
                 for n in hw.npus],
        "npu_driver": hw.npu_driver,
        "packages": dict(sorted(hw.packages.items())),
        "stated_backends": list(hw.backends) if hw.backends is not None else None,
        "warnings": list(hw.warnings),
    }
    if backends is not None:
        data["backends"] = {name: {"available": why is None, "reason": why} for name, why in backends.items()}
    return data
