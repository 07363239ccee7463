"""NVML's C library called straight through ``ctypes``: the few calls the probe makes.

Why a binding of our own beside nvidia-ml-py: importing ``pynvml`` (a 330 KB module of ctypes
structures) costs a fresh pytest process more than NVML itself; where its bytecode cache is missing
it costs 0.1 s or more, while ``nvidia-smi``, which calls the same library, answers in a few
milliseconds. The probe runs once per session, so this is paid by every ``pytest`` invocation.

The class mirrors pynvml's function names and return shapes for the calls it has, so the reading
logic in ``nvml.py`` runs on either binding. Structures and buffer sizes follow ``nvml.h`` (the
layouts a test compares with pynvml's own). Only ``libnvidia-ml.so.1`` on Linux is looked for;
elsewhere, and where a symbol is missing, the probe uses pynvml.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Any

LIBRARY = "libnvidia-ml.so.1"

# nvml.h buffer sizes (the _V2 ones, large enough for every driver since NVML 11)
UUID_BUFFER = 96
NAME_BUFFER = 96
DRIVER_VERSION_BUFFER = 80

_ERROR_NAMES = {
    1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 4: "Insufficient Permissions",
    5: "Already Initialized", 6: "Not Found", 7: "Insufficient Size", 8: "Insufficient External Power",
    9: "Driver Not Loaded", 10: "Timeout", 11: "Interrupt Received", 12: "Library Not Found",
    13: "Function Not Found", 14: "Corrupted infoROM", 15: "GPU is lost", 16: "Reset Required",
    17: "Operating System", 18: "Library Version Mismatch", 19: "In Use", 20: "Memory",
    21: "No Data", 22: "vGPU ECC Not Supported", 23: "Insufficient Resources", 999: "Unknown Error",
}


class LibraryMissing(Exception):
    """The C library cannot be used here (not found, not Linux, or lacking a call we need)."""


class LibraryNotFound(LibraryMissing):
    """The loader found no ``libnvidia-ml.so.1``: pynvml, which loads the same name, would not either."""


class NVMLError(Exception):
    """An NVML call answered an error code; ``code`` is NVML's ``nvmlReturn_t``."""

    def __init__(self, code: int, text: str, function: str) -> None:
        super().__init__(f"{text} (NVML error {code} in {function})")
        self.code = code
        self.function = function


class Memory(ctypes.Structure):
    """``nvmlMemory_t``: bytes."""

    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class PciInfo(ctypes.Structure):
    """``nvmlPciInfo_t`` as ``nvmlDeviceGetPciInfo_v3`` fills it."""

    _fields_ = [
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    ]


@dataclass(frozen=True)
class _Call:
    symbol: str
    argtypes: tuple[type, ...]


_VOIDP = ctypes.c_void_p
_UINTP = ctypes.POINTER(ctypes.c_uint)
_INTP = ctypes.POINTER(ctypes.c_int)

_CALLS = {
    "init": _Call("nvmlInit_v2", ()),
    "shutdown": _Call("nvmlShutdown", ()),
    "count": _Call("nvmlDeviceGetCount_v2", (_UINTP,)),
    "driver": _Call("nvmlSystemGetDriverVersion", (ctypes.c_char_p, ctypes.c_uint)),
    "cuda": _Call("nvmlSystemGetCudaDriverVersion_v2", (_INTP,)),
    "handle": _Call("nvmlDeviceGetHandleByIndex_v2", (ctypes.c_uint, ctypes.POINTER(_VOIDP))),
    "uuid": _Call("nvmlDeviceGetUUID", (_VOIDP, ctypes.c_char_p, ctypes.c_uint)),
    "name": _Call("nvmlDeviceGetName", (_VOIDP, ctypes.c_char_p, ctypes.c_uint)),
    "capability": _Call("nvmlDeviceGetCudaComputeCapability", (_VOIDP, _INTP, _INTP)),
    "memory": _Call("nvmlDeviceGetMemoryInfo", (_VOIDP, ctypes.POINTER(Memory))),
    "pci": _Call("nvmlDeviceGetPciInfo_v3", (_VOIDP, ctypes.POINTER(PciInfo))),
    "mig_mode": _Call("nvmlDeviceGetMigMode", (_VOIDP, _UINTP, _UINTP)),
    "mig_count": _Call("nvmlDeviceGetMaxMigDeviceCount", (_VOIDP, _UINTP)),
    "mig_handle": _Call("nvmlDeviceGetMigDeviceHandleByIndex",
                        (_VOIDP, ctypes.c_uint, ctypes.POINTER(_VOIDP))),
    "gpu_instance": _Call("nvmlDeviceGetGpuInstanceId", (_VOIDP, _UINTP)),
    "compute_instance": _Call("nvmlDeviceGetComputeInstanceId", (_VOIDP, _UINTP)),
}


