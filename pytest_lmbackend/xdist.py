"""GPU slices for pytest-xdist workers: disjoint ``CUDA_VISIBLE_DEVICES`` each, set before CUDA starts."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_lmbackend.hardware.model import GPU, Hardware

MASK_ENV = "CUDA_VISIBLE_DEVICES"
# Our own copy of the slice in the worker's environment: tells our mask apart from one a test set.
SLICE_ENV = "PYTEST_LM_WORKER_GPUS"
WORKERINPUT_KEY = "lm_gpus"
LOCAL = "local"

_HARDWARE_KEY = pytest.StashKey["Hardware"]()
_PLAN_KEY = pytest.StashKey["tuple[WorkerPlan, ...]"]()
_GPU_NUM = re.compile(r"gpu_num_(\d+)\Z")
_TOO_WIDE = re.compile(r"^Skipped: needs (\d+) GPUs; xdist worker ")


class SliceError(ValueError):
    """Workers and GPUs that cannot be sliced without giving one GPU to two workers."""


@dataclass(frozen=True)
class WorkerPlan:
    """One xdist worker's share of the GPUs.

    :param worker: the xdist worker id (``gw0``).
    :param host: ``"local"`` for popen workers, else the remote host the ``--tx`` spec names.
    :param rank: the worker's position among the workers on its host.
    :param gpus: device ids for ``CUDA_VISIBLE_DEVICES``; ``None`` when the remote worker picks them
        from the GPUs its own host shows (``rank`` and ``per_worker`` decide which).
    :param labels: how the header names those GPUs.
    """

    worker: str
    host: str
    rank: int
    per_worker: int
    gpus: tuple[str, ...] | None
    labels: tuple[str, ...] = ()

    @property
    def mask(self) -> str | None:
        return None if self.gpus is None else ",".join(self.gpus)

    def describe(self) -> str:
        if self.gpus is None:
            first = self.rank * self.per_worker
            return f"{self.worker} -> GPUs {first}..{first + self.per_worker - 1} of {self.host}"
        return f"{self.worker} -> {', '.join(self.labels or self.gpus) or 'no GPU'}"


# --- pure functions -------------------------------------------------------------------------------


def parse_gpus_per_worker(text: str) -> int:
    """argparse ``type=`` for ``--lm-gpus-per-worker``: a whole number >= 1."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--lm-gpus-per-worker must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--lm-gpus-per-worker must be a whole number >= 1, got {text!r}")
    return value


def device_id(gpu: GPU) -> str:
    """How a worker's mask names a GPU: its UUID (which also names a MIG device, and does not depend on
    CUDA's device order), else its driver index."""
    return gpu.uuid if gpu.uuid else str(gpu.physical_index)


def device_label(gpu: GPU) -> str:
    label = f"GPU {gpu.physical_index}" if gpu.uuid.lower().startswith("gpu-") or not gpu.uuid else gpu.uuid
    return f"{label} ({gpu.name})"


def auto_num_workers(gpu_count: int, per_worker: int) -> int | None:
    """Workers for ``-n auto``: one per slice; None (let xdist count CPUs) when there is no GPU."""
    if gpu_count <= 0:
        return None
    return max(1, gpu_count // per_worker)


def slice_devices(devices: Sequence[str], workers: int, per_worker: int) -> tuple[tuple[str, ...], ...]:
    """Disjoint, consecutive slices of ``per_worker`` devices, one per worker, in the visible order.

    Raises SliceError when the workers need more devices than there are, or a device repeats.
    """
    if per_worker < 1:
        raise SliceError(f"GPUs per worker must be >= 1, got {per_worker}")
    if len(set(devices)) != len(devices):
        raise SliceError(f"the visible GPUs repeat a device: {', '.join(devices)}")
    if workers * per_worker > len(devices):
        slices = len(devices) // per_worker
        raise SliceError(
            f"{workers} xdist worker(s) x {per_worker} GPU(s) each need {workers * per_worker} GPU(s), but "
            f"{len(devices)} are visible ({', '.join(devices) or 'none'}), enough for {slices} worker(s): "
            f"use -n {slices if slices else 0} (or -n auto), or lower --lm-gpus-per-worker; "
            "two workers never share a GPU"
        )
    return tuple(tuple(devices[i * per_worker:(i + 1) * per_worker]) for i in range(workers))


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
    per_worker: int,
) -> tuple[WorkerPlan, ...]:
    """Each worker's share: local workers get disjoint slices of the GPUs visible here, in order; remote
    workers get a rank per host and take their slice from the GPUs visible there.

    :param workers: ``(worker id, host)`` in spec order.
    :param gpus: the GPUs visible to the controller (its ``CUDA_VISIBLE_DEVICES`` already applied).
    """
    local = [w for w, host in workers if host == LOCAL]
    slices = slice_devices([device_id(g) for g in gpus], len(local), per_worker) if gpus else ()
    labels = {device_id(g): device_label(g) for g in gpus}
    plans: list[WorkerPlan] = []
    ranks: dict[str, int] = {}
    for worker, host in workers:
        rank = ranks.get(host, 0)
        ranks[host] = rank + 1
        if host != LOCAL:
            plans.append(WorkerPlan(worker, host, rank, per_worker, None))
        elif not gpus:
            # nothing to slice: leave the worker's environment alone
            plans.append(WorkerPlan(worker, host, rank, per_worker, None))
        else:
            share = slices[rank]
            plans.append(WorkerPlan(worker, host, rank, per_worker, share, tuple(labels[d] for d in share)))
    return tuple(plans)


