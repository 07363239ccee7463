"""Pure slicing of visible GPUs into disjoint per-worker sets, and the plan each worker gets."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pytest_lmbackend.display import printable

if TYPE_CHECKING:
    from pytest_lmbackend.hardware.model import GPU, Hardware

LOCAL = "local"

# ``--lm-gpus-per-worker``: one size for every worker, or one size per worker ("4,1,1"); () is no pinning.
Sizes = tuple[int, ...]
# auto: the width is the selected tests' largest need, known once the workers have collected
AUTO: Literal["auto"] = "auto"
PerWorker = Sizes | Literal["auto"]


class SliceError(ValueError):
    """Workers and GPUs that cannot be sliced without giving one GPU to two workers."""


@dataclass(frozen=True)
class WorkerPlan:
    """One xdist worker's share of the GPUs.

    :param worker: the xdist worker id (``gw0``).
    :param host: ``"local"`` for popen workers, else the remote host the ``--tx`` spec names.
    :param rank: the worker's position among the workers on its host.
    :param size: how many GPUs the worker holds.
    :param gpus: device ids for ``CUDA_VISIBLE_DEVICES``; ``None`` when the remote worker picks them
        from the GPUs its own host shows (``rank`` and ``size`` decide which), or there is no GPU.
    :param labels: how the header names those GPUs.
    """

    worker: str
    host: str
    rank: int
    size: int
    gpus: tuple[str, ...] | None
    labels: tuple[str, ...] = ()

    @property
    def mask(self) -> str | None:
        return None if self.gpus is None else ",".join(self.gpus)

    def describe(self) -> str:
        if self.gpus is None:
            first = self.rank * self.size
            return f"{self.worker} -> GPUs {first}..{first + self.size - 1} of {self.host}"
        return f"{self.worker} -> {', '.join(self.labels or self.gpus) or 'no GPU'}"


def parse_gpus_per_worker(text: str) -> PerWorker:
    """argparse ``type=`` for ``--lm-gpus-per-worker``: ``N`` (every worker), or ``N0,N1,...`` (one
    size per worker, e.g. ``4,1,1`` for one wide worker), each a whole number >= 1; ``auto`` (the
    selected tests' largest need); ``0`` (or ``off``) is no pinning, ``()``."""
    if str(text).strip().lower() in ("0", "off"):
        return ()
    if str(text).strip().lower() == AUTO:
        return AUTO
    sizes: list[int] = []
    for part in str(text).split(","):
        value = part.strip()
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"expected a whole number of GPUs >= 1 or a comma list of them (0: no pinning), got {text!r}")
        sizes.append(int(value))
    return tuple(sizes)


def format_sizes(sizes: Sizes) -> str:
    return ",".join(str(s) for s in sizes)


def worker_sizes(sizes: Sizes, workers: int) -> Sizes:
    """Each worker's slice size: one size repeats; a list names every worker's, so must match."""
    if len(sizes) == 1:
        return sizes * workers
    if len(sizes) != workers:
        raise SliceError(f"--lm-gpus-per-worker={format_sizes(sizes)} gives sizes for {len(sizes)} workers, "
                         f"but {workers} are started: use -n {len(sizes)} (or -n auto)")
    return sizes


def device_id(gpu: GPU) -> str:
    """How a worker's mask names a GPU: its UUID (which also names a MIG device, and does not depend on
    CUDA's device order), else its driver index."""
    return gpu.uuid if gpu.uuid else str(gpu.physical_index)


def device_label(gpu: GPU) -> str:
    label = f"GPU {gpu.physical_index}" if gpu.uuid.lower().startswith("gpu-") or not gpu.uuid else gpu.uuid
    return printable(f"{label} ({gpu.name})")  # a profile's GPU name goes into headers and skip reasons


