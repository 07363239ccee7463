"""Tests of the hardware probe: units, derived capabilities, visibility, NVML, nvidia-smi, profiles."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import importlib.machinery
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_lmbackend.hardware import (
    GPU,
    Hardware,
    ProfileError,
    apply_visibility,
    detect_ascend,
    format_memory,
    has_turbomind_kernels,
    load_profile,
    load_profiles,
    native_bf16,
    native_fp8,
    nvml,
    parse_capability,
    parse_memory,
    probe,
    probe_many,
    shipped_profiles,
    supports_dtype,
    turbomind_builds,
    turbomind_kernels_missing,
)
from pytest_lmbackend.hardware.packages import (
    installed_distributions,
    lmdeploy_locations,
    read_packages,
    turbomind_extension,
)
from pytest_lmbackend.hardware.smi import parse_cuda_version, parse_query
from pytest_lmbackend.hardware.visibility import Device

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
OBSERVED = SHARED / "gpu" / "observed-h100.txt"
GiB = 1024**3
MiB = 1024**2


def observed_text() -> str:
    if not OBSERVED.is_file():
        pytest.skip(f"real nvidia-smi/NVML output not found at ../shared/gpu/{OBSERVED.name}")
    return OBSERVED.read_text()


def gpu(i: int, name: str = "NVIDIA H100 80GB HBM3", cap: tuple[int, int] = (9, 0), uuid: str | None = None,
        total: int = 80 * GiB) -> GPU:
    return GPU(index=i, physical_index=i, uuid=uuid or f"GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}", name=name,
               capability=cap, memory_total=total, memory_free=total // 2,
               pci_bus_id=f"00000000:{i:02x}:00.0")


# -- units --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("40GiB", 40 * GiB), ("40GB", 40 * 10**9), ("40000MiB", 40000 * MiB), ("40 gib", 40 * GiB),
    ("1.5TiB", int(1.5 * 1024**4)), ("512", 512), (1024, 1024), (0, 0), ("81559MiB", 81559 * MiB),
])
def test_parse_memory_reads_units(text: object, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["40 parsecs", "", "GiB", "-1GiB", -5, True, 4.5, None, ["40GiB"]])
def test_parse_memory_rejects_with_the_value_named(bad: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad)) if not isinstance(bad, str) else "memory size"):
        parse_memory(bad)


def test_parse_memory_refuses_a_bare_letter_and_negative_strings() -> None:
    with pytest.raises(ValueError, match=r"'40G' is ambiguous: write 40GiB .* or 40GB"):
        parse_memory("40G")
    with pytest.raises(ValueError, match="must not be negative, got '-1GiB'"):
        parse_memory("-1GiB")


def test_format_memory() -> None:
    assert format_memory(80 * GiB) == "80 GiB"
    assert format_memory(81559 * MiB) == "79.65 GiB"
    assert format_memory(512 * MiB) == "512 MiB"
    assert format_memory(None) == "unknown"


@given(st.integers(min_value=0, max_value=2**50))
def test_memory_round_trips_through_bytes(n: int) -> None:
    assert parse_memory(n) == n
    assert parse_memory(f"{n}B") == n


def test_parse_capability() -> None:
    assert parse_capability("8.6") == (8, 6)
    assert parse_capability([12, 0]) == (12, 0)
    for bad in ("8", "sm80", 8.0, (8,), "8.x"):
        with pytest.raises(ValueError, match="capability"):
            parse_capability(bad)


# -- derived facts --------------------------------------------------------------------------------

@pytest.mark.parametrize(("cap", "bf16", "fp8"), [
    ((7, 0), False, False), ((7, 5), False, False), ((8, 0), True, False), ((8, 6), True, False),
    ((8, 9), True, True), ((9, 0), True, True), ((10, 0), True, True), ((12, 0), True, True),
])
def test_native_dtypes(cap: tuple[int, int], bf16: bool, fp8: bool) -> None:
    assert native_bf16(cap) is bf16
    assert native_fp8(cap) is fp8
    assert supports_dtype(cap, "bfloat16") is bf16
    assert supports_dtype(cap, "fp8") is fp8


@pytest.mark.parametrize(("cap", "cuda", "lmdeploy", "ok", "why"), [
    ((7, 0), "12.4", "0.18.0", True, None),
    ((7, 0), "13.0", "0.18.0", False, "sm70 only with CUDA < 13"),
    ((7, 5), "13.0", "0.10.2", True, None),          # the CUDA 13 cut-off arrived in 0.11.0
    ((10, 0), "12.8", "0.13.0", True, None),
    ((10, 0), "12.8", "0.12.3", False, "not in LMDeploy 0.12.3's TurboMind build list"),
    ((10, 0), "12.4", "0.18.0", False, "sm100a only with CUDA >= 12.8"),
    ((12, 0), "12.8", "0.10.0", True, None),
    ((12, 0), "12.8", "0.9.2", False, "not in LMDeploy 0.9.2's"),
    ((9, 0), "13.0", None, True, None),
    ((8, 7), "12.4", "0.18.0", True, None),          # sm80/sm86 cubins run on 8.7
    ((10, 3), "13.0", "0.18.0", False, "sm103"),     # sm100a is arch-specific: not on B300
    ((12, 1), "13.0", "0.18.0", False, "sm121"),
    ((6, 1), "12.4", "0.18.0", False, "sm61"),
    ((9, 0), "12.1", "0.3.0", True, None),           # before 0.4.0 PTX covered newer GPUs
    ((6, 1), "12.1", "0.3.0", False, "sm61"),
])
def test_turbomind_kernels_follow_each_release(cap: tuple[int, int], cuda: str, lmdeploy: str | None,
                                               ok: bool, why: str | None) -> None:
    missing = turbomind_kernels_missing(cap, cuda, lmdeploy=lmdeploy)
    assert has_turbomind_kernels(cap, cuda, lmdeploy=lmdeploy) is ok
    if why is None:
        assert missing is None
    else:
        assert missing is not None and why in missing


def test_turbomind_unknown_cuda_is_not_assumed() -> None:
    assert turbomind_kernels_missing((9, 0), None) is not None
    assert "CUDA version unknown" in (turbomind_kernels_missing((9, 0), None) or "")


@given(st.tuples(st.integers(0, 13), st.integers(0, 9)), st.sampled_from(["11.8", "12.4", "12.8", "13.0"]))
def test_arch_specific_builds_run_only_on_their_own_capability(cap: tuple[int, int], cuda: str) -> None:
    builds = [b for b in turbomind_builds("0.18.0") if b.runs_on(cap)]
    for build in builds:
        if build.arch_specific:
            assert build.sm == cap[0] * 10 + cap[1]
    if has_turbomind_kernels(cap, cuda, lmdeploy="0.18.0"):
        assert builds


# -- visibility -----------------------------------------------------------------------------------

def _observed_devices(text: str) -> list[Device]:
    line = next(ln for ln in text.splitlines() if ln.startswith("nvml count"))
    rows = ast.literal_eval(line[line.index("["):line.index("]") + 1])
    return [Device(GPU(index=i, physical_index=r[0], uuid=r[1], name=r[3], capability=tuple(r[4]),
                       memory_total=r[5], memory_free=r[6], pci_bus_id=r[2].lower()))
            for i, r in enumerate(rows)]


def test_visibility_matches_what_cuda_did_on_a_real_h100() -> None:
    text = observed_text()
    devices = _observed_devices(text)
    cases = re.findall(r"== CUDA_VISIBLE_DEVICES=\[(.*?)\]\n(?:.*\n)*?count (\d+) initialized", text)
    assert len(cases) >= 6
    for value, torch_count in cases:
        visible, notes = apply_visibility(devices, None if value == "UNSET" else value)
        assert len(visible) == int(torch_count), (value, notes)
        if visible:
            assert visible[0].name == "NVIDIA H100 80GB HBM3"
            assert visible[0].index == 0


def test_visibility_orders_and_renumbers() -> None:
    devices = [Device(gpu(i)) for i in range(4)]
    visible, notes = apply_visibility(devices, "2, 0")
    assert [(g.index, g.physical_index) for g in visible] == [(0, 2), (1, 0)]
    assert notes == ()


@pytest.mark.parametrize(("value", "physical", "problem"), [
    ("0,7,1", [0], "names no device"),
    ("1,1", [1], "repeats"),
    ("0,-1,1", [0], "names no device"),
    ("GPU-0000,1", [], "matches 4 devices"),
    ("bogus", [], "names no device"),
    ("", [], "empty"),
])
def test_visibility_stops_at_the_first_bad_entry(value: str, physical: list[int], problem: str) -> None:
    devices = [Device(gpu(i)) for i in range(4)]
    visible, notes = apply_visibility(devices, value)
    assert [g.physical_index for g in visible] == physical
    assert len(notes) == 1 and problem in notes[0]


def test_visibility_by_uuid_prefix_and_mig() -> None:
    parent = gpu(0, name="NVIDIA A100-SXM4-40GB", cap=(8, 0), uuid="GPU-abcdef01-0000-0000-0000-000000000000")
    mig = [Device(GPU(i, 0, f"MIG-{i}1234567-aaaa", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", (8, 0), 5 * GiB),
                  mig_parent_uuid=parent.uuid, gpu_instance=7 + i, compute_instance=0) for i in range(2)]
    other = gpu(1, uuid="GPU-12345678-0000-0000-0000-000000000000")
    devices = [*mig, Device(other)]
    assert [g.uuid for g in apply_visibility(devices, "GPU-1234")[0]] == [other.uuid]
    assert [g.uuid for g in apply_visibility(devices, "MIG-11234567-aaaa")[0]] == [mig[1].gpu.uuid]
    old_form = f"MIG-{parent.uuid}/8/0"
    assert [g.uuid for g in apply_visibility(devices, old_form)[0]] == [mig[1].gpu.uuid]
    # a MIG parent's own UUID is not a CUDA device while it is split
    assert apply_visibility(devices, parent.uuid)[0] == ()


# -- nvidia-smi parsing ---------------------------------------------------------------------------

def test_parse_real_nvidia_smi_output() -> None:
    text = observed_text()
    block = text.split("== query csv noheader nounits\n", 1)[1].split("\n==", 1)[0]
    devices, driver, notes = parse_query(block)
    assert notes == []
    assert driver == "580.159.04"
    (dev,) = devices
    assert dev.gpu.name == "NVIDIA H100 80GB HBM3"
    assert dev.gpu.capability == (9, 0)
    assert dev.gpu.pci_bus_id == "00000000:00:06.0"
    # the same bytes NVML reported on that machine (NVML's total is nvidia-smi's MiB x 2**20)
    nvml_row = _observed_devices(text)[0].gpu
    assert dev.gpu.memory_total == nvml_row.memory_total
    assert dev.gpu.memory_free == nvml_row.memory_free
    version = text.split("== nvidia-smi version\n", 1)[1].split("\n==", 1)[0]
    assert parse_cuda_version(version) == "13.0"
    banner = text.split("== header of plain nvidia-smi\n", 1)[1]
    assert parse_cuda_version(banner) == "13.0"


def test_parse_query_handles_commas_in_names_and_missing_values() -> None:
    text = ("0, GPU-a, 00000000:01:00.0, NVIDIA Weird, Name, 8.6, 24576, [N/A], 550.1\n"
            "garbage line\n"
            "1, GPU-b, [N/A], Tesla T4, [N/A], 15360, 15000, 550.1\n")
    devices, driver, notes = parse_query(text)
    assert [d.gpu.name for d in devices] == ["NVIDIA Weird, Name", "Tesla T4"]
    assert devices[0].gpu.memory_free is None
    assert devices[1].gpu.capability == (7, 5)  # from the name when compute_cap is not reported
    assert devices[1].gpu.pci_bus_id is None
    assert driver == "550.1"
    assert len(notes) == 1 and "garbage line" in notes[0]


# -- fake nvidia-smi on PATH ----------------------------------------------------------------------

def fake_smi(folder: Path, body: str) -> dict[str, str]:
    script = folder / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": str(folder)}


@pytest.fixture(autouse=True)
def pynvml_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests fake pynvml (or its absence) and nvidia-smi: the probe must read NVML through
    pynvml here, never a real driver through our ctypes binding (tests/test_libnvml.py drives that
    one against a stand-in C library)."""
    monkeypatch.setattr(nvml, "DEFAULT_BINDING", "pynvml")


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError


