"""Read the Ascend NPUs ``npu-smi info`` lists, with a time limit.

``npu-smi info`` prints a table with two rows per chip, ``NPU Name | Health | Power Temp Hugepages``
then ``Chip [Phy-ID|Device] | Bus-Id | AICore Memory-Usage [HBM-Usage]``, and after the chips a
table of processes. Its columns vary with the driver and the chip (Atlas A2 ``910B3``, Atlas A3
``Ascend910`` with two chips a card, ``310P3`` without HBM, newer drivers' ``NPU ID | Name | ...``),
so rows are read by their cells, not by fixed positions.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_lmbackend.hardware.model import NPU
from pytest_lmbackend.hardware.nvml import ProbeFailed

_MIB = 1024**2
_PAIR = re.compile(r"([0-9]+)\s*/\s*([0-9]+)")
_VERSION = re.compile(r"npu-smi\s+\S+\s+Version:\s*(\S+)")
_BUS = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-9a-fA-F]$")
_ID = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class NpuView:
    """What ``npu-smi`` said: every chip in its order (before any mask), its version, and notes."""

    npus: tuple[NPU, ...]
    driver: str | None
    warnings: tuple[str, ...]


def chip_name(shown: str) -> str:
    """CANN's name of a chip: ``npu-smi`` prints ``910B3`` or ``Ascend910``; both become ``Ascend...``."""
    return shown if shown.lower().startswith("ascend") else f"Ascend{shown}"


def _cells(line: str) -> list[str] | None:
    text = line.strip()
    if not text.startswith("|"):
        return None  # a border (+----+) or anything outside the table
    return [cell.strip() for cell in text.strip("|").split("|")]


def _chip_row(cells: list[str]) -> tuple[str, str] | None:
    """Name and health from a chip's first row: ``0  910B3 | OK | ...`` or ``0 | Ascend950DT | OK | ...``."""
    if len(cells) >= 4 and _ID.match(cells[0]) and cells[1] and cells[2]:
        return cells[1], cells[2]
    parts = cells[0].split()
    if len(cells) >= 3 and len(parts) >= 2 and _ID.match(parts[0]) and cells[1]:
        return " ".join(parts[1:]), cells[1]
    return None


def _memory(cells: list[str]) -> tuple[int, int] | None:
    """(used, total) MiB from a chip's second row: HBM where the chip has it, else its memory (310P)."""
    pairs = [(int(used), int(total)) for used, total in _PAIR.findall(cells[-1])]
    with_total = [p for p in pairs if p[1] > 0]
    return with_total[-1] if with_total else None


def parse_npu_smi(text: str) -> NpuView:
    """The chips of ``npu-smi info`` output in its order; what cannot be read becomes a note."""
    npus: list[NPU] = []
    notes: list[str] = []
    driver: str | None = None
    first: tuple[str, str] | None = None
    for line_no, line in enumerate(text.splitlines(), 1):
        version = _VERSION.search(line)
        if version is not None:
            driver = driver or version.group(1)
            continue
        cells = _cells(line)
        if cells is None or not any(cells):
            continue
        joined = " ".join(cells)
        if "Process id" in joined or "Process name" in joined:
            break  # the process table: its rows are not chips
        if "Health" in joined or "Bus-Id" in joined:
            continue  # the header's two rows
        if first is None:
            first = _chip_row(cells)
            if first is None:
                notes.append(f"npu-smi: line {line_no} is not a chip row: {line.strip()!r}")
            continue
        name, health = first
        first = None
        memory = _memory(cells)
        index = len(npus)
        if memory is None:
            notes.append(f"npu-smi: memory of NPU {index} ({name}) unknown: {line.strip()!r}")
        used, total = memory or (0, 0)
        bus = next((c.lower() for c in cells if _BUS.match(c)), None)
        npus.append(NPU(index=index, physical_index=index, name=chip_name(name), memory_total=total * _MIB,
                        memory_free=None if memory is None else max(0, total - used) * _MIB, pci_bus_id=bus))
        if health.upper() != "OK":
            notes.append(f"npu-smi: NPU {index} ({chip_name(name)}) health is {health}")
    if first is not None:
        notes.append(f"npu-smi: the last chip ({first[0]}) has no second row")
    return NpuView(tuple(npus), driver, tuple(notes))


def read_npu_smi(environ: Mapping[str, str], timeout: float) -> NpuView | None:
    """The chips ``npu-smi info`` lists; None where ``npu-smi`` is not on PATH (nothing is run then).

    :raises ProbeFailed: it fails or hangs past ``timeout`` (it is killed, with what it started).
    """
    exe = shutil.which("npu-smi", path=environ.get("PATH"))
    if exe is None:
        return None
    from pytest_lmbackend.hardware.smi import run_tool

    deadline = time.monotonic() + timeout
    result = run_tool([exe, "info"], deadline, f"info (limit {timeout:g} s)", tool="npu-smi")
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ProbeFailed(f"npu-smi: exit {result.returncode}: {message[0] if message else 'no output'}")
    return parse_npu_smi(result.stdout)