def remote_slice(visible: Sequence[GPU], rank: int, per_worker: int, worker: str) -> tuple[str, ...]:
    """A remote worker's slice of the GPUs its own host shows."""
    devices = [device_id(g) for g in visible]
    if not devices:
        return ()
    try:
        return slice_devices(devices, rank + 1, per_worker)[rank]
    except SliceError as exc:
        raise SliceError(f"xdist worker {worker} (worker {rank + 1} on its host): {exc}") from None


def item_gpu_count(marks: Iterable[Any]) -> int:
    """GPUs an item asks for: the largest ``lm_requires(gpus=N)`` or ``gpu_num_N``; 0 when none."""
    count = 0
    for mark in marks:
        if mark.name == "lm_requires":
            gpus = mark.kwargs.get("gpus")
            if isinstance(gpus, int) and not isinstance(gpus, bool):
                count = max(count, gpus)
        elif (m := _GPU_NUM.match(mark.name)) is not None:
            count = max(count, int(m.group(1)))
    return count


def item_devices(hardware: Hardware, count: int) -> tuple[GPU, ...]:
    """The GPUs an item asking for ``count`` uses: CUDA hands out devices from index 0 on; every visible
    GPU when it named no count."""
    return hardware.gpus if count <= 0 else hardware.gpus[:count]


# --- shared session state -------------------------------------------------------------------------


def session_hardware(config: pytest.Config) -> Hardware:
    """The session's Hardware: the plugin's (probed once, lazily); before the plugin is configured
    (``-n auto`` is resolved that early), probed here from ``--lm-hardware`` / ``PYTEST_LM_HARDWARE``.
    A fake profile is seen through this process's ``CUDA_VISIBLE_DEVICES`` as real GPUs are."""
    cached = config.stash.get(_HARDWARE_KEY, None)
    if cached is not None:
        return cached
    from pytest_lmbackend.session import SESSION_KEY, SetupError

    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        try:
            found: Hardware = state.hardware
        except SetupError as exc:
            raise pytest.UsageError(str(exc)) from None
    else:
        found = probe_here(config)
    found = masked_profile(config, found)
    config.stash[_HARDWARE_KEY] = found
    return found


def masked_profile(config: pytest.Config, found: Hardware) -> Hardware:
    """A fake profile under this process's ``CUDA_VISIBLE_DEVICES``: the profile's GPUs as CUDA would
    show them here (UUIDs, indices and MIG ids as CUDA reads them)."""
    mask = os.environ.get(MASK_ENV)
    if found.source != "profile" or mask is None:
        return found
    import dataclasses

    from pytest_lmbackend import hardware
    from pytest_lmbackend.hardware.visibility import Device

    spec = hardware.profile_spec(profile_option(config), os.environ)
    if spec is None:
        return found
    full = hardware.load_profile(spec)
    visible, notes = hardware.apply_visibility([Device(g) for g in full.gpus], mask)
    return dataclasses.replace(found, gpus=visible, warnings=(*found.warnings, *notes))


def profile_option(config: pytest.Config) -> str | None:
    """``--lm-hardware`` (a tuple of names once parsed) or its ini key, as one profile spec."""
    value = _option(config, "lm_hardware")
    if isinstance(value, (tuple, list)):
        value = ",".join(str(v) for v in value)
    return str(value).strip() or None if value else None


