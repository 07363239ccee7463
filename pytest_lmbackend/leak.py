"""GPU memory a test leaves behind: NVML used memory of its GPUs before and after it (``--lm-leak``)."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from pytest_lmbackend import settings
from pytest_lmbackend.display import printable
from pytest_lmbackend.hardware.units import format_memory, parse_memory, parse_seconds
from pytest_lmbackend.xdist import item_devices, item_gpu_count, session_hardware

if TYPE_CHECKING:
    from pytest_lmbackend.hardware.model import GPU

Mode = settings.LeakMode
MODES: tuple[Mode, ...] = ("off", "warn", "fail")
DEFAULT_THRESHOLD = settings.LEAK_THRESHOLD.default
DEFAULT_WAIT = settings.LEAK_WAIT.default
PLUGIN_NAME = "lmbackend_leak_checker"
# Tests that build an engine through this fixture use the GPU even without a GPU count.
GPU_FIXTURES = frozenset({"lm_pipeline"})

_BEFORE_KEY = pytest.StashKey["Snapshot"]()


class GPUMemoryLeakWarning(pytest.PytestWarning):
    """A test left more GPU memory in use than ``--lm-leak-threshold`` allows."""


class MemoryReader(Protocol):
    """Used bytes per GPU, keyed like ``device_key``; raising means "cannot say"."""

    def used(self, gpus: Sequence[GPU]) -> dict[str, int]: ...


@dataclass(frozen=True)
class Snapshot:
    used: Mapping[str, int]
    cuda_initialised: bool


@dataclass(frozen=True)
class Leftover:
    """One GPU's used memory before and after a test."""

    device: str
    before: int
    after: int

    @property
    def grown(self) -> int:
        return self.after - self.before

    def describe(self) -> str:
        return (f"{self.device}: {format_memory(self.grown)} more in use "
                f"({format_memory(self.before)} before, {format_memory(self.after)} after)")


# --- pure functions -------------------------------------------------------------------------------


def parse_mode(text: str) -> Mode:
    """argparse ``type=`` for ``--lm-leak`` (and the ini key)."""
    value = str(text).strip().lower()
    for mode in MODES:
        if value == mode:
            return mode
    raise argparse.ArgumentTypeError(f"must be one of off, warn, fail; got {text!r}")


def parse_threshold(text: str) -> int:
    """argparse ``type=`` for ``--lm-leak-threshold``: a size like ``64MiB``, ``1GB``, or bytes."""
    try:
        return parse_memory(str(text))  # bare digits are bytes there too, ASCII ones only
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_wait(text: str) -> float:
    return parse_seconds(text, "--lm-leak-wait")


def device_key(gpu: GPU) -> str:
    return gpu.uuid if gpu.uuid else f"index:{gpu.physical_index}"


def leftovers(before: Mapping[str, int], after: Mapping[str, int], threshold: int,
              labels: Mapping[str, str] | None = None) -> tuple[Leftover, ...]:
    """The GPUs whose used memory grew by more than ``threshold`` bytes."""
    found = []
    for key, used in after.items():
        if key in before and used - before[key] > threshold:
            found.append(Leftover((labels or {}).get(key, key), before[key], used))
    return tuple(found)


def leak_message(nodeid: str, found: Sequence[Leftover], threshold: int, waited: float,
                 context_note: str = "") -> str:
    lines = [f"{nodeid} left GPU memory in use (threshold {format_memory(threshold)}, "
             f"measured {waited:.2f} s after teardown):"]
    lines += [f"  {leftover.describe()}" for leftover in found]
    if context_note:
        lines.append(f"  {context_note}")
    return "\n".join(printable(line) for line in lines)  # GPU names from NVML or a profile


# --- NVML ----------------------------------------------------------------------------------------


