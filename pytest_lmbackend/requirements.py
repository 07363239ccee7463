"""``lm_requires(...)`` read into a ``Requirement`` and judged against a ``Hardware``: a Verdict or None."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_lmbackend.hardware import (
    DTYPE_ALIASES,
    DTYPE_MIN_CAPABILITY,
    TURBOMIND_KEY,
    UNSTATED,
    Hardware,
    format_capability,
    format_memory,
    normalize,
    parse_memory,
    turbomind_builds,
    turbomind_kernels_missing,
)
from pytest_lmbackend.hardware.capability import npu_dtype_missing
from pytest_lmbackend.hardware.model import NPU, Accelerator, packages_origin
from pytest_lmbackend.verdict import Verdict

# kinds of unmet requirement; "backend" is decided by the plugin (a backend not available here)
KINDS: tuple[str, ...] = ("gpu", "nodes", "capability", "vram", "free_vram", "dtype", "packages",
                          "turbomind_kernels", "backend")
KEYS: tuple[str, ...] = ("gpus", "nodes", "capability", "vram", "free_vram", "dtype", "packages",
                         "turbomind_kernels")
_CAP = re.compile(r"^\s*(>=|<=|==|!=|>|<)?\s*([0-9]{1,4})\.([0-9]{1,4}|x|\*)\s*$")  # ASCII digits


class RequirementError(ValueError):
    """A malformed ``lm_requires`` marker; the message names the test, the key and the value."""

    def __init__(self, message: str, *, where: str, key: str | None = None) -> None:
        super().__init__(message)
        self.where = where
        self.key = key


@dataclass(frozen=True)
class CapabilitySpec:
    """One compute-capability condition: ``op`` is a comparison, or ``"major"`` for ``"9.x"``."""

    op: str
    version: tuple[int, int]

    def matches(self, capability: tuple[int, int]) -> bool:
        if self.op == "major":
            return capability[0] == self.version[0]
        return {
            ">=": capability >= self.version, ">": capability > self.version,
            "<=": capability <= self.version, "<": capability < self.version,
            "==": capability == self.version, "!=": capability != self.version,
        }[self.op]

    def __str__(self) -> str:
        if self.op == "major":
            return f"{self.version[0]}.x"
        return f"{self.op} {format_capability(self.version)}"


@dataclass(frozen=True)
class PackageSpec:
    """An installed distribution, optionally with a version range: ``flash_attn``, ``lmdeploy>=0.10``."""

    name: str
    specifier: str = ""

    def __str__(self) -> str:
        return f"{self.name}{self.specifier}"


@dataclass(frozen=True)
class Layout:
    """A parallel layout: its name (``"tp16"``) and how many GPUs it occupies in all, on one node or
    spread evenly over several (LMDeploy gives each of ``--nnodes`` nodes ``world_size / nnodes``)."""

    name: str
    world_size: int

    def nodes_for(self, per_node: int) -> int | None:
        """The fewest nodes of ``per_node`` GPUs that hold it, evenly; None without GPUs."""
        if per_node < 1:
            return None
        return next(n for n in range(1, self.world_size + 1)
                    if self.world_size % n == 0 and self.world_size // n <= per_node)


@dataclass(frozen=True)
class Requirement:
    """What a test needs; empty fields need nothing. ``gpus`` None: one GPU if any GPU fact is asked.

    :param gpus: GPUs on each node the test runs on.
    :param nodes: nodes the job must span at least (``lm_requires(nodes=N)``).
    :param layouts: parallel layouts the test runs (``distributed_layout``), each over as many
        nodes as it takes.
    """

    gpus: int | None = None
    nodes: int | None = None
    layouts: tuple[Layout, ...] = ()
    capability: tuple[CapabilitySpec, ...] = ()
    vram: int | None = None
    free_vram: int | None = None
    dtypes: tuple[str, ...] = ()
    packages: tuple[PackageSpec, ...] = ()
    turbomind_kernels: bool | None = None
    where: str = ""

    @property
    def gpu_count(self) -> int:
        """How many GPUs the test needs, at least one when it asks anything of a GPU."""
        if self.gpus is not None:
            return self.gpus
        asks = (self.capability or self.vram is not None or self.free_vram is not None or self.dtypes
                or self.turbomind_kernels is not None or self.layouts)
        return 1 if asks else 0


def _error(where: str, key: str | None, value: object, problem: str) -> RequirementError:
    shown = f"lm_requires({key}={value!r})" if key is not None else "lm_requires"
    return RequirementError(f"{where}: {shown}: {problem}", where=where, key=key)


def parse_capability_spec(text: str) -> tuple[CapabilitySpec, ...]:
    """``">=8.0"``, ``"==9.0"``, ``"9.x"``, ``"8.0"`` (exactly 8.0), or several joined by commas."""
    specs = []
    for part in text.split(","):
        match = _CAP.match(part)
        if match is None:
            raise ValueError(f"cannot read {part.strip()!r}: use '>=8.0', '==9.0', '9.x' or '8.0'")
        op, major, minor = match.group(1), int(match.group(2)), match.group(3)
        if minor in ("x", "*"):
            if op not in (None, "=="):
                raise ValueError(f"{part.strip()!r}: 'N.x' means major N; it takes no comparison")
            specs.append(CapabilitySpec("major", (major, 0)))
        else:
            specs.append(CapabilitySpec(op or "==", (major, int(minor))))
    return tuple(specs)


def _strings(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def parse_package_spec(text: str) -> PackageSpec:
    """A PEP 508 name with an optional version range; no extras, no markers."""
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as Pep508

    try:
        parsed = Pep508(text)
    except InvalidRequirement as exc:
        raise ValueError(f"cannot read package {text!r}: {exc}") from exc
    if parsed.marker is not None or parsed.extras or parsed.url:
        raise ValueError(f"package {text!r}: only a name and a version range are understood")
    name = normalize(parsed.name)
    return PackageSpec(TURBOMIND_KEY if name == "lmdeploy-turbomind" else name, str(parsed.specifier))


def parse_requirement(args: Sequence[Any], kwargs: Mapping[str, Any], *, where: str) -> Requirement:
    """Read ``lm_requires(*args, **kwargs)`` of the test ``where``.

    :raises RequirementError: a positional argument, an unknown key or a malformed value.
    """
    if args:
        problem = f"takes keywords only (gpus=, capability=, ...), got positional {args!r}"
        raise _error(where, None, None, problem)
    fields: dict[str, Any] = {"where": where}
    for key, value in kwargs.items():
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _error(where, key, value, f"unknown key (known: {', '.join(KEYS)}){hint}")
        try:
            fields.update(_parse_field(key, value))
        except ValueError as exc:
            raise _error(where, key, value, str(exc)) from exc
    return Requirement(**fields)


def _parse_field(key: str, value: Any) -> dict[str, Any]:
    if key == "gpus":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("must be a whole number of GPUs (0 or more)")
        return {"gpus": value}
    if key == "nodes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("must be a whole number of nodes (1 or more)")
        return {"nodes": value}
    if key == "capability":
        texts = _strings(value)
        if not texts:
            raise ValueError("must be a string such as '>=8.0', '==9.0', '9.x' or '8.0' (or a list of them)")
        return {"capability": tuple(s for t in texts for s in parse_capability_spec(t))}
    if key in ("vram", "free_vram"):
        return {key: parse_memory(value)}
    if key == "dtype":
        texts = _strings(value)
        if not texts:
            raise ValueError("must be a dtype name such as 'bf16' or 'fp8' (or a list of them)")
        unknown = [t for t in texts if t.lower() not in DTYPE_ALIASES]
        if unknown:
            raise ValueError(f"unknown dtype {unknown[0]!r} (known: {', '.join(sorted(DTYPE_ALIASES))})")
        return {"dtypes": tuple(dict.fromkeys(DTYPE_ALIASES[t.lower()] for t in texts))}
    if key == "packages":
        texts = _strings(value)
        if texts is None:
            raise ValueError("must be a package name or a list of them, "
                             "e.g. ['flash_attn', 'lmdeploy>=0.10']")
        return {"packages": tuple(parse_package_spec(t) for t in texts)}
    if not isinstance(value, bool):
        raise ValueError("must be True (needs TurboMind kernels) or False (needs a GPU without them)")
    return {"turbomind_kernels": value}


# LMDeploy's autotest (v0.16.0) marks multi-GPU jobs run through its proxy or a Ray cluster
# (NODE_COUNT nodes) with these; each runs on one node when the node holds all of its GPUs.
DISTRIBUTED_PREFIX = "gpu_num_distributed_"
DISTRIBUTED_LAYOUTS: tuple[str, ...] = ("tp16", "dpep8", "dpep16", "dpep32", "dp4ep8", "tp2dp4ep8", "cp2tp8")
_LAYOUT_PART = re.compile(r"(dpep|tp|dp|ep|cp)([0-9]+)")


def layout_degrees(name: str) -> dict[str, int]:
    """The parallel degrees a layout names: ``"tp2dp4ep8"`` -> ``{"tp": 2, "dp": 4, "ep": 8}``;
    ``tp`` tensor, ``dp`` data, ``ep`` expert, ``cp`` context, ``dpepN`` = ``dpN`` with ``epN``.

    :raises ValueError: ``name`` is not such a layout (a part repeated, zero, or unknown).
    """
    degrees: dict[str, int] = {}
    end = 0
    for part in _LAYOUT_PART.finditer(name):
        if part.start() != end:
            break
        end = part.end()
        for kind in ("dp", "ep") if part.group(1) == "dpep" else (part.group(1),):
            if kind in degrees or int(part.group(2)) < 1:
                raise ValueError(f"layout {name!r}: {kind} given twice or as 0")
            degrees[kind] = int(part.group(2))
    if not name or end != len(name):
        raise ValueError(f"layout {name!r}: not a parallel layout such as tp16, dpep8 or tp2dp4ep8 "
                         "(tpN, dpN, epN, cpN, dpepN)")
    return degrees


def distributed_layout(name: str) -> Requirement:
    """What LMDeploy's ``gpu_num_distributed_<layout>`` marker needs: the layout's GPUs in all, on
    one node or spread evenly over several. ``name`` is the layout (``"tp16"``) or the marker's name.

    A layout occupies ``max(ep, dp * tp)`` GPUs (``layout_degrees``), what LMDeploy's engines allot
    to every layout its autotest runs: the PyTorch engine's ``DistConfig.world_size`` is ``ep`` when
    ``ep > 1``, else ``tp`` (which ``dp`` must divide); TurboMind's
    ``derive_parallel_config(...).device_num`` is at most ``dp * tp * gcd(cp, ep)`` and splits ``tp``
    between attention and ``cp`` (``cp2tp8``: 8 GPUs, attention tp 4). So tp16, dpep16: 16 GPUs;
    dpep32: 32; dpep8, dp4ep8, tp2dp4ep8, cp2tp8: 8 (TurboMind runs ``ep > 1`` on one node only).
    ``tests/test_requirements.py`` checks these against LMDeploy's own functions.

    :raises ValueError: ``name`` is not such a layout.
    """
    layout = name.removeprefix(DISTRIBUTED_PREFIX)
    degrees = layout_degrees(layout)
    world = max(degrees.get("ep", 1), degrees.get("dp", 1) * degrees.get("tp", 1))
    return Requirement(layouts=(Layout(layout, world),))


def combine(requirements: Iterable[Requirement], *, where: str = "") -> Requirement:
    """Several markers on one test (module, class, function) as one: every condition must hold."""
    reqs = list(requirements)
    where = where or next((r.where for r in reqs if r.where), "")
    tm = {r.turbomind_kernels for r in reqs if r.turbomind_kernels is not None}
    if len(tm) > 1:
        raise RequirementError(f"{where}: lm_requires: turbomind_kernels=True and turbomind_kernels=False "
                               "both asked of one test (by different markers)", where=where,
                               key="turbomind_kernels")
    counts = [r.gpus for r in reqs if r.gpus is not None]
    nodes = [r.nodes for r in reqs if r.nodes is not None]
    vrams = [r.vram for r in reqs if r.vram is not None]
    frees = [r.free_vram for r in reqs if r.free_vram is not None]
    return Requirement(
        gpus=max(counts) if counts else None,
        nodes=max(nodes) if nodes else None,
        layouts=tuple(dict.fromkeys(lay for r in reqs for lay in r.layouts)),
        capability=tuple(dict.fromkeys(s for r in reqs for s in r.capability)),
        vram=max(vrams) if vrams else None,
        free_vram=max(frees) if frees else None,
        dtypes=tuple(dict.fromkeys(d for r in reqs for d in r.dtypes)),
        packages=tuple(dict.fromkeys(p for r in reqs for p in r.packages)),
        turbomind_kernels=tm.pop() if tm else None,
        where=where,
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _found_gpus(hw: Hardware, devices: Sequence[Accelerator], assigned: bool) -> str:
    if devices:
        labels = ", ".join(g.label() for g in devices[:4]) + (", ..." if len(devices) > 4 else "")
        return f"{'this test was given' if assigned else 'found'} {len(devices)}: {labels}"
    if assigned:
        return "this test was given none"
    if hw.source == "profile":
        return f"profile {hw.profile!r} has none"
    if hw.source == "none":
        return "found none (no NVIDIA driver nor Ascend npu-smi answered)"
    masks = ("CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES")
    hidden = next((w for w in hw.warnings if w.startswith(masks)), None)
    return f"found none visible ({hidden})" if hidden else f"found none ({hw.source})"


def _package_skip(spec: PackageSpec, hw: Hardware) -> Verdict | None:
    version = hw.packages.get(spec.name)
    origin = packages_origin(hw.profile, hw.packages_stated) if hw.source == "profile" else None
    where = f" in {origin}" if origin else ""
    if version is None:
        return Verdict("packages", f"needs package {spec}; not installed{where}")
    if not spec.specifier:
        return None
    if version == UNSTATED:
        return Verdict("packages", f"needs package {spec}; {origin or 'the profile'} states {spec.name} "
                                   "without a version")
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        ok = SpecifierSet(spec.specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return Verdict("packages",
                       f"needs package {spec}; found {spec.name} {version}, not a PEP 440 version")
    return None if ok else Verdict("packages", f"needs package {spec}; found {spec.name} {version}{where}")


def _sizes(wanted: int, found: int) -> tuple[str, str]:
    """Both sizes as text that shows they differ: exact bytes beside the rounded form when the
    rounded forms alone would read the same ("needs 79.65 GiB; has 79.65 GiB")."""
    a, b = format_memory(wanted), format_memory(found)
    if a != b:
        return a, b
    return f"{a} ({wanted:,} bytes)", f"{b} ({found:,} bytes)"


def _memory_skip(req: Requirement, dev: Accelerator, unit: str) -> Verdict | None:
    label = dev.label()
    if req.vram is not None and dev.memory_total < req.vram:
        wanted, found = _sizes(req.vram, dev.memory_total)
        return Verdict("vram", f"needs {wanted} of {unit} memory; {label} has {found}")
    if req.free_vram is not None and (dev.memory_free is None or dev.memory_free < req.free_vram):
        if dev.memory_free is None:
            wanted, free = format_memory(req.free_vram), format_memory(None)
        else:
            wanted, free = _sizes(req.free_vram, dev.memory_free)
        return Verdict("free_vram", f"needs {wanted} of free {unit} memory; "
                                    f"{label} has {free} free of {format_memory(dev.memory_total)}")
    return None


def _npu_skip(req: Requirement, npu: NPU) -> Verdict | None:
    """An Ascend NPU: memory and dtypes as asked; CUDA's capability and TurboMind do not apply to it."""
    label = npu.label()
    if req.capability:
        return Verdict("capability", f"needs compute capability {req.capability[0]}; {label} is not an "
                                     "NVIDIA GPU")
    memory = _memory_skip(req, npu, "NPU")
    if memory is not None:
        return memory
    for dtype in req.dtypes:
        missing = npu_dtype_missing(npu.name, dtype)
        if missing is not None:
            return Verdict("dtype", f"needs native {dtype}; {label}: {missing}")
    if req.turbomind_kernels:
        return Verdict("turbomind_kernels", f"needs TurboMind kernels; {label}: TurboMind runs on NVIDIA "
                                            "GPUs only")
    return None


