"""``CUDA_VISIBLE_DEVICES`` and ``ASCEND_RT_VISIBLE_DEVICES`` applied to the driver's device list the
way CUDA and Ascend's runtime (CANN) apply them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pytest_lmbackend.hardware.model import GPU, NPU

# CUDA reads the variable as ASCII bytes: "٠" (U+0660) is no index, however Python's \d sees it
_INDEX = re.compile(r"^[+-]?[0-9]+$")
_OLD_MIG = re.compile(r"^MIG-(GPU-[0-9a-fA-F-]+)/([0-9]+)/([0-9]+)$")


@dataclass(frozen=True)
class Device:
    """A device as the driver lists it, before any mask: ``gpu.index`` is its enumeration position.

    MIG devices carry their parent's UUID and instance ids for the old ``MIG-GPU-<uuid>/<gi>/<ci>`` form.
    """

    gpu: GPU
    mig_parent_uuid: str | None = None
    gpu_instance: int | None = None
    compute_instance: int | None = None


def _match(entry: str, devices: Sequence[Device]) -> list[int]:
    """Positions of the devices an entry names (several = ambiguous, none = unknown)."""
    if _INDEX.match(entry):
        number = int(entry)
        return [number] if 0 <= number < len(devices) else []
    old = _OLD_MIG.match(entry)
    if old is not None:
        parent, gi, ci = old.group(1).lower(), int(old.group(2)), int(old.group(3))
        return [i for i, d in enumerate(devices)
                if d.mig_parent_uuid is not None and d.mig_parent_uuid.lower() == parent
                and d.gpu_instance == gi and d.compute_instance == ci]
    lowered = entry.lower()
    if lowered.startswith("gpu-"):
        return [i for i, d in enumerate(devices)
                if d.mig_parent_uuid is None and d.gpu.uuid.lower().startswith(lowered)]
    if lowered.startswith("mig-"):
        return [i for i, d in enumerate(devices)
                if d.mig_parent_uuid is not None and d.gpu.uuid.lower().startswith(lowered)]
    return []


def apply_visibility(devices: Sequence[Device], value: str | None) -> tuple[tuple[GPU, ...], tuple[str, ...]]:
    """The GPUs a CUDA program sees under ``CUDA_VISIBLE_DEVICES=value``, renumbered from 0, and notes.

    As CUDA does: unset shows every device; empty shows none; entries are indices, ``GPU-`` UUIDs or
    unique UUID prefixes, ``MIG-`` UUIDs (or ``MIG-GPU-<uuid>/<gi>/<ci>``); the list stops at the first
    entry that names no device, an ambiguous prefix or a repeat, and what came before it still counts.
    """
    if value is None:
        chosen = list(range(len(devices)))
        notes: list[str] = []
    else:
        chosen, notes = [], []
        entries = [e.strip() for e in value.split(",")]
        if value.strip() == "":
            if devices:
                notes.append(f"CUDA_VISIBLE_DEVICES is empty: all {len(devices)} GPU(s) hidden")
            entries = []
        for position, entry in enumerate(entries):
            found = _match(entry, devices)
            problem = None
            if len(found) > 1:
                problem = f"entry {entry!r} matches {len(found)} devices"
            elif not found:
                problem = f"entry {entry!r} names no device here ({len(devices)} found)"
            elif found[0] in chosen:
                problem = f"entry {entry!r} repeats a device"
            if problem is not None:
                ignored = entries[position:]
                notes.append(
                    f"CUDA_VISIBLE_DEVICES={value!r}: {problem}; CUDA ignores it and the rest "
                    f"({', '.join(repr(e) for e in ignored)}), so {len(chosen)} GPU(s) are visible"
                )
                break
            chosen.append(found[0])
    visible = tuple(dataclasses.replace(devices[p].gpu, index=i) for i, p in enumerate(chosen))
    return visible, tuple(notes)


def order_warning(devices: Sequence[Device], environ: Mapping[str, str]) -> str | None:
    """CUDA numbers mixed GPUs fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; the driver lists
    them by bus: then indices here and in CUDA may differ, and the user should know."""
    names = {d.gpu.name for d in devices}
    if len(names) > 1 and environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") != "PCI_BUS_ID":
        return ("GPUs of different kinds and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number them "
                "fastest first, unlike the bus order shown here; set CUDA_DEVICE_ORDER=PCI_BUS_ID")
    return None


ASCEND_MASK = "ASCEND_RT_VISIBLE_DEVICES"
_ASCEND_ID = re.compile(r"^[0-9]+$")


def apply_npu_visibility(npus: Sequence[NPU], value: str | None, *,
                         variable: str = ASCEND_MASK) -> tuple[tuple[NPU, ...], tuple[str, ...]]:
    """The NPUs an Ascend program sees under ``ASCEND_RT_VISIBLE_DEVICES=value``, renumbered from 0.

    As CANN documents it: entries are logical device IDs separated by commas, in ascending order;
    the runtime reads the IDs before the first entry holding anything else (a space, a sign, a
    non-ASCII digit) or naming no device (``1,3,8`` on 8 NPUs gives 1 and 3). An entry out of order or
    repeated also ends the list here, since CANN supports ascending order only. Unset shows every NPU.
    """
    if value is None:
        return tuple(npus), ()
    chosen: list[int] = []
    notes: list[str] = []
    entries = value.split(",")
    for position, entry in enumerate(entries):
        problem = None
        if not _ASCEND_ID.match(entry):
            problem = f"entry {entry!r} is not a device ID (ASCII digits only)"
        elif int(entry) >= len(npus):
            problem = f"entry {entry!r} names no device here ({len(npus)} found)"
        elif chosen and int(entry) <= chosen[-1]:
            problem = f"entry {entry!r} is not in ascending order, which CANN requires"
        if problem is not None:
            ignored = ", ".join(repr(e) for e in entries[position:])
            notes.append(f"{variable}={value!r}: {problem}; the runtime reads only the IDs before it "
                         f"(ignoring {ignored}), so {len(chosen)} NPU(s) are visible")
            break
        chosen.append(int(entry))
    visible = tuple(dataclasses.replace(npus[p], index=i) for i, p in enumerate(chosen))
    return visible, tuple(notes)