class NvmlReader:
    """Reads used memory through NVML (``pynvml``), initialised on first use; never through CUDA."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: dict[str, Any] = {}

    def _load(self) -> Any:
        if self._nvml is None:
            # the probe's own loader: the same warning filter and the same "not installed" words
            from pytest_lmbackend.hardware.nvml import load_pynvml

            pynvml = load_pynvml()
            pynvml.nvmlInit()
            self._nvml = pynvml
        return self._nvml

    def used(self, gpus: Sequence[GPU]) -> dict[str, int]:
        nvml = self._load()
        found: dict[str, int] = {}
        for gpu in gpus:
            key = device_key(gpu)
            handle = self._handles.get(key)
            if handle is None:
                # by UUID: NVML numbers every GPU whatever CUDA_VISIBLE_DEVICES says; a MIG UUID works too
                handle = (nvml.nvmlDeviceGetHandleByUUID(gpu.uuid) if gpu.uuid
                          else nvml.nvmlDeviceGetHandleByIndex(gpu.physical_index))
                self._handles[key] = handle
            found[key] = int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
        return found

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self._handles.clear()


# --- torch, only when the test already loaded it -------------------------------------------------


def _torch_cuda() -> Any:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_initialized() else None
    except Exception:
        return None


def _release_cached() -> None:
    """Let go of what is only cached: dead Python objects, and torch's allocator cache when torch is
    already in use (freed blocks stay reserved there and look like a leak to NVML)."""
    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        try:
            cuda.synchronize()
            cuda.empty_cache()
        except Exception:
            pass


def _torch_reserved(count: int) -> dict[int, int] | None:
    cuda = _torch_cuda()
    if cuda is None:
        return None
    try:
        return {i: int(cuda.memory_reserved(i)) for i in range(min(count, int(cuda.device_count())))}
    except Exception:
        return None


# --- the plugin object ---------------------------------------------------------------------------


class LeakChecker:
    """Measures each GPU item; registered only when ``--lm-leak`` is not ``off``."""

    def __init__(self, config: pytest.Config, mode: Mode, threshold: int, wait: float,
                 reader: MemoryReader | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.mode = mode
        self.threshold = threshold
        self.wait = wait
        self.reader: MemoryReader = reader if reader is not None else NvmlReader()
        self.clock = clock
        self.sleep = sleep
        self.unavailable: str | None = None

    def _gpus(self, item: pytest.Item) -> tuple[GPU, ...]:
        count = item_gpu_count(item)
        if count <= 0 and not GPU_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            return ()
        return item_devices(session_hardware(self.config), count)

    def _read(self, gpus: Sequence[GPU]) -> dict[str, int] | None:
        if self.unavailable is not None:
            return None
        hardware = session_hardware(self.config)
        if isinstance(self.reader, NvmlReader) and hardware.source == "profile":
            self.unavailable = f"the hardware is the profile {hardware.name!r}, not this machine's GPUs"
            return None
        from pytest_lmbackend.hardware.probing import nvml_unresponsive

        if isinstance(self.reader, NvmlReader) and nvml_unresponsive():
            # the probe gave up on NVML: asking it again would hang this test on the same driver
            self.unavailable = "NVML did not answer the hardware probe in time"
            return None
        try:
            return self.reader.used(gpus)
        except Exception as exc:  # NVML missing or no driver: say so once, then stay quiet
            self.unavailable = f"{type(exc).__name__}: {exc}"
            return None

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Any:
        gpus = self._gpus(item)
        if gpus:
            used = self._read(gpus)
            if used is not None:
                item.stash[_BEFORE_KEY] = Snapshot(used, _torch_cuda() is not None)
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Any:
        result = yield
        before = item.stash.get(_BEFORE_KEY, None)
        if before is not None:
            del item.stash[_BEFORE_KEY]
            self._check(item, before)
        return result

    def _check(self, item: pytest.Item, before: Snapshot) -> None:
        gpus = self._gpus(item)
        labels = {device_key(g): g.label() for g in gpus}
        start = self.clock()
        after = self._read(gpus)
        if after is None:
            return
        baseline = dict(before.used)
        context_note = ""
        if not before.cuda_initialised and _torch_cuda() is not None:
            # This test created the process's CUDA context, which lives as long as the process: count
            # only what torch still holds for live tensors, and name the rest.
            _release_cached()
            reserved = _torch_reserved(len(gpus)) or {}
            after = self._read(gpus) or after
            for i, gpu in enumerate(gpus):
                key = device_key(gpu)
                if key in after and key in baseline:
                    context = max(0, after[key] - baseline[key] - reserved.get(i, 0))
                    baseline[key] += context
                    if context:
                        context_note = (f"not counted: the CUDA context this test created "
                                        f"({format_memory(context)} on {gpu.label()})")
        found = leftovers(baseline, after, self.threshold, labels)
        released = False
        while found:
            # memory freed asynchronously (streams, other libraries' caches) may need a moment
            if not released:
                _release_cached()
                released = True
            elif self.clock() - start >= self.wait:
                break
            else:
                self.sleep(min(0.05, self.wait))
            after = self._read(gpus) or after
            found = leftovers(baseline, after, self.threshold, labels)
        if not found:
            return
        message = leak_message(item.nodeid, found, self.threshold, self.clock() - start, context_note)
        if self.mode == "fail":
            pytest.fail(message, pytrace=False)
        item.warn(GPUMemoryLeakWarning(message))


# --- hooks ----------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    mode = settings.value(config, settings.LEAK)
    if mode == "off" or _distributing(config):
        return  # nothing per item: off costs nothing; a distributing controller runs no test
    config.pluginmanager.register(
        LeakChecker(config, mode, settings.value(config, settings.LEAK_THRESHOLD),
                    settings.value(config, settings.LEAK_WAIT)),
        PLUGIN_NAME,
    )


def _distributing(config: pytest.Config) -> bool:
    return (not hasattr(config, "workerinput") and hasattr(config.option, "numprocesses")
            and config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None)))


def pytest_unconfigure(config: pytest.Config) -> None:
    checker = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(checker, LeakChecker):
        if isinstance(checker.reader, NvmlReader):
            checker.reader.close()
        config.pluginmanager.unregister(checker, PLUGIN_NAME)


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = settings.value(config, settings.LEAK)
    if mode == "off":
        return []
    threshold = settings.value(config, settings.LEAK_THRESHOLD)
    return [f"lmbackend leak check: {mode} when a GPU test leaves more than {format_memory(threshold)} "
            "in use (NVML)"]


_WORKEROUTPUT_KEY = "lmbackend_leak_unavailable"
_FROM_WORKERS_KEY = pytest.StashKey[dict[str, list[str]]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # on an xdist worker, why the check could not run goes back to the controller, whose summary
    # is the one anybody reads
    checker = session.config.pluginmanager.get_plugin(PLUGIN_NAME)
    output = getattr(session.config, "workeroutput", None)
    if isinstance(checker, LeakChecker) and checker.unavailable is not None and output is not None:
        output[_WORKEROUTPUT_KEY] = checker.unavailable


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    reason = (getattr(node, "workeroutput", None) or {}).get(_WORKEROUTPUT_KEY)
    if reason:
        seen = node.config.stash.setdefault(_FROM_WORKERS_KEY, {})
        seen.setdefault(str(reason), []).append(str(node.gateway.id))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    checker = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(checker, LeakChecker) and checker.unavailable is not None:
        terminalreporter.write_line(
            f"lmbackend leak check did not run: GPU memory could not be read ({checker.unavailable})")
    for reason, workers in config.stash.get(_FROM_WORKERS_KEY, {}).items():
        terminalreporter.write_line(f"lmbackend leak check did not run on xdist worker(s) "
                                    f"{', '.join(workers)}: GPU memory could not be read ({reason})")
