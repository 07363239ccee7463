"""Backends a test can run on, and whether each one is available on this runner."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_lmbackend.hardware import Hardware

# Packages whose presence decides availability. Read from metadata and ``find_spec`` only: importing
# any of them costs seconds and may initialise CUDA.
WATCHED_PACKAGES: tuple[str, ...] = ("lmdeploy", "torch", "transformers", "dlinfer-ascend", "torch-npu")


@dataclass(frozen=True)
class Device:
    """One visible accelerator as the backend checks see it."""

    index: int
    name: str
    capability: tuple[int, int]

    def describe(self) -> str:
        return f"GPU {self.index} ({self.name}, sm{self.capability[0]}{self.capability[1]})"


@dataclass(frozen=True)
class RunnerFacts:
    """What backend availability depends on: devices, CUDA, Ascend, packages, and a profile's word.

    ``stated_backends`` is set when a fake hardware profile lists the backends its runner has; then it
    is the whole answer, so a CPU box can plan for a GPU runner.
    """

    devices: tuple[Device, ...] = ()
    cuda: str | None = None
    ascend: bool = False
    packages: Mapping[str, str | None] = field(default_factory=dict)
    turbomind_extension: bool = False
    stated_backends: frozenset[str] | None = None
    profile: str | None = None
    packages_stated: bool = False
    npus: tuple[str, ...] = ()

    def where(self) -> str:
        if self.profile:
            return f"profile {self.profile!r}"
        return "this runner"

    def packages_where(self) -> str:
        """Where the package facts come from: a profile's ``[packages]``, else this interpreter."""
        from pytest_lmbackend.hardware.model import packages_origin

        return packages_origin(self.profile, self.packages_stated) or self.where()

    def found_devices(self) -> str:
        if not self.devices:
            if self.npus:
                return "found no GPU but " + ", ".join(self.npus)
            return "found no GPU" + (" (Ascend NPU present)" if self.ascend else "")
        return "found " + ", ".join(d.describe() for d in self.devices)


# A check returns None when the backend can run, else the reason it cannot (wanted, found, where).
AvailabilityCheck = Callable[[RunnerFacts], "str | None"]


class BackendCheckError(Exception):
    """A backend's availability check raised or answered something that is not a reason: a bug in
    the plugin that registered it, named with the backend and the check."""


@dataclass(frozen=True)
class Backend:
    """A named way to run a model. Lower ``rank`` is preferred when picking the best available one."""

    name: str
    description: str
    check: AvailabilityCheck
    rank: int = 100

    def unavailable_reason(self, facts: RunnerFacts) -> str | None:
        if facts.stated_backends is not None:
            if self.name in facts.stated_backends:
                return None
            listed = ", ".join(sorted(facts.stated_backends)) or "none"
            return f"backend {self.name} is not available: {facts.where()} states backends: {listed}"
        check = getattr(self.check, "__qualname__", repr(self.check))
        try:
            reason = self.check(facts)
        except Exception as exc:
            raise BackendCheckError(f"backend {self.name!r}: its availability check {check} raised "
                                    f"{type(exc).__name__}: {exc}") from exc
        if reason is not None and not isinstance(reason, str):
            raise BackendCheckError(f"backend {self.name!r}: its availability check {check} returned "
                                    f"{reason!r}; a check returns None (available) or the reason it is not")
        return reason


def _check_turbomind(facts: RunnerFacts) -> str | None:
    if facts.ascend and not facts.devices:  # whatever is installed: TurboMind has no Ascend build
        return ("backend turbomind is CUDA-only (LMDeploy runs its PyTorch engine on Ascend); "
                f"{facts.found_devices()}")
    version = facts.packages.get("lmdeploy")
    if version is None:
        return ("backend turbomind needs lmdeploy with its TurboMind extension; "
                f"lmdeploy is not installed on {facts.packages_where()}")
    if not facts.turbomind_extension:
        from pytest_lmbackend.hardware.packages import describe_package

        return (f"backend turbomind needs LMDeploy's TurboMind extension; "
                f"{describe_package('lmdeploy', version)} is installed without it")
    if not facts.devices:
        return ("backend turbomind needs a CUDA GPU in TurboMind's kernel build matrix; "
                f"{facts.found_devices()}")
    from pytest_lmbackend.hardware.capability import turbomind_kernels_missing

    missing = [turbomind_kernels_missing(d.capability, facts.cuda, lmdeploy=version) for d in facts.devices]
    if all(m is not None for m in missing):
        found = "; ".join(f"{d.describe()}: {m}" for d, m in zip(facts.devices, missing, strict=True))
        return f"backend turbomind needs a GPU with TurboMind kernels; {found}"
    return None


def _check_pytorch(facts: RunnerFacts) -> str | None:
    version = facts.packages.get("lmdeploy")
    if version is None:
        return f"backend pytorch needs lmdeploy installed; it is not installed on {facts.packages_where()}"
    if any(d.capability >= (7, 0) for d in facts.devices):
        return None
    if facts.ascend:
        return _pytorch_on_ascend(facts, version)
    return (
        "backend pytorch needs a CUDA GPU with compute capability >= 7.0 or an Ascend NPU; "
        f"{facts.found_devices()}"
    )