class LibNVML:
    """pynvml's calls the probe uses, on a ``ctypes.CDLL`` of NVML. Handles are ``c_void_p``."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._fns: dict[str, Any] = {}
        for key, call in _CALLS.items():
            try:
                fn = getattr(lib, call.symbol)
            except AttributeError as exc:
                raise LibraryMissing(f"{lib._name} has no {call.symbol} (an old driver?)") from exc
            fn.argtypes = list(call.argtypes)
            fn.restype = ctypes.c_int
            self._fns[key] = fn
        error_string = getattr(lib, "nvmlErrorString", None)
        if error_string is not None:
            error_string.argtypes = [ctypes.c_int]
            error_string.restype = ctypes.c_char_p
        self._error_string = error_string

    def _check(self, key: str, code: int) -> None:
        if code == 0:
            return
        text = None
        if self._error_string is not None:
            raw = self._error_string(code)
            text = raw.decode(errors="replace") if raw else None
        raise NVMLError(code, text or _ERROR_NAMES.get(code, "Unknown Error"), _CALLS[key].symbol)

    def _call(self, key: str, *args: object) -> None:
        self._check(key, self._fns[key](*args))

    def _text(self, key: str, size: int, *head: object) -> str:
        buffer = ctypes.create_string_buffer(size)
        self._call(key, *head, buffer, size)
        return buffer.value.decode(errors="replace")

    def _uint(self, key: str, *head: object) -> int:
        value = ctypes.c_uint()
        self._call(key, *head, ctypes.byref(value))
        return value.value

    def nvmlInit(self) -> None:
        self._call("init")

    def nvmlShutdown(self) -> None:
        self._call("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return self._uint("count")

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._text("driver", DRIVER_VERSION_BUFFER)

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        value = ctypes.c_int()
        self._call("cuda", ctypes.byref(value))
        return value.value

    def nvmlDeviceGetHandleByIndex(self, index: int) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._call("handle", index, ctypes.byref(handle))
        return handle

    def nvmlDeviceGetUUID(self, handle: ctypes.c_void_p) -> str:
        return self._text("uuid", UUID_BUFFER, handle)

    def nvmlDeviceGetName(self, handle: ctypes.c_void_p) -> str:
        return self._text("name", NAME_BUFFER, handle)

    def nvmlDeviceGetCudaComputeCapability(self, handle: ctypes.c_void_p) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("capability", handle, ctypes.byref(major), ctypes.byref(minor))
        return major.value, minor.value

    def nvmlDeviceGetMemoryInfo(self, handle: ctypes.c_void_p) -> Memory:
        memory = Memory()
        self._call("memory", handle, ctypes.byref(memory))
        return memory

    def nvmlDeviceGetPciInfo(self, handle: ctypes.c_void_p) -> PciInfo:
        info = PciInfo()
        self._call("pci", handle, ctypes.byref(info))
        return info

    def nvmlDeviceGetMigMode(self, handle: ctypes.c_void_p) -> tuple[int, int]:
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        self._call("mig_mode", handle, ctypes.byref(current), ctypes.byref(pending))
        return current.value, pending.value

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: ctypes.c_void_p) -> int:
        return self._uint("mig_count", handle)

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: ctypes.c_void_p, index: int) -> ctypes.c_void_p:
        mig = ctypes.c_void_p()
        self._call("mig_handle", handle, index, ctypes.byref(mig))
        return mig

    def nvmlDeviceGetGpuInstanceId(self, handle: ctypes.c_void_p) -> int:
        return self._uint("gpu_instance", handle)

    def nvmlDeviceGetComputeInstanceId(self, handle: ctypes.c_void_p) -> int:
        return self._uint("compute_instance", handle)


def load(path: str | None = None) -> LibNVML:
    """NVML's library through ctypes; ``LibraryMissing`` where it is not there or not usable.

    :param path: a library file to load instead of ``libnvidia-ml.so.1`` from the loader's path.
    """
    if path is None and not sys.platform.startswith("linux"):
        raise LibraryMissing(f"no {LIBRARY} on {sys.platform}")
    name = path or LIBRARY
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        text = str(exc)  # the loader's own words usually start with the file's name
        raise LibraryNotFound(text if text.startswith(name) else f"cannot load {name}: {text}") from exc
    return LibNVML(lib)