def _device_skip(req: Requirement, hw: Hardware, gpu: Accelerator) -> Verdict | None:
    if isinstance(gpu, NPU):
        return _npu_skip(req, gpu)
    label = gpu.label()
    has = format_capability(gpu.capability)
    for spec in req.capability:
        if not spec.matches(gpu.capability):
            return Verdict("capability", f"needs compute capability {spec}; {label} has {has}")
    memory = _memory_skip(req, gpu, "GPU")
    if memory is not None:
        return memory
    for dtype in req.dtypes:
        needed = DTYPE_MIN_CAPABILITY[dtype]
        if gpu.capability < needed:
            return Verdict("dtype", f"needs native {dtype} (compute capability >= "
                                    f"{format_capability(needed)}); {label} has {has}")
    if req.turbomind_kernels is not None:
        lmdeploy = hw.packages.get("lmdeploy")
        missing = turbomind_kernels_missing(gpu.capability, hw.cuda, lmdeploy=lmdeploy)
        if req.turbomind_kernels and missing is not None:
            return Verdict("turbomind_kernels", f"needs TurboMind kernels; {label}: {missing}")
        if not req.turbomind_kernels and missing is None:
            builds = ", ".join(b.label() for b in turbomind_builds(lmdeploy) if b.runs_on(gpu.capability))
            return Verdict("turbomind_kernels", f"needs a GPU without TurboMind kernels; {label} has {has} "
                                                f"and CUDA {hw.cuda}, which TurboMind builds ({builds})")
    return None


