"""Read the driver's device list through NVML, never through CUDA.

Two bindings answer the same calls: our own ``ctypes`` one (``libnvml.py``, the fast start) and
``pynvml`` from nvidia-ml-py (where the library is not ``libnvidia-ml.so.1`` on Linux, or lacks a call).
``$PYTEST_LM_NVML`` picks one: ``auto`` (default, ctypes then pynvml), ``ctypes`` or ``pynvml``.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_lmbackend.hardware import libnvml
from pytest_lmbackend.hardware.model import GPU
from pytest_lmbackend.hardware.visibility import Device


class ProbeFailed(Exception):
    """This way of probing cannot answer here; the message says why, the probe tries the next way."""


@dataclass(frozen=True)
class DriverView:
    """What one probe way read: every device the driver has (no mask applied yet)."""

    devices: tuple[Device, ...]
    driver: str | None
    cuda: str | None
    warnings: tuple[str, ...] = ()


def _text(value: object) -> str:
    # pynvml before 11.5 returns bytes
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def cuda_from_nvml(version: int) -> str:
    """NVML's integer CUDA version (13000, 12080) as ``"13.0"``, ``"12.8"``."""
    return f"{version // 1000}.{(version % 1000) // 10}"


ENV_BINDING = "PYTEST_LM_NVML"
BINDINGS = ("auto", "ctypes", "pynvml")
DEFAULT_BINDING = "auto"


def load_pynvml() -> Any:
    try:
        with warnings.catch_warnings():
            # the old "pynvml" wrapper package warns on import that it is deprecated
            warnings.simplefilter("ignore")
            return importlib.import_module("pynvml")
    except ImportError as exc:
        raise ProbeFailed(f"pynvml (nvidia-ml-py) is not installed ({exc})") from exc


def _load(environ: Mapping[str, str]) -> Any:
    """The binding to use: ours through ctypes first, pynvml where ours cannot use the library."""
    raw = environ.get(ENV_BINDING, "")
    choice = raw.strip().lower() or DEFAULT_BINDING
    if choice not in BINDINGS:
        raise ProbeFailed(f"NVML: {ENV_BINDING}={raw!r} is not one of {', '.join(BINDINGS)}")
    reasons: list[str] = []
    if choice in ("auto", "ctypes"):
        try:
            return libnvml.load()
        except libnvml.LibraryMissing as exc:
            # on Linux pynvml loads the very same file name: no need to pay its import to fail again
            if choice == "ctypes" or isinstance(exc, libnvml.LibraryNotFound):
                raise ProbeFailed(f"NVML: {exc}") from exc
            reasons.append(str(exc))
    try:
        return load_pynvml()
    except ProbeFailed as exc:
        raise ProbeFailed("NVML: " + "; ".join([*reasons, str(exc)])) from exc