def auto_num_workers(gpu_count: int, sizes: PerWorker | int) -> int | None:
    """Workers for ``-n auto``: one per slice (or one per listed size; one per GPU with ``auto``, whose
    width is known only after collection); None (let xdist count CPUs) when there is no GPU."""
    listed: Sizes = (1,) if sizes == AUTO else (sizes,) if isinstance(sizes, int) else sizes
    if gpu_count <= 0 or not listed:
        return None
    if len(listed) > 1:
        return len(listed)
    return max(1, gpu_count // listed[0])


def held_sizes(sizes: Sizes, workers: int, devices: int) -> Sizes:
    """What each worker holds. One size N: the first ``devices // N`` workers hold N each and the others
    none (more workers than slices is fine: they run the tests that need no GPU); a list: each worker
    its own.

    :raises SliceError: N is more GPUs than there are (not even one worker could hold it).
    """
    if len(sizes) != 1:
        return worker_sizes(sizes, workers)
    size = sizes[0]
    if 0 < devices < size:
        raise SliceError(f"--lm-gpus-per-worker={size} is more GPUs than are visible ({devices}), so not "
                         "even one worker can be given its slice: lower --lm-gpus-per-worker, or run "
                         "without -n")
    fits = min(workers, devices // size)
    return (size,) * fits + (0,) * (workers - fits)


def slice_devices(devices: Sequence[str], workers: int, sizes: Sizes | int) -> tuple[tuple[str, ...], ...]:
    """Disjoint, consecutive slices, one per worker, in the visible order (an empty one for a worker
    beyond the slices there are, ``held_sizes``).

    Raises SliceError when a list of sizes needs more devices than there are, or a device repeats.
    """
    sizes = (sizes,) if isinstance(sizes, int) else sizes
    if any(s < 1 for s in sizes):
        raise SliceError(f"GPUs per worker must be >= 1, got {format_sizes(sizes)}")
    if len(set(devices)) != len(devices):
        raise SliceError(f"the visible GPUs repeat a device: {', '.join(devices)}")
    each = held_sizes(sizes, workers, len(devices))
    need = sum(each)
    if need > len(devices):
        shown = f"{', '.join(devices) or 'none'}"
        raise SliceError(
            f"--lm-gpus-per-worker={format_sizes(sizes)} needs {need} GPU(s), but {len(devices)} are visible "
            f"({shown}); two workers never share a GPU"
        )
    slices, start = [], 0
    for size in each:
        slices.append(tuple(devices[start:start + size]))
        start += size
    return tuple(slices)


def expand_tx(tx: Iterable[str]) -> list[str]:
    """``--tx`` values with ``N*spec`` repeated, as xdist expands them."""
    specs: list[str] = []
    for spec in tx:
        count, star, rest = spec.partition("*")
        if star and count.strip().isdigit():
            specs.extend([rest] * int(count))
        else:
            specs.append(spec)
    return specs


def spec_fields(spec: str) -> dict[str, str]:
    """The ``key=value`` parts of an execnet spec (``popen//env:X=1//id=a``)."""
    fields: dict[str, str] = {}
    for part in spec.split("//"):
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


def spec_host(fields: Mapping[str, str]) -> str:
    """``"local"`` for a popen spec, else the remote the spec reaches (ssh, socket or vagrant)."""
    for key in ("ssh", "socket", "vagrant_ssh"):
        if key in fields:
            return f"{key}={fields[key]}"
    if "via" in fields:
        return f"via={fields['via']}"
    return LOCAL


def worker_ids(specs: Sequence[Mapping[str, str]]) -> list[str]:
    """Worker ids as execnet gives them: a spec's own ``id=``, else ``gw<N>`` counting the others."""
    ids: list[str] = []
    counter = 0
    for fields in specs:
        if fields.get("id"):
            ids.append(fields["id"])
        else:
            ids.append(f"gw{counter}")
            counter += 1
    return ids


def plan_workers(
    workers: Sequence[tuple[str, str]],
    gpus: Sequence[GPU],
    sizes: Sizes | int,
) -> tuple[WorkerPlan, ...]:
    """Each worker's share: local workers get disjoint slices of the GPUs visible here, in order; remote
    workers get a rank per host and take their slice from the GPUs visible there.

    :param workers: ``(worker id, host)`` in spec order.
    :param gpus: the GPUs visible to the controller (its ``CUDA_VISIBLE_DEVICES`` already applied).
    """
    sizes = (sizes,) if isinstance(sizes, int) else sizes
    local = [w for w, host in workers if host == LOCAL]
    if len(sizes) > 1 and len(local) != len(workers):
        raise SliceError(f"--lm-gpus-per-worker={format_sizes(sizes)}: a list of sizes is for local workers "
                         "only; give remote workers one size")
    if not gpus and len(local) == len(workers):
        # no GPU here and no remote worker: nothing is pinned, so a list of sizes has nothing to match
        sizes = (sizes[0],) if len(sizes) > 1 else sizes
    each = held_sizes(sizes, len(local), len(gpus)) if local and gpus else (
        worker_sizes(sizes, len(local)) if local else ())
    slices = slice_devices([device_id(g) for g in gpus], len(local), sizes) if gpus and local else ()
    labels = {device_id(g): device_label(g) for g in gpus}
    plans: list[WorkerPlan] = []
    ranks: dict[str, int] = {}
    for worker, host in workers:
        rank = ranks.get(host, 0)
        ranks[host] = rank + 1
        if host != LOCAL:
            plans.append(WorkerPlan(worker, host, rank, sizes[0], None))
        elif not gpus:
            # nothing to slice: leave the worker's environment alone
            plans.append(WorkerPlan(worker, host, rank, each[rank], None))
        else:
            share = slices[rank]
            plans.append(WorkerPlan(worker, host, rank, each[rank], share, tuple(labels[d] for d in share)))
    return tuple(plans)


def remote_slice(visible: Sequence[GPU], rank: int, size: int, worker: str) -> tuple[str, ...] | None:
    """A remote worker's slice of the GPUs its own host shows (empty beyond the slices there are); None
    when that host shows no GPU."""
    devices = [device_id(g) for g in visible]
    if not devices:
        return None
    try:
        return slice_devices(devices, rank + 1, size)[rank]
    except SliceError as exc:
        raise SliceError(f"xdist worker {worker} (worker {rank + 1} on its host): {exc}") from None


def item_devices(hardware: Hardware, count: int) -> tuple[GPU, ...]:
    """The GPUs an item asking for ``count`` uses: CUDA hands out devices from index 0 on; every visible
    GPU when it named no count."""
    return hardware.gpus if count <= 0 else hardware.gpus[:count]


def auto_slice(devices: Sequence[str], rank: int, need: int) -> tuple[str, ...]:
    """``--lm-gpus-per-worker=auto``: the slice of the worker of ``rank`` when the widest selected test
    needs ``need`` GPUs: as many of that width as fit (one at least, at most every device), in order;
    empty for a worker beyond them."""
    width = max(1, min(need, len(devices)))
    if not devices or rank >= len(devices) // width:
        return ()
    return tuple(devices[rank * width:(rank + 1) * width])


def too_wide(need: int, mask: str, worker: str | None, sizes: str, *, dist: str = "load",
             outer_worker: str | None = None) -> str | None:
    """Why an item needing ``need`` GPUs cannot run in a process pinned to ``mask``; None when it can.

    :param worker: this process's xdist worker id; None in an ``lm_isolated`` child.
    :param outer_worker: for an isolated child, the xdist worker that spawned it, if any.
    """
    held = len([d for d in mask.split(",") if d.strip()])
    if need <= held:
        return None
    if worker is None and outer_worker is None:  # an isolated child of a run without -n
        return printable(f"needs {need} GPUs; this isolated process was given {held} ({mask}), all there are")
    where = f"xdist worker {worker}" if worker else f"the isolated process of xdist worker {outer_worker}"
    advice = f"run it with --lm-gpus-per-worker={need}, or without -n"
    if "," in str(sizes) and dist != "load":
        advice = (f"size lists send wide tests to wide workers only under --dist load (not {dist}); "
                  f"or {advice}")
    # the mask holds a profile's GPU UUIDs: outside text in a skip reason
    return printable(f"needs {need} GPUs; {where} holds {held} ({mask}) with --lm-gpus-per-worker={sizes}: "
                     f"{advice}")
