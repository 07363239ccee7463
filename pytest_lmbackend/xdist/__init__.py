"""GPU slices for pytest-xdist workers: disjoint ``CUDA_VISIBLE_DEVICES`` each, set before CUDA starts."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lmbackend import settings

if TYPE_CHECKING:
    from pytest_lmbackend.hardware.model import Hardware
    from pytest_lmbackend.xdist.slicing import (
        LOCAL,
        PerWorker,
        Sizes,
        SliceError,
        WorkerPlan,
        auto_num_workers,
        device_id,
        device_label,
        expand_tx,
        format_sizes,
        held_sizes,
        item_devices,
        parse_gpus_per_worker,
        plan_workers,
        remote_slice,
        slice_devices,
        spec_fields,
        spec_host,
        too_wide,
        worker_ids,
        worker_sizes,
    )

__all__ = [
    "LOCAL",
    "MASK_ENV",
    "SLICE_ENV",
    "WORKERINPUT_KEY",
    "Sizes",
    "SliceError",
    "WorkerPlan",
    "auto_num_workers",
    "device_id",
    "device_label",
    "expand_tx",
    "format_sizes",
    "held_sizes",
    "item_devices",
    "item_gpu_count",
    "parse_gpus_per_worker",
    "plan_workers",
    "remote_slice",
    "session_hardware",
    "slice_devices",
    "spec_fields",
    "spec_host",
    "too_wide",
    "worker_ids",
    "worker_sizes",
]

# This module is loaded with the plugin (its hooks must be in place before -n auto is counted); the
# slicing itself is loaded when a session pins workers, or when one of these names is first used.
_SLICING = frozenset(__all__) - {"MASK_ENV", "SLICE_ENV", "WORKERINPUT_KEY", "item_gpu_count",
                                 "session_hardware"}


def __getattr__(name: str) -> Any:
    if name not in _SLICING:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("pytest_lmbackend.xdist.slicing"), name)
    globals()[name] = value
    return value


MASK_ENV = "CUDA_VISIBLE_DEVICES"
# Our own copy of the slice in the worker's environment: tells our mask apart from one a test set.
SLICE_ENV = settings.WORKER_GPUS_ENV
WORKERINPUT_KEY = "lm_gpus"

_HARDWARE_KEY = pytest.StashKey["Hardware"]()
_PLAN_KEY = pytest.StashKey["tuple[WorkerPlan, ...]"]()
_NEEDS_DIR_KEY = pytest.StashKey[str]()
_DEVICES_KEY = pytest.StashKey[tuple[str, ...]]()  # auto: the controller's visible GPUs, in order
_TOO_WIDE = re.compile(r"^Skipped: needs (\d+) GPUs; xdist worker ")


def _is_auto(config: pytest.Config) -> bool:
    return gpus_per_worker(config) == "auto"


# --- shared session state -------------------------------------------------------------------------


def session_hardware(config: pytest.Config, *, early: bool = False) -> Hardware:
    """The session's Hardware: the plugin's (probed once, lazily); ``early``, before the plugin is
    configured (``-n auto`` is counted that early), probed here from ``--lm-hardware`` /
    ``PYTEST_LM_HARDWARE``. The probe sees a fake profile through this process's
    ``CUDA_VISIBLE_DEVICES`` as it sees real GPUs."""
    cached = config.stash.get(_HARDWARE_KEY, None)
    if cached is not None:
        return cached
    if early:
        found = probe_here(config)
    else:
        from pytest_lmbackend.session import SetupError, session_state

        try:
            found = session_state(config).hardware
        except SetupError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_HARDWARE_KEY] = found
    return found


def profile_option(config: pytest.Config) -> str | None:
    """The profile spec asked for, as one string (``--lm-hardware``, ``$PYTEST_LM_HARDWARE``, ini)."""
    return ",".join(settings.value(config, settings.HARDWARE)) or None


def probe_here(config: pytest.Config) -> Hardware:
    """A fresh probe under the current ``CUDA_VISIBLE_DEVICES`` (``$PYTEST_LM_HARDWARE`` honoured)."""
    from pytest_lmbackend import hardware

    try:
        return hardware.probe(profile=profile_option(config))
    except ValueError as exc:  # a ProfileError names the profile and the field
        raise pytest.UsageError(f"{settings.origin(config, settings.HARDWARE)}: {exc}") from None


def gpus_per_worker(config: pytest.Config) -> PerWorker:
    """``--lm-gpus-per-worker`` (or its ini key): sizes, ``"auto"``, or ``()`` (no pinning, the default)."""
    return settings.value(config, settings.GPUS_PER_WORKER)


def _sizes_text(config: pytest.Config) -> str:
    sizes = gpus_per_worker(config)
    return sizes if isinstance(sizes, str) else ",".join(str(n) for n in sizes)


def item_gpu_count(item: pytest.Item) -> int:
    """GPUs an item needs, from the requirement the plugin read from its markers at collection (every
    ``lm_requires`` and ``gpu_num_N`` merged): 1 when it asks a GPU fact without a count, 0 when it asks
    nothing of a GPU."""
    from pytest_lmbackend.session import MARKS_KEY

    marks = item.stash.get(MARKS_KEY, None)
    return 0 if marks is None else max((r.gpu_count for r in marks.requirements), default=0)


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
    from pytest_lmbackend.xdist.slicing import expand_tx, spec_fields, spec_host, worker_ids

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
    from pytest_lmbackend.xdist.slicing import AUTO, LOCAL, SliceError, WorkerPlan, plan_workers

    sizes = gpus_per_worker(config)
    if sizes == AUTO:
        # each worker takes its slice itself once it has collected (the width is the selected tests'
        # largest need); here only who is which rank
        if any(host != LOCAL for _, host in workers):
            raise pytest.UsageError("--lm-gpus-per-worker=auto is for local workers (-n N): give remote "
                                    "workers a size, --lm-gpus-per-worker=N")
        return tuple(WorkerPlan(worker, host, rank, 0, None) for rank, (worker, host) in enumerate(workers))
    try:
        return plan_workers(workers, session_hardware(config).gpus, sizes)
    except SliceError as exc:
        raise pytest.UsageError(str(exc)) from None


def _pin_worker(config: pytest.Config, workerinput: Mapping[str, Any]) -> None:
    from pytest_lmbackend.xdist.slicing import LOCAL, SliceError, remote_slice

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
            remote = remote_slice(visible, int(share["rank"]), int(share["size"]), worker)
        except SliceError as exc:
            raise pytest.UsageError(str(exc)) from None
        if remote is None:  # that host shows no GPU: nothing to pin
            return
        gpus = list(remote)
    _set_mask(worker, ",".join(gpus))


def _set_mask(worker: str, mask: str) -> None:
    """Pin this process to ``mask`` (an empty one hides every GPU), unless CUDA already started."""
    if os.environ.get(MASK_ENV) != mask and _cuda_initialised():
        raise pytest.UsageError(
            f"xdist worker {worker}: CUDA was initialised before its GPUs were set "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get(MASK_ENV)!r}, wanted {mask!r}); "
            "something imported at collection start uses the GPU"
        )
    os.environ[MASK_ENV] = mask
    os.environ[SLICE_ENV] = mask


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Only a pinned process decides here: it knows its slice better than any probe of a profile.
    mask = os.environ.get(SLICE_ENV)
    if mask is None:
        return
    from pytest_lmbackend.xdist.slicing import too_wide

    reason = too_wide(item_gpu_count(item), mask, worker_id(item.config),
                      _sizes_text(item.config),
                      dist=str(item.config.getoption("dist", "load") or "load"),
                      outer_worker=os.environ.get("PYTEST_XDIST_WORKER"))
    if reason is None:
        return
    from pytest_lmbackend.session import SESSION_KEY, SKIP_KIND_PROPERTY

    state = item.config.stash.get(SESSION_KEY, None)
    if state is not None and "gpu" in state.options.require:
        pytest.fail(f"{reason} (--lm-require=gpu)", pytrace=False)
    item.user_properties.append((SKIP_KIND_PROPERTY, "gpu"))
    pytest.skip(reason)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    share = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
    if not isinstance(share, Mapping):
        return
    needs = {item.nodeid: item_gpu_count(item) for item in items}  # the selected tests: after -m, -k
    if share.get("needs_dir"):
        from pytest_lmbackend.xdist.schedule import write_needs

        write_needs(str(share["needs_dir"]), str(worker_id(config)), {k: v for k, v in needs.items() if v})
    if share.get("auto") and share.get("devices"):
        _pin_auto(config, share, max(needs.values(), default=0))


def _pin_auto(config: pytest.Config, share: Mapping[str, Any], need: int) -> None:
    """``--lm-gpus-per-worker=auto``, on a worker after collection: its slice as wide as the widest
    selected test, or none beyond the slices there are. Hardware read before is read again under it."""
    from pytest_lmbackend.xdist.slicing import auto_slice

    _set_mask(str(worker_id(config)), ",".join(auto_slice(list(share["devices"]), int(share["rank"]), need)))
    if _HARDWARE_KEY in config.stash:
        del config.stash[_HARDWARE_KEY]
    from pytest_lmbackend.session import SESSION_KEY

    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.forget_hardware()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    result = yield
    mask = os.environ.get(SLICE_ENV)
    if worker_id(item.config) is None:
        # an lm_isolated child runs this one test and exits: a mask it changed reaches nobody
        return result
    if mask is not None and os.environ.get(MASK_ENV) != mask:
        # set, changed or deleted by the test (LMDeploy's set_device_env_variable /
        # unset_device_env_variable): the worker's own mask comes back before the next test
        changed = os.environ.get(MASK_ENV)
        os.environ[MASK_ENV] = mask
        was = "deleted CUDA_VISIBLE_DEVICES" if changed is None else f"left CUDA_VISIBLE_DEVICES={changed!r}"
        _warn(item, GPUMaskWarning(
            f"{item.nodeid} {was} on xdist worker {worker_id(item.config)}, which holds {mask!r}: "
            "restored it for the tests after it. To pin a test's own GPUs, change the mask with a "
            "function-scoped monkeypatch (undone after the test), or leave the pinning to "
            "--lm-gpus-per-worker."))
    return result


class GPUMaskWarning(pytest.PytestWarning):
    """A test changed its pinned xdist worker's ``CUDA_VISIBLE_DEVICES``; the worker's mask was restored."""


def _warn(item: pytest.Item, warning: pytest.PytestWarning) -> None:
    """A warning on the item, never an error: under ``filterwarnings = error`` it goes in the report."""
    try:
        item.warn(warning)
    except pytest.PytestWarning:
        item.add_report_section("teardown", "lmbackend", str(warning))


def pytest_report_header(config: pytest.Config) -> list[str]:
    plan = config.stash.get(_PLAN_KEY, None)
    if not plan:
        return []
    from pytest_lmbackend.xdist.slicing import LOCAL

    devices = config.stash.get(_DEVICES_KEY, None)
    if devices:
        return [f"lmbackend xdist GPUs: auto: after collecting, each of {len(plan)} workers pins itself to "
                f"as many of the {len(devices)} visible GPUs as the widest selected test needs (workers "
                "beyond the slices hold none)"]
    if all(p.gpus is None and p.host == LOCAL for p in plan):
        npus = len(session_hardware(config).npus)
        if npus:  # LMDeploy's own suites pin Ascend workers themselves (ASCEND_RT_VISIBLE_DEVICES)
            return [f"lmbackend xdist: no NVIDIA GPU visible, {npus} Ascend NPUs: pinning sets "
                    "CUDA_VISIBLE_DEVICES only; workers are not pinned"]
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
            plan = controller_plan(config)
            config.stash[_PLAN_KEY] = plan
            if _is_auto(config):
                from pytest_lmbackend.xdist.slicing import device_id

                config.stash[_DEVICES_KEY] = tuple(device_id(g) for g in session_hardware(config).gpus)
            if (len({p.size for p in plan}) > 1 or _is_auto(config)) and config.getoption("dist") == "load":
                # workers report each test's GPU count here after collecting; the scheduler reads it
                config.stash[_NEEDS_DIR_KEY] = tempfile.mkdtemp(prefix="lmbackend-xdist-")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        folder = config.stash.get(_NEEDS_DIR_KEY, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        folder = config.stash.get(_NEEDS_DIR_KEY, None)
        if folder is None:
            return None  # one size for every worker: xdist's own scheduling is right
        from pytest_lmbackend.xdist.schedule import GpuLoadScheduling

        devices = config.stash.get(_DEVICES_KEY, None)
        return GpuLoadScheduling(config, log, folder, {p.worker: p.size for p in config.stash[_PLAN_KEY]},
                                 auto_devices=None if devices is None else len(devices))

    # tryfirst: xdist's own answer (the CPU count) would otherwise win whenever xdist was registered
    # after this plugin, e.g. when this one is loaded with -p
    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        from pytest_lmbackend.xdist.slicing import auto_num_workers

        if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
            return None  # the user's explicit count, which xdist reads
        return auto_num_workers(len(session_hardware(config, early=True).gpus), gpus_per_worker(config))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: Sequence[Any]) -> None:
        from pytest_lmbackend.xdist.slicing import spec_host

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
        shares = list(node.config.stash.get(_PLAN_KEY, ()))
        share = next((p for p in shares if p.worker == node.gateway.id), None)
        if share is None:
            # a worker xdist started in place of a crashed one: a new id, the crashed one's spec, so
            # the crashed one's mask (already in its environment) and share
            mask = getattr(getattr(node.gateway, "spec", None), "env", {}).get(SLICE_ENV)
            share = next((p for p in shares if mask is not None and p.mask == mask), None)
        devices = node.config.stash.get(_DEVICES_KEY, None)
        if share is None and devices is not None:
            # auto: the crashed one's rank is not known here; the new worker holds no GPU rather than
            # risk holding another worker's
            from pytest_lmbackend.xdist.slicing import LOCAL, WorkerPlan

            share = WorkerPlan(str(node.gateway.id), LOCAL, 10**6, 0, None)
        if share is None:
            return
        needs_dir = node.config.stash.get(_NEEDS_DIR_KEY, None)
        node.workerinput[WORKERINPUT_KEY] = {
            "needs_dir": needs_dir,
            "gpus": list(share.gpus) if share.gpus is not None else None,
            "host": share.host,
            "rank": share.rank,
            "size": share.size,
            "auto": devices is not None,
            "devices": list(devices or ()),
        }
