"""The hardware facts one probe produces: ``GPU``, ``Hardware`` and the typed profile error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

Source = Literal["profile", "nvml", "nvidia-smi", "npu-smi", "none"]
SOURCES: tuple[Source, ...] = ("profile", "nvml", "nvidia-smi", "npu-smi", "none")
MAX_NODES = 4096  # more nodes than any job spans: a larger number is a typo


@dataclass(frozen=True)
class GPU:
    """One device a CUDA program started now would see.

    :param index: logical index, as CUDA numbers the device under ``CUDA_VISIBLE_DEVICES``.
    :param physical_index: index in the driver's (NVML, PCI bus) order; for a MIG device, its parent's.
    :param capability: compute capability ``(major, minor)``; ``(0, 0)`` when the source could not say.
    :param memory_total: bytes; ``memory_free`` is ``None`` when unknown.
    """

    index: int
    physical_index: int
    uuid: str
    name: str
    capability: tuple[int, int]
    memory_total: int
    memory_free: int | None = None
    pci_bus_id: str | None = None

    @property
    def sm(self) -> int:
        """The capability as CUDA's ``sm_XY`` number (9.0 -> 90, 12.0 -> 120)."""
        return self.capability[0] * 10 + self.capability[1]

    def label(self) -> str:
        """``GPU 0 (NAME)``, with the physical index when it differs: the device a reason names."""
        where = "" if self.physical_index == self.index else f"physical {self.physical_index}, "
        return f"GPU {self.index} ({where}{self.name})"


@dataclass(frozen=True)
class NPU:
    """One Ascend NPU (a chip: an Atlas A3 card holds two) a program started now would see.

    :param index: logical index under ``ASCEND_RT_VISIBLE_DEVICES`` (``npu:0``).
    :param physical_index: the runtime's device ID before any mask (what ``ASCEND_RT_VISIBLE_DEVICES``
        names), in ``npu-smi info`` order.
    :param name: the chip as CANN names it (``"Ascend910B3"``, ``"Ascend310P3"``).
    :param memory_total: bytes of device memory (HBM; DDR on chips without HBM); ``memory_free``
        ``None`` when unknown.
    """

    index: int
    physical_index: int
    name: str
    memory_total: int
    memory_free: int | None = None
    pci_bus_id: str | None = None

    def label(self) -> str:
        """``NPU 0 (NAME)``, with the device ID when it differs: the device a reason names."""
        where = "" if self.physical_index == self.index else f"device {self.physical_index}, "
        return f"NPU {self.index} ({where}{self.name})"


Accelerator = GPU | NPU


def packages_origin(profile: str | None, stated: bool) -> str | None:
    """Where a profile's package facts come from, for messages; None when no profile is in play."""
    if not profile:
        return None
    if stated:
        return f"profile {profile!r}"
    return f"this interpreter (profile {profile!r} states no [packages])"


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Hardware:
    """What this session runs on: visible GPUs, driver, CUDA, packages; real or from a profile.

    :param cuda: the highest CUDA version the driver supports (``"13.0"``), or the profile's.
    :param source: where the GPU facts came from.
    :param profile: the profile's name when ``source == "profile"``.
    :param packages: installed distribution (normalised name) -> version; ``"lmdeploy.turbomind"``
        is present when LMDeploy's TurboMind extension file is installed.
    :param backends: backends a profile declares available; ``None`` means "work it out here".
    :param warnings: what went wrong or looked odd while probing, for the report header.
    :param packages_stated: the packages are a profile's own ``[packages]``, not this interpreter's.
    :param nodes: how many machines like this one the job spans (a profile's ``nodes``, else
        ``$PYTEST_LM_NODES``, else 1); a multi-node layout needs more than one.
    :param npus: visible Ascend NPUs, in the runtime's order under ``ASCEND_RT_VISIBLE_DEVICES``.
    :param npu_driver: the Ascend driver's version as ``npu-smi`` reports it.
    """

    gpus: tuple[GPU, ...] = ()
    driver: str | None = None
    cuda: str | None = None
    source: Source = "none"
    profile: str | None = None
    ascend: bool = False
    packages: Mapping[str, str] = field(default_factory=lambda: _frozen(None), repr=False)
    backends: tuple[str, ...] | None = None
    warnings: tuple[str, ...] = ()
    packages_stated: bool = False
    nodes: int = 1
    npus: tuple[NPU, ...] = ()
    npu_driver: str | None = None

    def __post_init__(self) -> None:
        # a read-only view, so a frozen Hardware cannot change under a session that shares it
        if not isinstance(self.packages, MappingProxyType):
            object.__setattr__(self, "packages", _frozen(self.packages))

    def _values(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __hash__(self) -> int:
        values = self._values()
        values["packages"] = tuple(sorted(self.packages.items()))
        return hash(tuple(values.values()))

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # a mappingproxy cannot be pickled; rebuild from a plain dict (xdist, multiprocessing, copy),
        # every field by name so that none is lost
        values = self._values()
        values["packages"] = dict(self.packages)
        return (_rebuild, (values,))

    @property
    def accelerators(self) -> tuple[Accelerator, ...]:
        """The devices a test's ``gpus=N`` / ``gpu_num_N`` counts: the NVIDIA GPUs, else the Ascend NPUs
        (LMDeploy's ``gpu_num_N`` means N devices of the runner, whichever kind it has)."""
        return self.gpus if self.gpus else self.npus

    @property
    def accelerator_kind(self) -> str:
        """``"NPU"`` on a runner whose devices are Ascend NPUs, else ``"GPU"``: the word reasons use."""
        return "NPU" if self.npus and not self.gpus else "GPU"

    @property
    def name(self) -> str:
        """A short name for columns and headers: the profile name, else the probe source."""
        return self.profile if self.profile is not None else self.source


def _rebuild(values: dict[str, Any]) -> Hardware:
    return Hardware(**values)


class ProfileError(ValueError):
    """A hardware profile that cannot be used; the message names the profile (file) and the field."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.field = field