def _plural_nodes(n: int) -> str:
    return _plural(n, "node")


def _runner_nodes(hw: Hardware, per_node: int, assigned: bool) -> str:
    """``profile 'h100x8' has 1 node of 8 GPUs``: the job's size, for node and layout reasons."""
    of = f" of {_plural(per_node, hw.accelerator_kind)}" + (" given to this test" if assigned else "")
    if hw.source == "profile":
        return f"profile {hw.profile!r} has {_plural_nodes(hw.nodes)}{of}"
    told = "" if hw.nodes > 1 else " (a multi-node job says how many in $PYTEST_LM_NODES)"
    return f"this job has {_plural_nodes(hw.nodes)}{of}{told}"


def _cluster_skip(req: Requirement, hw: Hardware, per_node: int, assigned: bool) -> Verdict | None:
    """Nodes and layouts: the job must span ``req.nodes`` and hold each layout evenly over its nodes."""
    if req.nodes is not None and hw.nodes < req.nodes:
        return Verdict("nodes", f"needs {_plural_nodes(req.nodes)}; {_runner_nodes(hw, per_node, assigned)}")
    for layout in req.layouts:
        wanted = layout.nodes_for(per_node)
        if wanted is None or wanted > hw.nodes:
            unit = hw.accelerator_kind
            spread = "" if wanted is None else (
                f", i.e. {_plural_nodes(wanted)} of {_plural(layout.world_size // wanted, unit)}")
            return Verdict("nodes", f"needs layout {layout.name}: {_plural(layout.world_size, unit)} in all"
                                   f"{spread}; {_runner_nodes(hw, per_node, assigned)}")
    return None