TWO_GPUS = ("0, GPU-11111111-aaaa, 00000000:01:00.0, NVIDIA A100-SXM4-40GB, 8.0, 40960, 40000, 550.127.05\n"
            "1, GPU-22222222-bbbb, 00000000:02:00.0, NVIDIA A100-SXM4-40GB, 8.0, 40960, 1000, 550.127.05\n")
SMI_SCRIPT = f"""case "$1" in
  --version) echo "DRIVER version      : 550.127.05"; echo "CUDA Version        : 12.4";;
  *) printf '%s' '{TWO_GPUS}';;
esac
"""


@pytest.mark.usefixtures("no_nvml")
def test_probe_falls_back_to_nvidia_smi(tmp_path: Path) -> None:
    env = fake_smi(tmp_path, SMI_SCRIPT)
    hw = probe(environ={**env, "CUDA_VISIBLE_DEVICES": "1"})
    assert hw.source == "nvidia-smi"
    assert (hw.driver, hw.cuda) == ("550.127.05", "12.4")
    (only,) = hw.gpus
    assert (only.index, only.physical_index, only.uuid) == (0, 1, "GPU-22222222-bbbb")
    assert only.memory_free == 1000 * MiB
    assert any("pynvml" in w for w in hw.warnings)


@pytest.mark.usefixtures("no_nvml")
def test_hanging_nvidia_smi_is_killed_at_the_timeout(tmp_path: Path) -> None:
    env = fake_smi(tmp_path, "sleep 30\n")
    start = time.monotonic()
    hw = probe(environ=env, timeout=0.5)
    assert time.monotonic() - start < 5
    assert hw.source == "none" and hw.gpus == ()
    assert any("did not answer in time" in w for w in hw.warnings)