def probe_here(config: pytest.Config) -> Hardware:
    """A fresh probe under the current ``CUDA_VISIBLE_DEVICES`` (``$PYTEST_LM_HARDWARE`` honoured)."""
    from pytest_lmbackend import hardware

    try:
        return hardware.probe(profile=profile_option(config))
    except ValueError as exc:  # a ProfileError names the profile and the field
        raise pytest.UsageError(f"--lm-hardware: {exc}") from None


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name, None)
    if value is None:
        try:
            value = config.getini(name) or None
        except ValueError:
            value = None
    return value


def gpus_per_worker(config: pytest.Config) -> int:
    value = _option(config, "lm_gpus_per_worker")
    if value is None:
        return 1
    if isinstance(value, int):
        return value
    try:
        return parse_gpus_per_worker(value)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"ini lm_gpus_per_worker: {exc}") from None


def worker_id(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput.get("workerid"))


def _cuda_initialised() -> bool:
    # looks only at a torch that is already imported: never imports it
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:
        return False


def _xdist_distributing(config: pytest.Config) -> bool:
    # xdist's options exist whatever name its plugin was loaded under (entry point, -p xdist.plugin)
    return (not hasattr(config, "workerinput") and hasattr(config.option, "numprocesses")
            and config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))
            and not config.getoption("collectonly", False))  # xdist starts no worker to only collect


# --- hooks ----------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmbackend")
    group.addoption(
        "--lm-gpus-per-worker", dest="lm_gpus_per_worker", type=parse_gpus_per_worker, default=None,
        metavar="N",
        help="with pytest-xdist: each worker gets its own N of the visible GPUs (default 1); "
             "-n auto starts GPUs // N workers.",
    )
    parser.addini("lm_gpus_per_worker", "GPUs each pytest-xdist worker holds (default 1).", default="")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # xdist's own hooks only exist when xdist is installed; the class keeps them out otherwise
    if importlib.util.find_spec("xdist") is not None:
        pluginmanager.register(XdistControllerHooks(), "lmbackend_xdist_controller")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        _pin_worker(config, workerinput)


def controller_plan(config: pytest.Config) -> tuple[WorkerPlan, ...]:
    """The worker -> GPU plan for this run's ``--tx`` / ``-n``, checked: a UsageError when the GPUs cannot
    be sliced without sharing."""
    specs = [spec_fields(s) for s in expand_tx(config.getoption("tx"))]
    for fields in specs:
        if f"env:{MASK_ENV}" in fields:
            raise pytest.UsageError(
                f"--tx sets env:{MASK_ENV} itself; pytest-lmbackend gives each worker its GPUs: "
                "drop it, and set CUDA_VISIBLE_DEVICES for the whole run instead"
            )
    workers = list(zip(worker_ids(specs), [spec_host(f) for f in specs], strict=True))
    return _plan(config, workers)


def _plan(config: pytest.Config, workers: Sequence[tuple[str, str]]) -> tuple[WorkerPlan, ...]:
    try:
        return plan_workers(workers, session_hardware(config).gpus, gpus_per_worker(config))
    except SliceError as exc:
        raise pytest.UsageError(str(exc)) from None


def _pin_worker(config: pytest.Config, workerinput: Mapping[str, Any]) -> None:
    share = workerinput.get(WORKERINPUT_KEY)
    if not isinstance(share, Mapping):
        return
    worker = str(workerinput.get("workerid"))
    gpus = share.get("gpus")
    if gpus is None:
        if share.get("host", LOCAL) == LOCAL:
            return
        visible = probe_here(config).gpus
        try:
            gpus = list(remote_slice(visible, int(share["rank"]), int(share["per_worker"]), worker))
        except SliceError as exc:
            raise pytest.UsageError(str(exc)) from None
        if not gpus:
            return
    mask = ",".join(gpus)
    if os.environ.get(MASK_ENV) != mask and _cuda_initialised():
        raise pytest.UsageError(
            f"xdist worker {worker}: CUDA was initialised before its GPUs were set "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get(MASK_ENV)!r}, wanted {mask!r}); "
            "something imported at collection start uses the GPU"
        )
    os.environ[MASK_ENV] = mask
    os.environ[SLICE_ENV] = mask