def _asked_of_gpus(req: Requirement) -> frozenset[str]:
    asked = {"capability": bool(req.capability), "vram": req.vram is not None,
             "free_vram": req.free_vram is not None, "dtype": bool(req.dtypes),
             "turbomind_kernels": req.turbomind_kernels is not None}
    return frozenset(kind for kind, yes in asked.items() if yes)


def evaluate(req: Requirement, hw: Hardware, gpus: Sequence[int] | None = None) -> Verdict | None:
    """The first unmet part of ``req`` on ``hw``, or None when the test can run.

    GPUs here are the runner's accelerators: its NVIDIA GPUs, else its Ascend NPUs (as LMDeploy's
    ``gpu_num_N`` counts them).

    :param gpus: logical indices of the devices this test gets (an xdist worker's slice); None = all
        visible. A test needing N devices is judged on the first N of them.
    """
    if gpus is None:
        devices: list[Accelerator] = list(hw.accelerators)
    else:
        by_index = {g.index: g for g in hw.accelerators}
        devices = [by_index[i] for i in gpus if i in by_index]
    unit = hw.accelerator_kind
    needed = req.gpu_count
    if needed > len(devices):
        wanted = _plural(needed, unit)
        if req.gpus is None and req.layouts:
            wanted = f"layout {req.layouts[0].name} ({_plural(req.layouts[0].world_size, unit)} in all)"
        return Verdict("gpu", f"needs {wanted}; {_found_gpus(hw, devices, gpus is not None)}",
                       unchecked=_asked_of_gpus(req))
    cluster = _cluster_skip(req, hw, len(devices), gpus is not None)
    if cluster is not None:
        return cluster
    # a layout uses its share of every node: the device facts hold on each device of that share
    for layout in req.layouts:
        share = layout.world_size // (layout.nodes_for(len(devices)) or 1)
        needed = max(needed, share)
    for device in devices[:needed]:
        skip = _device_skip(req, hw, device)
        if skip is not None:
            return skip
    for spec in req.packages:
        skip = _package_skip(spec, hw)
        if skip is not None:
            return skip
    return None