@pytest.mark.usefixtures("no_nvml")
def test_failing_and_old_nvidia_smi(tmp_path: Path) -> None:
    env = fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate' >&2; exit 9\n")
    hw = probe(environ=env)
    assert hw.source == "none"
    assert any("exit 9" in w and "could not communicate" in w for w in hw.warnings)
    old = """case "$1" in
  --query-gpu=*compute_cap*) echo 'Field "compute_cap" is not a valid field to query.'; exit 2;;
  --query-gpu=*) echo '0, GPU-1, 00000000:01:00.0, Tesla V100-SXM2-32GB, 32510, 32000, 470.1';;
  *) exit 1;;
esac
"""
    hw = probe(environ=fake_smi(tmp_path, old))
    assert hw.source == "nvidia-smi"
    assert hw.gpus[0].capability == (7, 0)
    assert hw.cuda is None and any("CUDA version unknown" in w for w in hw.warnings)


@pytest.mark.usefixtures("no_nvml")
def test_no_driver_at_all_is_an_honest_no_gpu(tmp_path: Path) -> None:
    hw = probe(environ={"PATH": str(tmp_path)})
    assert hw.source == "none" and hw.gpus == () and hw.driver is None
    assert any("not found on PATH" in w for w in hw.warnings)


# -- fake NVML ------------------------------------------------------------------------------------

class NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict[str, Any]], *, init_error: str | None = None, cuda: int = 13000,
                mig: dict[int, list[dict[str, Any]]] | None = None) -> types.ModuleType:
    """A stand-in for nvidia-ml-py: handles are ("gpu", i) or ("mig", i, slot)."""
    mod = types.ModuleType("pynvml")
    calls: list[str] = []
    mig = mig or {}

    def rec(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return fn(*args)
        return wrapper

    def info(h: tuple[Any, ...]) -> dict[str, Any]:
        return gpus[h[1]] if h[0] == "gpu" else mig[h[1]][h[2]]

    def value(h: tuple[Any, ...], key: str) -> Any:
        v = info(h)[key]
        if isinstance(v, Exception):
            raise v
        return v

    def init() -> None:
        if init_error:
            raise NVMLError(init_error)

    def mem(h: tuple[Any, ...]) -> Any:
        total, free = value(h, "memory")
        return types.SimpleNamespace(total=total, free=free, used=total - free)

    def handle(i: int) -> tuple[Any, ...]:
        if "lost" in gpus[i]:
            raise NVMLError("GPU is lost")
        return ("gpu", i)

    def mig_handle(h: tuple[Any, ...], slot: int) -> tuple[Any, ...]:
        if slot >= len(mig.get(h[1], [])):
            raise NVMLError("Not Found")
        return ("mig", h[1], slot)

    def mig_mode(h: tuple[Any, ...]) -> tuple[int, int]:
        if h[1] not in mig:
            raise NVMLError("Not Supported")
        return (1, 1)

    funcs: dict[str, Callable[..., Any]] = {
        "nvmlInit": init, "nvmlShutdown": lambda: None,
        "nvmlSystemGetDriverVersion": lambda: b"580.159.04",
        "nvmlSystemGetCudaDriverVersion": lambda: cuda,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": handle,
        "nvmlDeviceGetUUID": lambda h: value(h, "uuid"),
        "nvmlDeviceGetName": lambda h: value(h, "name"),
        "nvmlDeviceGetCudaComputeCapability": lambda h: value(h, "cap"),
        "nvmlDeviceGetMemoryInfo": mem,
        "nvmlDeviceGetPciInfo": lambda h: types.SimpleNamespace(busId=value(h, "bus")),
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetGpuInstanceId": lambda h: value(h, "gi"),
        "nvmlDeviceGetComputeInstanceId": lambda h: value(h, "ci"),
    }
    for name, fn in funcs.items():
        setattr(mod, name, rec(name, fn))
    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    mod.calls = calls  # type: ignore[attr-defined]
    return mod


def nvml_gpu(i: int, name: str = "NVIDIA H100 80GB HBM3", cap: tuple[int, int] = (9, 0)) -> dict[str, Any]:
    return {"uuid": f"GPU-{i}{i}{i}{i}0000-0000", "name": name, "cap": cap,
            "memory": (85520809984, 85017493504 - i), "bus": f"00000000:{i + 1:02X}:00.0"}


def test_nvml_probe_reads_every_fact_and_applies_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([nvml_gpu(0), nvml_gpu(1, "NVIDIA H100 80GB HBM3"), nvml_gpu(2)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = probe(environ={"CUDA_VISIBLE_DEVICES": "2,GPU-1111", "PATH": ""})
    assert hw.source == "nvml"
    assert (hw.driver, hw.cuda) == ("580.159.04", "13.0")
    assert [(g.index, g.physical_index, g.uuid) for g in hw.gpus] == [
        (0, 2, "GPU-22220000-0000"), (1, 1, "GPU-11110000-0000")]
    assert hw.gpus[0].memory_free == 85017493504 - 2
    assert hw.gpus[0].pci_bus_id == "00000000:03:00.0"
    assert hw.gpus[0].capability == (9, 0)
    assert hw.warnings == ()
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"


def test_nvml_errors_become_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = nvml_gpu(1)
    broken["memory"] = NVMLError("Unknown Error")
    lost = {**nvml_gpu(2), "lost": True}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([nvml_gpu(0), broken, lost]))
    hw = probe(environ={"PATH": ""})
    assert [g.physical_index for g in hw.gpus] == [0, 1]
    assert hw.gpus[1].memory_total == 0 and hw.gpus[1].memory_free is None
    assert any("memory of GPU 1" in w and "Unknown Error" in w for w in hw.warnings)
    assert any("GPU 2 skipped" in w and "GPU is lost" in w for w in hw.warnings)


def test_nvml_init_failure_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="Driver Not Loaded"))
    hw = probe(environ=fake_smi(tmp_path, SMI_SCRIPT))
    assert hw.source == "nvidia-smi" and len(hw.gpus) == 2
    assert any("Driver Not Loaded" in w for w in hw.warnings)