def _try(notes: list[str], what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        notes.append(f"NVML: {what}: {_error_text(exc)}")
        return None


def _mig_devices(nvml: Any, handle: Any, parent: GPU, notes: list[str]) -> list[Device] | None:
    """The MIG devices of a GPU in MIG mode (maybe none), or None when it is not in MIG mode."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except Exception:
        return None  # NotSupported on GPUs without MIG: the usual case
    if not current:
        return None
    found: list[Device] = []
    count = _try(notes, f"MIG device count of GPU {parent.physical_index}",
                 lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0
    for slot in range(int(count)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except Exception:
            continue  # empty slots answer NotFound
        device = _mig_device(nvml, mig, slot, parent, notes)
        if device is not None:
            found.append(device)
    return found


def _mig_device(nvml: Any, mig: Any, slot: int, parent: GPU, notes: list[str]) -> Device | None:
    uuid = _try(notes, f"UUID of MIG device {slot} on GPU {parent.physical_index}",
                lambda: _text(nvml.nvmlDeviceGetUUID(mig)))
    if uuid is None:
        return None
    name = _try(notes, "MIG device name", lambda: _text(nvml.nvmlDeviceGetName(mig))) or parent.name
    memory = _try(notes, f"memory of MIG device {uuid}", lambda: nvml.nvmlDeviceGetMemoryInfo(mig))
    gi = _try(notes, "GPU instance id", lambda: int(nvml.nvmlDeviceGetGpuInstanceId(mig)))
    ci = _try(notes, "compute instance id", lambda: int(nvml.nvmlDeviceGetComputeInstanceId(mig)))
    gpu = GPU(index=0, physical_index=parent.physical_index, uuid=uuid, name=name,
              capability=parent.capability,
              memory_total=int(memory.total) if memory is not None else 0,
              memory_free=int(memory.free) if memory is not None else None,
              pci_bus_id=parent.pci_bus_id)
    return Device(gpu, mig_parent_uuid=parent.uuid, gpu_instance=gi, compute_instance=ci)


def read_nvml(environ: Mapping[str, str] | None = None) -> DriverView:
    """Every device NVML lists, in its (PCI bus) order; ``ProbeFailed`` when NVML cannot answer at all.

    NVML lists GPUs whatever ``CUDA_VISIBLE_DEVICES`` says, and creates no CUDA context.
    :param environ: where ``$PYTEST_LM_NVML`` is read (default: nothing set, ``auto``).
    """
    nvml = _load(environ or {})
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise ProbeFailed(f"NVML: cannot initialise: {_error_text(exc)}") from exc
    notes: list[str] = []
    try:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            raise ProbeFailed(f"NVML: cannot count devices: {_error_text(exc)}") from exc
        driver = _try(notes, "driver version", lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        get_cuda = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(
            nvml, "nvmlSystemGetCudaDriverVersion", None)
        cuda_int = _try(notes, "CUDA version", get_cuda) if get_cuda is not None else None
        cuda = cuda_from_nvml(int(cuda_int)) if cuda_int else None
        devices: list[Device] = []
        for index in range(count):
            device = _read_device(nvml, index, notes)
            if device is None:
                continue
            handle, gpu = device
            migs = _mig_devices(nvml, handle, gpu, notes)
            if migs is None:
                devices.append(Device(gpu))
            elif migs:
                devices.extend(migs)
            else:  # CUDA cannot use a GPU in MIG mode as a whole, nor one without MIG devices
                notes.append(f"NVML: GPU {index} ({gpu.name}) is in MIG mode with no MIG devices; "
                             "CUDA sees nothing of it")
        # positions in the enumeration CUDA masks, MIG devices in place of their parents
        numbered = tuple(dataclasses.replace(d, gpu=dataclasses.replace(d.gpu, index=i))
                         for i, d in enumerate(devices))
        return DriverView(numbered, driver, cuda, tuple(notes))
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass  # nothing to report: the facts are read already


def _read_device(nvml: Any, index: int, notes: list[str]) -> tuple[Any, GPU] | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    except Exception as exc:
        # a GPU the driver cannot open (lost, in reset) is one CUDA cannot use either
        notes.append(f"NVML: GPU {index} skipped: {_error_text(exc)}")
        return None
    name = _try(notes, f"name of GPU {index}", lambda: _text(nvml.nvmlDeviceGetName(handle))) or "unknown GPU"
    capability = _try(notes, f"compute capability of GPU {index}",
                      lambda: tuple(int(v) for v in nvml.nvmlDeviceGetCudaComputeCapability(handle)))
    memory = _try(notes, f"memory of GPU {index}", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    pci = _try(notes, f"PCI bus id of GPU {index}", lambda: nvml.nvmlDeviceGetPciInfo(handle))
    bus_id = (_text(getattr(pci, "busId", "")).lower() or None) if pci is not None else None
    gpu = GPU(
        index=index, physical_index=index, uuid=uuid, name=name,
        capability=(capability[0], capability[1]) if capability else (0, 0),
        memory_total=int(memory.total) if memory is not None else 0,
        memory_free=int(memory.free) if memory is not None else None,
        pci_bus_id=bus_id,
    )
    return handle, gpu
