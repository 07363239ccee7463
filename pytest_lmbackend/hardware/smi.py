"""Read the driver's device list from ``nvidia-smi --query-gpu`` output, with a time limit."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping

from pytest_lmbackend.hardware.model import GPU
from pytest_lmbackend.hardware.nvml import DriverView, ProbeFailed
from pytest_lmbackend.hardware.visibility import Device

QUERY_FIELDS = ("index", "uuid", "pci.bus_id", "name", "compute_cap", "memory.total", "memory.free",
                "driver_version")
# compute_cap arrived in driver 510; older drivers refuse the whole query, so ask again without it
QUERY_FIELDS_OLD = tuple(f for f in QUERY_FIELDS if f != "compute_cap")
_MIB = 1024**2
_CUDA_LINE = re.compile(r"CUDA Version\s*:?\s*([0-9]+\.[0-9]+)")
_UNKNOWN = {"[n/a]", "[not supported]", "n/a", "[unknown error]", ""}

# for drivers too old to report compute_cap: the capability of the GPUs such drivers ran
_NAME_CAPABILITY: tuple[tuple[str, tuple[int, int]], ...] = (
    ("H100", (9, 0)), ("H200", (9, 0)), ("H800", (9, 0)), ("H20", (9, 0)), ("L40", (8, 9)),
    ("L4", (8, 9)), ("RTX 40", (8, 9)), ("A100", (8, 0)), ("A800", (8, 0)), ("A30", (8, 0)),
    ("A10", (8, 6)), ("A40", (8, 6)), ("A16", (8, 6)), ("A2", (8, 6)), ("RTX 30", (8, 6)),
    ("RTX A", (8, 6)), ("T4", (7, 5)), ("RTX 20", (7, 5)), ("TITAN RTX", (7, 5)), ("V100", (7, 0)),
    ("TITAN V", (7, 0)), ("P100", (6, 0)), ("P40", (6, 1)), ("P4", (6, 1)),
)


def capability_from_name(name: str) -> tuple[int, int] | None:
    for fragment, capability in _NAME_CAPABILITY:
        if fragment in name:
            return capability
    return None


_MIB_FIGURE = re.compile(r"^[0-9]{1,15}$")  # a whole number of MiB, ASCII digits, below 2**64 bytes


def _mib(text: str, field: str, gpu: str, notes: list[str]) -> int | None:
    """A memory figure in bytes; None when nvidia-smi does not know it ([N/A]) or prints something
    that is not a whole number of MiB (inf, nan, ...), which is noted. Either way the GPU stays
    listed: it exists, only this figure is unknown."""
    value = text.strip()
    if value.lower() in _UNKNOWN:
        return None
    if not _MIB_FIGURE.match(value):
        notes.append(f"nvidia-smi: {gpu}: {field} {value!r} is not a number of MiB; taken as unknown")
        return None
    return int(value) * _MIB


def parse_query(
    text: str, fields: tuple[str, ...] = QUERY_FIELDS
) -> tuple[list[Device], str | None, list[str]]:
    """Devices, driver version and notes from ``--format=csv,noheader,nounits`` output of ``fields``.

    A name may hold commas: fields before and after it are counted from the two ends of the line.
    """
    devices: list[Device] = []
    notes: list[str] = []
    driver: str | None = None
    name_at = fields.index("name")
    after = len(fields) - name_at - 1
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < len(fields):
            notes.append(f"nvidia-smi: line {line_no} has {len(parts)} fields, "
                         f"expected {len(fields)}: {line!r}")
            continue
        row = dict(zip(fields[:name_at], parts[:name_at], strict=True))
        row["name"] = ", ".join(parts[name_at:len(parts) - after])
        row.update(zip(fields[name_at + 1:], parts[len(parts) - after:], strict=True))
        if not re.match(r"^[0-9]{1,6}$", row["index"]):
            notes.append(f"nvidia-smi: line {line_no} is not a device row: {line!r}")
            continue
        index = int(row["index"])
        gpu_name = f"GPU {index} ({row['name']})"
        total = _mib(row["memory.total"], "memory.total", gpu_name, notes)
        free = _mib(row["memory.free"], "memory.free", gpu_name, notes)
        capability: tuple[int, int] | None = None
        cap_text = row.get("compute_cap", "")
        match = re.match(r"^([0-9]{1,4})\.([0-9]{1,4})$", cap_text)
        if match:
            capability = (int(match.group(1)), int(match.group(2)))
        else:
            capability = capability_from_name(row["name"])
            if capability is None:
                notes.append(f"nvidia-smi: compute capability of GPU {index} ({row['name']}) unknown")
        bus = row["pci.bus_id"].lower()
        gpu = GPU(index=len(devices), physical_index=index, uuid=row["uuid"], name=row["name"],
                  capability=capability or (0, 0),
                  memory_total=total or 0, memory_free=free,
                  pci_bus_id=None if bus in _UNKNOWN else bus)
        devices.append(Device(gpu))
        driver = driver or (None if row["driver_version"].lower() in _UNKNOWN else row["driver_version"])
    return devices, driver, notes


def parse_cuda_version(text: str) -> str | None:
    """``"13.0"`` from ``nvidia-smi --version`` or the banner of plain ``nvidia-smi``."""
    match = _CUDA_LINE.search(text)
    return match.group(1) if match else None


def run_tool(argv: list[str], deadline: float, what: str, *,
             tool: str = "nvidia-smi") -> subprocess.CompletedProcess[str]:
    """``argv`` with its output captured, killed with whatever it started at ``deadline``
    (``time.monotonic()``); ``ProbeFailed`` naming ``tool`` when it cannot start or runs past it."""
    try:
        # its own session, so a timeout kills whatever it started too (a wrapper script's children
        # would otherwise hold the pipes open past the kill)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        raise ProbeFailed(f"{tool}: cannot start {argv[0]}: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        try:
            proc.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass  # pipes held by something outside the group: give up on its output
        raise ProbeFailed(f"{tool}: {what} did not answer in time; killed it") from exc
    except BaseException:
        # Ctrl-C or another way out while it runs: its own session does not get the signal that
        # stopped this process, so it and what it started would keep running
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def read_smi(environ: Mapping[str, str], timeout: float) -> DriverView:
    """Every GPU ``nvidia-smi`` lists; ``ProbeFailed`` when it is missing, fails or hangs past ``timeout``."""
    exe = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if exe is None:
        raise ProbeFailed("nvidia-smi: not found on PATH")
    deadline = time.monotonic() + timeout
    fields: tuple[str, ...] = QUERY_FIELDS
    result = run_tool([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], deadline,
                  f"the query (limit {timeout:g} s)")
    if result.returncode != 0 and "compute_cap" in (result.stdout + result.stderr):
        fields = QUERY_FIELDS_OLD
        result = run_tool([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"], deadline,
                      f"the query (limit {timeout:g} s)")
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise ProbeFailed(f"nvidia-smi: exit {result.returncode}: {message[0] if message else 'no output'}")
    devices, driver, notes = parse_query(result.stdout, fields)
    try:
        version = run_tool([exe, "--version"], deadline, f"--version (limit {timeout:g} s)")
        cuda = parse_cuda_version(version.stdout)
    except ProbeFailed as exc:
        cuda = None
        notes.append(str(exc))
    if cuda is None and devices:
        notes.append("nvidia-smi: CUDA version unknown")
    return DriverView(tuple(devices), driver, cuda, tuple(notes))