@pytest.fixture
def hanging_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """pynvml whose nvmlInit waits until the test ends; the probe's memory of it is undone after."""
    # the package's own name `probe` is the function; the module is reached by its full name
    probe_module = importlib.import_module("pytest_lmbackend.hardware.probing")

    release = threading.Event()
    fake = fake_pynvml([nvml_gpu(0)])
    fake.nvmlInit = lambda: release.wait(60)  # type: ignore[attr-defined]  # a driver that never answers
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(probe_module, "_stuck", None)
    yield release
    release.set()
    stuck = probe_module._stuck
    if stuck is not None:
        stuck.join(5)


def test_a_hanging_nvml_is_given_up_at_its_own_timeout(hanging_nvml: threading.Event, tmp_path: Path) -> None:
    from pytest_lmbackend.hardware.probing import nvml_unresponsive

    env = {**fake_smi(tmp_path, SMI_SCRIPT), "PYTEST_LM_NVML_TIMEOUT": "0.5"}
    start = time.monotonic()
    hw = probe(environ=env, timeout=5)
    assert time.monotonic() - start < 4
    assert hw.source == "nvidia-smi" and len(hw.gpus) == 2
    assert any(w.startswith("NVML: did not answer in time (limit 0.5 s, $PYTEST_LM_NVML_TIMEOUT)")
               for w in hw.warnings)
    assert nvml_unresponsive()
    waiting = [t for t in threading.enumerate() if t.name == "lmbackend-nvml-probe"]
    assert len(waiting) == 1 and waiting[0].daemon  # does not hold the interpreter's exit
    # a second probe neither waits again nor leaves a second thread behind
    start = time.monotonic()
    again = probe(environ=env, timeout=5)
    assert time.monotonic() - start < 0.4
    assert any("still not answering an earlier probe" in w for w in again.warnings)
    assert len([t for t in threading.enumerate() if t.name == "lmbackend-nvml-probe"]) == 1
    hanging_nvml.set()
    waiting[0].join(5)
    assert not nvml_unresponsive()


@pytest.mark.usefixtures("no_nvml")
@pytest.mark.parametrize("value", ["soon", "-3", "nan"])
def test_a_bad_nvml_timeout_is_a_note_and_the_default(value: str) -> None:
    hw = probe(environ={"PATH": "", "PYTEST_LM_NVML_TIMEOUT": value})
    assert any(w.startswith(f"PYTEST_LM_NVML_TIMEOUT must be seconds >= 0, got {value!r}; using 60 s")
               for w in hw.warnings)


def test_nvml_mig_devices_replace_their_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    migs = [{"uuid": f"MIG-{s}aaaaaaa-0000", "name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
             "memory": (20 * GiB, 19 * GiB), "gi": s + 1, "ci": 0} for s in range(2)]
    fake = fake_pynvml([nvml_gpu(0, "NVIDIA A100-SXM4-40GB", (8, 0)), nvml_gpu(1)], mig={0: migs})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = probe(environ={"PATH": ""})
    assert [g.uuid for g in hw.gpus] == ["MIG-0aaaaaaa-0000", "MIG-1aaaaaaa-0000", "GPU-11110000-0000"]
    assert hw.gpus[1].capability == (8, 0) and hw.gpus[1].physical_index == 0
    hw = probe(environ={"PATH": "", "CUDA_VISIBLE_DEVICES": "MIG-1aaa"})
    assert [(g.index, g.uuid, g.memory_total) for g in hw.gpus] == [(0, "MIG-1aaaaaaa-0000", 20 * GiB)]


def test_a_gpu_in_mig_mode_without_mig_devices_is_not_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([nvml_gpu(0), nvml_gpu(1)], mig={0: []})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = probe(environ={"PATH": ""})
    assert [(g.index, g.physical_index) for g in hw.gpus] == [(0, 1)]
    assert any("GPU 0 (NVIDIA H100 80GB HBM3) is in MIG mode with no MIG devices" in w for w in hw.warnings)