# LMDeploy's PyTorch engine runs on Ascend with device_type='ascend': from 0.6.0 its start imports
# dlinfer (``dlinfer.framework.lmdeploy_ext``, from the dlinfer-ascend distribution, which runs on
# torch-npu) and exits when that fails; requirements/runtime_ascend.txt lists both. 0.5.x reached
# Ascend through DeepLink's older extension, which is not modelled here.
ASCEND_PACKAGES: tuple[str, ...] = ("dlinfer-ascend", "torch-npu")
ASCEND_SINCE = (0, 6, 0)


def _pytorch_on_ascend(facts: RunnerFacts, version: str) -> str | None:
    from pytest_lmbackend.hardware.units import parse_version

    release = parse_version(version)
    if release is not None and release < ASCEND_SINCE:
        return (f"backend pytorch on Ascend needs LMDeploy >= 0.6.0 (its dlinfer device layer); "
                f"found lmdeploy {version}")
    missing = [name for name in ASCEND_PACKAGES if facts.packages.get(name) is None]
    if missing:
        return (f"backend pytorch on Ascend (device_type='ascend') needs {' and '.join(missing)} "
                f"installed; not found on {facts.packages_where()}")
    return None


def _check_transformers(facts: RunnerFacts) -> str | None:
    missing = [name for name in ("torch", "transformers") if facts.packages.get(name) is None]
    if missing:
        return (f"backend transformers needs {' and '.join(missing)} installed; not found on "
                f"{facts.packages_where()}")
    return None


BUILTIN_BACKENDS: tuple[Backend, ...] = (
    Backend("turbomind", "LMDeploy's TurboMind engine", _check_turbomind, rank=10),
    Backend("pytorch", "LMDeploy's PyTorch engine", _check_pytorch, rank=20),
    Backend("transformers", "Hugging Face transformers reference (CPU or GPU)", _check_transformers, rank=90),
)


@dataclass(frozen=True)
class Registry:
    """Every known backend, in preference order; built once per session."""

    backends: tuple[Backend, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def get(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    def availability(self, facts: RunnerFacts) -> dict[str, str | None]:
        """name -> None when available, else the reason it is not."""
        return {b.name: b.unavailable_reason(facts) for b in self.backends}

    def best_available(self, facts: RunnerFacts, among: Sequence[str] | None = None) -> str | None:
        pool = self.backends if among is None else tuple(b for b in self.backends if b.name in among)
        for backend in pool:
            if backend.unavailable_reason(facts) is None:
                return backend.name
        return None


def build_registry(extra: Iterable[Iterable[Backend]] = ()) -> Registry:
    """Built-in backends plus those registered by plugins; a duplicate name is a usage error."""
    seen: dict[str, Backend] = {b.name: b for b in BUILTIN_BACKENDS}
    for group in extra:
        for backend in group or ():
            if not isinstance(backend, Backend):
                raise ValueError(
                    f"pytest_lmbackend_register_backends returned {backend!r}; expected Backend values"
                )
            if backend.name in seen or backend.name in ("auto", "all", "none") or not _is_name(backend.name):
                raise ValueError(f"backend name {backend.name!r} is reserved, invalid or already registered")
            seen[backend.name] = backend
    ordered = sorted(seen.values(), key=lambda b: (b.rank, b.name))
    return Registry(tuple(ordered))


def _is_name(text: str) -> bool:
    return bool(text) and all(ch.isalnum() or ch in "_-." for ch in text)


def package_versions(names: Iterable[str] = WATCHED_PACKAGES) -> dict[str, str | None]:
    """Installed versions from package metadata; never imports the packages."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def facts_from_hardware(hardware: Hardware) -> RunnerFacts:
    """The facts the backend checks need, from one probe's (or profile's) ``Hardware``.

    Package facts are the value's own (a profile's ``[packages]``, or what the probe read from this
    interpreter's metadata, ``lmdeploy.turbomind`` included); a real probe that could list none
    falls back to this interpreter's metadata and TurboMind's extension file.
    """
    from pytest_lmbackend.hardware.packages import TURBOMIND_KEY, lmdeploy_locations, turbomind_extension

    packages: dict[str, str | None]
    if hardware.packages or hardware.source == "profile":
        packages = dict(hardware.packages)
        for name in WATCHED_PACKAGES:
            packages.setdefault(name, None)
        extension = TURBOMIND_KEY in hardware.packages
    else:
        packages = package_versions()
        found = turbomind_extension(lmdeploy_locations()) if packages.get("lmdeploy") is not None else None
        extension = found is not None
    return RunnerFacts(
        devices=tuple(Device(g.index, g.name, g.capability) for g in hardware.gpus),
        cuda=hardware.cuda,
        ascend=hardware.ascend,
        packages=packages,
        turbomind_extension=extension,
        stated_backends=None if hardware.backends is None else frozenset(hardware.backends),
        profile=hardware.profile,
        packages_stated=hardware.packages_stated,
        npus=tuple(n.label() for n in hardware.npus),
    )