def too_wide(need: int, mask: str, worker: str | None, per_worker: int) -> str | None:
    """Why an item needing ``need`` GPUs cannot run in a process pinned to ``mask``; None when it can."""
    held = len([d for d in mask.split(",") if d.strip()])
    if need <= held:
        return None
    where = f"xdist worker {worker}" if worker else "this isolated process"
    return (f"needs {need} GPUs; {where} holds {held} ({mask}) with --lm-gpus-per-worker={per_worker}: "
            f"run it with --lm-gpus-per-worker={need}, or without -n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Only a pinned process decides here: it knows its slice better than any probe of a profile.
    mask = os.environ.get(SLICE_ENV)
    if mask is None:
        return
    reason = too_wide(item_gpu_count(item.iter_markers()), mask, worker_id(item.config),
                      gpus_per_worker(item.config))
    if reason is None:
        return
    from pytest_lmbackend.session import SESSION_KEY, SKIP_KIND_PROPERTY

    state = item.config.stash.get(SESSION_KEY, None)
    if state is not None and "gpu" in state.options.require:
        pytest.fail(f"{reason} (--lm-require=gpu)", pytrace=False)
    item.user_properties.append((SKIP_KIND_PROPERTY, "gpu"))
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    result = yield
    mask = os.environ.get(SLICE_ENV)
    if mask is not None and os.environ.get(MASK_ENV) != mask:
        changed = os.environ.get(MASK_ENV)
        os.environ[MASK_ENV] = mask
        pytest.fail(
            f"{item.nodeid} left CUDA_VISIBLE_DEVICES={changed!r} on xdist worker {worker_id(item.config)}, "
            f"which holds only {mask!r}: work started after it could use another worker's GPUs. "
            "Restored it; set the variable with monkeypatch so it is undone.",
            pytrace=False,
        )
    return result


def pytest_report_header(config: pytest.Config) -> list[str]:
    plan = config.stash.get(_PLAN_KEY, None)
    if not plan:
        return []
    if all(p.gpus is None and p.host == LOCAL for p in plan):
        return ["lmbackend xdist: no GPU visible; workers are not pinned"]
    return ["lmbackend xdist GPUs: " + "; ".join(p.describe() for p in plan)]


class XdistControllerHooks:
    """pytest-xdist hooks, registered only when xdist is installed."""

    def __init__(self) -> None:
        self.too_wide: dict[str, int] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            match = _TOO_WIDE.search(str(report.longrepr[2]))
            if match is not None:
                self.too_wide[report.nodeid] = int(match.group(1))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.too_wide:
            widest = max(self.too_wide.values())
            terminalreporter.write_line(
                f"lmbackend xdist: {len(self.too_wide)} test(s) need more GPUs than a worker holds "
                f"(up to {widest}); run them with --lm-gpus-per-worker={widest}, or without -n")

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        # after the other plugins' configure, so the session hardware is theirs; before any worker starts
        if _xdist_distributing(config):
            config.stash[_PLAN_KEY] = controller_plan(config)

    # tryfirst: xdist's own answer (the CPU count) would otherwise win whenever xdist was registered
    # after this plugin, e.g. when this one is loaded with -p
    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
            return None  # the user's explicit count, which xdist reads
        return auto_num_workers(len(session_hardware(config).gpus), gpus_per_worker(config))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: Sequence[Any]) -> None:
        # The spec's environment reaches the worker before Python starts pytest there: the mask is in
        # place before any conftest or plugin import could touch CUDA.
        hosts = [spec_host({k: str(getattr(spec, k)) for k in ("ssh", "socket", "vagrant_ssh", "via")
                            if getattr(spec, k, None)}) for spec in specs]
        plan = _plan(config, list(zip([str(spec.id) for spec in specs], hosts, strict=True)))
        config.stash[_PLAN_KEY] = plan
        for spec, share in zip(specs, plan, strict=True):
            if share.mask is not None:
                spec.env[MASK_ENV] = share.mask
                spec.env[SLICE_ENV] = share.mask

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        plan = {p.worker: p for p in node.config.stash.get(_PLAN_KEY, ())}
        share = plan.get(node.gateway.id)
        if share is None:
            return
        node.workerinput[WORKERINPUT_KEY] = {
            "gpus": list(share.gpus) if share.gpus is not None else None,
            "host": share.host,
            "rank": share.rank,
            "per_worker": share.per_worker,
        }