def test_mixed_gpus_warn_about_cuda_device_order(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml([nvml_gpu(0), nvml_gpu(1, "NVIDIA A100-SXM4-40GB", (8, 0))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert any("CUDA_DEVICE_ORDER" in w for w in probe(environ={"PATH": ""}).warnings)
    assert probe(environ={"PATH": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}).warnings == ()


def test_probe_never_imports_heavy_packages() -> None:
    code = ("import sys; from pytest_lmbackend.hardware import probe, load_profile; "
            "probe(); load_profile('h100');"
            "print(sorted(m for m in ('torch', 'transformers', 'lmdeploy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# -- profiles -------------------------------------------------------------------------------------

REQUIRED_PROFILES = ["cpu", "v100", "t4", "a10", "rtx3090", "rtx4090", "l40s", "a100-40gb", "a100-80gbx8",
                     "h100", "h100x8", "h200", "b200x8", "rtx5090"]


@pytest.mark.parametrize("name", REQUIRED_PROFILES)
def test_shipped_profiles_load(name: str) -> None:
    hw = load_profile(name, local_packages={})
    assert hw.source == "profile" and hw.profile == name
    assert name in shipped_profiles()
    expected = {"cpu": 0, "a100-80gbx8": 8, "h100x8": 8, "b200x8": 8}.get(name, 1)
    assert len(hw.gpus) == expected
    assert len({g.uuid for g in hw.gpus}) == expected
    assert all(g.memory_total > 8 * GiB and g.capability >= (7, 0) for g in hw.gpus)
    if hw.gpus:
        assert hw.cuda is not None and hw.driver is not None


def test_repeat_suffix_and_capabilities() -> None:
    hw = load_profile("A10x4", local_packages={})
    assert [g.index for g in hw.gpus] == [0, 1, 2, 3]
    assert {g.name for g in hw.gpus} == {"NVIDIA A10"}
    assert load_profile("rtx3090", local_packages={}).gpus[0].capability == (8, 6)  # not "rt" x 3090
    assert load_profile("h100", local_packages={}).gpus[0].memory_total == 85520809984
    with pytest.raises(ProfileError, match="no such profile"):
        load_profile("rtx3091")
    with pytest.raises(ProfileError, match="1 to"):
        load_profile("h100x0")


def test_profiles_without_packages_report_this_interpreter() -> None:
    hw = load_profile("h100")
    assert hw.packages.get("pytest") is not None


def test_profile_files_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "runner.toml"
    toml.write_text("""
name = "ci-runner"
driver = "550.1"
cuda = 12.4
backends = ["pytorch"]
cuda_visible_devices = "1"
[packages]
lmdeploy = "0.18.0"
flash_attn = "2.7.4"
[[gpus]]
name = "NVIDIA L40S"
capability = "8.9"
memory_total = "46068MiB"
memory_free = 1000000000
count = 2
""")
    hw = load_profile(str(toml))
    assert hw.profile == "ci-runner" and hw.cuda == "12.4" and hw.backends == ("pytorch",)
    assert [(g.index, g.physical_index, g.memory_free) for g in hw.gpus] == [(0, 1, 10**9)]
    toml.write_text(toml.read_text().replace('cuda_visible_devices = "1"', 'cuda_visible_devices = "1,7"'))
    (note,) = load_profile(str(toml)).warnings
    assert note.startswith("profile 'ci-runner': cuda_visible_devices='1,7': ")  # not this machine's env
    assert dict(hw.packages) == {"lmdeploy": "0.18.0", "flash-attn": "2.7.4"}
    js = tmp_path / "one.json"
    js.write_text(json.dumps({"cuda": "13.0", "gpus": [{"name": "X", "capability": [9, 0],
                                                         "memory_total": 80 * GiB, "uuid": "GPU-mine"}],
                              "packages": {}}))
    hw = load_profile(str(js))
    assert hw.profile == "one" and hw.gpus[0].uuid == "GPU-mine" and dict(hw.packages) == {}


@pytest.mark.parametrize(("text", "field", "message"), [
    ("gpus = [{name = 'X', capability = '8.0', memory_total = '40GiB', colour = 'red'}]", "gpus[0].colour",
     "unknown key"),
    ("gpus = [{name = 'X', capability = 'eight', memory_total = '40GiB'}]", "gpus[0].capability", "eight"),
    ("gpus = [{name = 'X', capability = '8.0'}]", "gpus[0].memory_total", "missing"),
    ("gpus = [{name = 'X', capability = '8.0', memory_total = '40 parsecs'}]", "gpus[0].memory_total",
     "parsecs"),
    ("gpus = [{name = 'X', capability = '8.0', memory_total = '4GiB', memory_free = '5GiB'}]",
     "gpus[0].memory_free", "larger"),
    ("gpus = [{name = 'X', capability = '8.0', memory_total = '4GiB', count = 0}]", "gpus[0].count", "1 to"),
    ("gpu = []", "gpu", "unknown key"),
    ("ascend = 'yes'", "ascend", "true or false"),
    ("packages = ['lmdeploy']", "packages", "map package names"),
    ("backends = 'pytorch'", "backends", "list of backend names"),
    ("cuda = 'banana'", "cuda", "must be a version"),
    ("cuda = -1", "cuda", "must be a version"),
    ("driver = 'v550'", "driver", "must be a version"),
    ("nodes = 0", "nodes", "whole number of nodes"),
    ("nodes = '2'", "nodes", "whole number of nodes"),
    ("nodes = true", "nodes", "whole number of nodes"),
    ("nodes = 2.0", "nodes", "whole number of nodes"),
    ("nodes = 100000", "nodes", "from 1 to 4096"),
    ("gpus = [{name = 'X', capability = '8.0', memory_total = 1, uuid = 'GPU-a'},"
     " {name = 'Y', capability = '8.0', memory_total = 1, uuid = 'gpu-A'}]", "gpus.uuid",
     "given to GPU 0 and GPU 1"),
])
def test_bad_profile_files_name_the_file_and_field(tmp_path: Path, text: str, field: str,
                                                   message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), local_packages={})
    assert info.value.path == str(path) and info.value.field == field
    assert str(path) in str(info.value) and field in str(info.value) and message in str(info.value)


def test_a_cuda_version_written_as_a_whole_number_is_that_major_release(tmp_path: Path) -> None:
    """cuda = 13 in a profile is CUDA 13.0: LMDeploy >= 0.11 builds sm70 only below it."""
    for written in ("13", "'13'", "'13.0'"):
        path = tmp_path / "v100-cu13.toml"
        path.write_text(f"cuda = {written}\ngpus = [{{name = 'V', capability = '7.0', memory_total = 1}}]")
        hw = load_profile(str(path), local_packages={})
        missing = turbomind_kernels_missing(hw.gpus[0].capability, hw.cuda, lmdeploy="0.18.0")
        assert missing is not None and "only with CUDA < 13.0" in missing, written
    assert turbomind_kernels_missing((7, 0), "12", lmdeploy="0.18.0") is None
    assert turbomind_kernels_missing((9, 0), "11", lmdeploy="0.18.0") is not None  # sm90 needs 11.8


@pytest.mark.parametrize(("spec", "count", "name"), [
    ("a100-80gbx4", 4, "NVIDIA A100-SXM4-80GB"), ("b200x2", 2, "NVIDIA B200"),
    ("h100x3", 3, "NVIDIA H100 80GB HBM3"),
])
def test_xn_repeats_the_kind_of_a_shipped_profile(spec: str, count: int, name: str) -> None:
    hw = load_profile(spec, local_packages={})
    assert len(hw.gpus) == count and {g.name for g in hw.gpus} == {name}


def test_xn_on_a_name_that_already_counts_gpus_is_refused() -> None:
    with pytest.raises(ProfileError, match="'a100-80gbx8' already names 8 GPUs; for 2 of its kind "
                                           "say a100-80gbx2"):
        load_profile("a100-80gbx8x2", local_packages={})


def test_shipped_names_win_over_files_of_the_same_name(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "h100").write_text("gpus = []")
    (tmp_path / "myrunner").write_text("gpus = [{name = 'X', capability = '8.0', memory_total = 1}]")
    assert len(load_profile("h100", local_packages={}).gpus) == 1
    assert load_profile("myrunner", local_packages={}).gpus[0].name == "X"


def test_unreadable_profile_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("gpus = [")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(broken))
    js = tmp_path / "list.json"
    js.write_text("[1, 2]")
    with pytest.raises(ProfileError, match="object/table at the top"):
        load_profile(str(js))
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.toml"))


def test_probe_takes_the_profile_from_the_environment() -> None:
    hw = probe(environ={"PYTEST_LM_HARDWARE": "t4"})
    assert hw.source == "profile" and hw.profile == "t4" and len(hw.gpus) == 1
    assert probe(profile="cpu", environ={"PYTEST_LM_HARDWARE": "t4"}).profile == "cpu"
    with pytest.raises(ProfileError, match="several profiles"):
        probe(profile="t4,h100")
    assert [h.profile for h in probe_many(environ={"PYTEST_LM_HARDWARE": "t4, h100x2"})] == ["t4", "h100x2"]
    assert [h.profile for h in load_profiles("a10,a10x2")] == ["a10", "a10x2"]


def test_probe_sees_a_profile_through_cuda_visible_devices() -> None:
    # as it sees real GPUs: a pinned xdist worker, or a job given some of a runner's GPUs, holds only those
    hw = probe(profile="h100x4", environ={"CUDA_VISIBLE_DEVICES": "2,0"})
    assert [(g.index, g.physical_index) for g in hw.gpus] == [(0, 2), (1, 0)]
    uuid = load_profile("h100x4").gpus[3].uuid
    by_uuid = probe(profile="h100x4", environ={"CUDA_VISIBLE_DEVICES": uuid})
    assert [g.physical_index for g in by_uuid.gpus] == [3]
    hidden = probe(profile="h100x4", environ={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.gpus == () and any("all 4 GPU(s) hidden" in w for w in hidden.warnings)
    assert len(probe(profile="h100x4", environ={}).gpus) == 4
    # a plan's columns describe the runners the profiles name, whatever this shell hides
    assert [len(h.gpus) for h in probe_many(profile="h100x4", environ={"CUDA_VISIBLE_DEVICES": ""})] == [4]


def test_hardware_is_frozen_and_hashable() -> None:
    hw = load_profile("h100", local_packages={"torch": "2.11.0"})
    with pytest.raises(AttributeError):
        hw.cuda = "12.0"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hw.packages["torch"] = "1.0"  # type: ignore[index]
    assert hash(hw) == hash(load_profile("h100", local_packages={"torch": "2.11.0"}))
    assert Hardware().source == "none"
    assert pickle.loads(pickle.dumps(hw)) == hw
    assert copy.deepcopy(hw) == hw and dataclasses.replace(hw, cuda="12.8").packages == hw.packages
    # every field survives a pickle (xdist hands it to workers), those added last included
    stated = dataclasses.replace(hw, packages_stated=True, nodes=4)
    assert pickle.loads(pickle.dumps(stated)) == stated and hash(stated) != hash(hw)


def test_a_profile_states_how_many_nodes_its_job_spans(tmp_path: Path) -> None:
    assert load_profile("h100x8", local_packages={}).nodes == 1
    path = tmp_path / "two.toml"
    path.write_text("nodes = 2\n[[gpus]]\nname = 'X'\ncapability = '9.0'\nmemory_total = 1\ncount = 8\n")
    assert load_profile(str(path), local_packages={}).nodes == 2


@pytest.mark.parametrize(("value", "nodes", "noted"), [
    (None, 1, False), ("", 1, False), ("2", 2, False), (" 4 ", 4, False), ("0", 1, True), ("two", 1, True),
    ("-1", 1, True), ("٢", 1, True), ("99999", 1, True),
])
def test_a_real_job_states_its_nodes_in_the_environment(tmp_path: Path, no_nvml: None, value: str | None,
                                                         nodes: int, noted: bool) -> None:
    env = {"PATH": str(tmp_path)} | ({} if value is None else {"PYTEST_LM_NODES": value})
    hw = probe(environ=env)
    assert hw.nodes == nodes
    assert any("PYTEST_LM_NODES" in w for w in hw.warnings) is noted
    # a profile describes its own job: the variable is not applied to it
    assert probe(profile="h100x8", environ=env).nodes == 1


# -- packages and Ascend --------------------------------------------------------------------------

def test_installed_distributions_from_folder_names(tmp_path: Path) -> None:
    (tmp_path / "Flash_Attn-2.7.4.dist-info").mkdir()
    (tmp_path / "old_pkg-1.0-py3.11.egg-info").mkdir()
    legacy = tmp_path / "legacy.egg-info"
    legacy.mkdir()
    (legacy / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: legacy\nVersion: 3.2\n\nbody\n")
    (tmp_path / "not_a_dist").mkdir()
    found = installed_distributions([str(tmp_path), str(tmp_path / "missing")])
    assert found == {"flash-attn": "2.7.4", "old-pkg": "1.0", "legacy": "3.2"}


def test_turbomind_extension_found_without_importing_lmdeploy(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "lmdeploy"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('lmdeploy must not be imported')\n")
    (tmp_path / "lmdeploy-0.18.0.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lmdeploy", raising=False)
    assert lmdeploy_locations() == [str(pkg)]
    assert "lmdeploy.turbomind" not in read_packages([str(tmp_path)])
    (pkg / "lib" / f"_turbomind{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"\x7fELF")
    packages = read_packages([str(tmp_path)])
    assert packages["lmdeploy"] == "0.18.0" and packages["lmdeploy.turbomind"] == "0.18.0"
    assert "lmdeploy" not in sys.modules


# Where each LMDeploy wheel puts the TurboMind module (its RECORD): lib/ up to 0.17.0, turbomind/ since.
WHEEL_LAYOUTS = {
    "0.7.3": "lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so",
    "0.10.2": "lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so",
    "0.14.0": "lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so",
    "0.16.0": "lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so",
    "0.17.0": "lmdeploy/lib/_turbomind.cpython-311-x86_64-linux-gnu.so",
    "0.18.0": "lmdeploy/turbomind/_turbomind.cpython-311-x86_64-linux-gnu.so",
}
# besides it, files a check by name alone could take for it
NEIGHBOURS = ("lmdeploy/turbomind/lib/libturbomind_nccl_stub.so", "lmdeploy/turbomind/turbomind.py",
              "lmdeploy/lib/_xgrammar.cpython-311-x86_64-linux-gnu.so",
              "lmdeploy/lib/libturbomind_nccl_stub.so")


@pytest.mark.parametrize("release", list(WHEEL_LAYOUTS))
def test_the_turbomind_extension_is_found_in_every_wheel_layout(tmp_path: Path, release: str) -> None:
    for path in (WHEEL_LAYOUTS[release], *NEIGHBOURS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    suffixes = [".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so"]  # a CPython 3.11 on x86_64 Linux
    found = turbomind_extension([str(tmp_path / "lmdeploy")], suffixes)
    assert found == tmp_path / WHEEL_LAYOUTS[release]
    (tmp_path / WHEEL_LAYOUTS[release]).unlink()
    assert turbomind_extension([str(tmp_path / "lmdeploy")], suffixes) is None  # the neighbours are not it
    # a module built for another Python is not one this interpreter (nor LMDeploy in it) could load
    (tmp_path / WHEEL_LAYOUTS[release].replace("311", "310")).write_bytes(b"")
    assert turbomind_extension([str(tmp_path / "lmdeploy")], suffixes) is None


def test_the_real_environments_agree_with_their_records() -> None:
    """Each LMDeploy environment the differential tests built: its RECORD names the module, and the
    package scan finds exactly that file."""
    from pytest_lmbackend.oracle.venv import oracle_home

    checked = []
    for venv in sorted((oracle_home() / "venvs").glob("lmdeploy-*")):
        records = list(venv.glob("lib/python*/site-packages/lmdeploy-*.dist-info/RECORD"))
        if not records:
            continue
        site = records[0].parents[1]
        listed = [line.split(",")[0] for line in records[0].read_text().splitlines()
                  if line.split(",")[0].split("/")[-1].startswith("_turbomind.")]
        version = records[0].parent.name[len("lmdeploy-"):-len(".dist-info")]
        assert listed == [WHEEL_LAYOUTS.get(version, listed[0] if listed else "")], (version, listed)
        packages = read_packages([str(site)], locate_lmdeploy=lambda s=site: [str(s / "lmdeploy")])
        assert packages.get("lmdeploy.turbomind") == version, version
        checked.append(version)
    if not checked:
        pytest.skip("no LMDeploy environment is built here (python -m pytest_lmbackend.oracle setup RELEASE)")


def test_detect_ascend() -> None:
    def nowhere(name: str, path: str | None = None) -> str | None:
        return None

    assert detect_ascend({"ASCEND_HOME_PATH": "/opt"}, which=nowhere, exists=lambda p: False) is False
    assert detect_ascend({}, which=lambda n, path=None: "/usr/bin/npu-smi", exists=lambda p: False) is True
    assert detect_ascend({}, which=nowhere, exists=lambda p: p == "/dev/davinci_manager") is True


def test_real_probe_on_this_machine_never_raises() -> None:
    hw = probe(environ=dict(os.environ), timeout=2.0)
    assert hw.source in ("nvml", "nvidia-smi", "none")
    if hw.source == "none":
        assert hw.gpus == () and hw.warnings


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_during_nvidia_smi_kills_it_and_what_it_started(tmp_path: Path) -> None:
    """The tool runs in its own session (so a timeout can kill its children); Ctrl-C reaches only
    the terminal's group, so the probe must kill the tool's group on that way out too."""
    import signal
    import subprocess

    pids = tmp_path / "pids"
    fake_smi(tmp_path, f"sleep 600 &\necho $$ $! > {pids}\nwait\n")
    code = ("import os, time; from pytest_lmbackend.hardware.smi import run_tool\n"
            f"run_tool([{str(tmp_path / 'nvidia-smi')!r}], time.monotonic() + 600, 'the query')\n")
    probe_process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                                     start_new_session=True)
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    tool, child = map(int, pids.read_text().split())
    os.killpg(probe_process.pid, signal.SIGINT)
    _, err = probe_process.communicate(timeout=30)
    assert b"KeyboardInterrupt" in err

    def gone(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 10
    while not (gone(tool) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(tool) and gone(child)


# -- profiles equipped with LMDeploy ------------------------------------------------------------------

def availability(spec: str) -> dict[str, str | None]:
    from pytest_lmbackend.backends import build_registry, facts_from_hardware

    return dict(build_registry().availability(facts_from_hardware(load_profile(spec, local_packages={}))))


def test_plus_lmdeploy_says_what_an_equipped_runner_runs() -> None:
    bare = availability("h100x8")
    assert bare["turbomind"] is not None and bare["pytorch"] is not None  # no LMDeploy stated anywhere
    assert availability("h100x8+lmdeploy") == {"turbomind": None, "pytorch": None, "transformers": None}
    hw = load_profile("h100x8+LMDeploy", local_packages={"six": "1.0"})
    assert hw.profile == "h100x8+lmdeploy" and hw.packages_stated and len(hw.gpus) == 8
    assert dict(hw.packages) == {"lmdeploy": "", "lmdeploy.turbomind": "", "torch": "", "transformers": ""}
    pytorch_only = availability("h100x8+lmdeploy-pytorch")
    assert pytorch_only["pytorch"] is None
    assert pytorch_only["turbomind"] == ("backend turbomind needs LMDeploy's TurboMind extension; lmdeploy "
                                         "(version not stated) is installed without it")


def test_plus_lmdeploy_with_a_version_judges_that_release() -> None:
    hw = load_profile("rtx5090+lmdeploy=0.9.0", local_packages={})
    assert hw.profile == "rtx5090+lmdeploy=0.9.0" and hw.packages["lmdeploy.turbomind"] == "0.9.0"
    why = availability("rtx5090+lmdeploy=0.9.0")["turbomind"]
    assert why is not None and "LMDeploy 0.9.0" in why and "sm120" in why  # sm120a arrived in 0.10.0
    assert availability("rtx5090+lmdeploy=0.10.0")["turbomind"] is None


def test_plus_lmdeploy_on_ascend_is_its_ascend_runtime_without_turbomind() -> None:
    hw = load_profile("ascend-910bx8+lmdeploy", local_packages={})
    assert set(hw.packages) == {"lmdeploy", "torch", "transformers", "torch-npu", "dlinfer-ascend"}
    got = availability("ascend-910bx8+lmdeploy")
    assert got["pytorch"] is None and got["turbomind"] is not None and "CUDA-only" in got["turbomind"]


def test_plus_lmdeploy_keeps_what_a_profile_file_states(tmp_path: Path) -> None:
    path = tmp_path / "ci.toml"
    path.write_text("[packages]\nflash_attn = '2.7.4'\ntorch = '2.8.0'\n[[gpus]]\nname = 'NVIDIA A10'\n"
                    "capability = '8.6'\nmemory_total = '24GiB'\n")
    hw = load_profile(f"{path}+lmdeploy=0.18.0", local_packages={})
    assert dict(hw.packages) == {"flash-attn": "2.7.4", "torch": "2.8.0", "transformers": "",
                                 "lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0"}
    assert hw.profile == "ci+lmdeploy=0.18.0"


@pytest.mark.parametrize(("spec", "message"), [
    ("h100+vllm", "'+vllm' is not known equipment; say +lmdeploy"),
    ("h100+lmdeploy=latest", "'+lmdeploy=latest' is not known equipment"),
    ("h100+lmdeploy+lmdeploy", "is not known equipment"),
    ("h1000+lmdeploy", "hardware profile 'h1000': no such profile"),
])
def test_bad_equipment_is_named(spec: str, message: str) -> None:
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(spec, local_packages={})


def test_a_package_stated_without_a_version_meets_no_version_range() -> None:
    from pytest_lmbackend.requirements import evaluate, parse_requirement

    hw = load_profile("h100+lmdeploy", local_packages={})
    assert evaluate(parse_requirement((), {"packages": ["torch", "lmdeploy"]}, where="t"), hw) is None
    skip = evaluate(parse_requirement((), {"packages": "torch>=2.5"}, where="t"), hw)
    assert skip is not None and skip.reason == ("needs package torch>=2.5; profile 'h100+lmdeploy' states "
                                                "torch without a version")
    from pytest_lmbackend.report import text_lines

    packages = next(line for line in text_lines(hw) if line.startswith("packages:"))
    assert "lmdeploy (version not stated) (TurboMind extension present)" in packages
    assert "torch (version not stated)" in packages


def test_the_plan_of_an_equipped_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p="""
        import pytest

        @pytest.mark.lm_backend("turbomind")
        def test_tm(lm_backend): pass
        """)
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=h100x8+lmdeploy")
    result.stdout.fnmatch_lines(["test_p.py::test_tm *run[[]turbomind[]]*"])
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=h100x8+lmdeploy-pytorch")
    result.stdout.fnmatch_lines(["test_p.py::test_tm *skip*"])


def test_a_runner_holds_a_package_stated_without_a_version_at_any_version() -> None:
    from pytest_lmbackend.fleet.check import check_packages

    claimed = load_profile("h100+lmdeploy", local_packages={})
    installed = {"lmdeploy": "0.14.0", "torch": "2.8.0", "transformers": "4.57.0"}
    actual = load_profile("h100", local_packages=installed)
    assert check_packages(claimed, actual, ()) == "packages: LMDeploy's TurboMind extension: not installed"
    missing = load_profile("h100", local_packages={"torch": "2.8.0"})
    assert check_packages(claimed, missing, ()) == (
        "packages: transformers (version not stated): not installed; lmdeploy (version not stated): not "
        "installed; LMDeploy's TurboMind extension: not installed")
