"""Our ctypes binding of NVML against a stand-in C library (tests/fake_nvml.c) and against pynvml.

The stand-in is built with the machine's C compiler, so the calls cross a real C ABI: argument
types, pointer arguments, structure layouts and error codes are exercised as with the driver's
library. pynvml reading the same stand-in (in a subprocess, where the loader finds it as
``libnvidia-ml.so.1``) must give the probe exactly the facts our binding gives it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.hardware import libnvml, probe

SOURCE = Path(__file__).with_name("fake_nvml.c")
# no nvidia-smi to fall back to; the two kinds of GPU in the stand-in numbered in bus order
QUIET = {"PATH": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


@pytest.fixture(scope="session")
def fake_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in built as ``libnvidia-ml.so.1`` in a folder of its own."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the ctypes binding looks for libnvidia-ml.so.1, a Linux library")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or $CC) to build the NVML stand-in tests/fake_nvml.c")
    folder = tmp_path_factory.mktemp("fake-nvml")
    target = folder / libnvml.LIBRARY
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O0", "-Wall", "-Werror", "-o", str(target),
                            str(SOURCE)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"{compiler} could not build {SOURCE.name}:\n{built.stderr}"
    return target


def state(path: Path) -> tuple[int, int, int]:
    """(inits, shutdowns, calls before init) so far in this process's copy of the stand-in."""
    lib = ctypes.CDLL(str(path))  # the same loaded copy the binding uses
    values = [ctypes.c_int() for _ in range(3)]
    lib.fakeNvmlState(*(ctypes.byref(v) for v in values))
    return values[0].value, values[1].value, values[2].value


@pytest.fixture
def use_fake(fake_library: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(libnvml, "LIBRARY", str(fake_library))
    monkeypatch.delenv("FAKE_NVML_SCENARIO", raising=False)
    return fake_library


def facts(hw: Any) -> list[tuple[Any, ...]]:
    return [(g.index, g.physical_index, g.uuid, g.name, g.capability, g.memory_total, g.memory_free,
             g.pci_bus_id) for g in hw.gpus]


# -- layouts: the same as nvidia-ml-py's --------------------------------------------------------------

def offsets(structure: Any) -> list[tuple[str, int, int]]:
    return [(name, getattr(structure, name).offset, getattr(structure, name).size)
            for name, *_ in structure._fields_]


def test_structures_and_buffers_match_pynvml() -> None:
    pynvml = pytest.importorskip("pynvml")
    assert offsets(libnvml.Memory) == offsets(pynvml.c_nvmlMemory_t)
    assert ctypes.sizeof(libnvml.Memory) == ctypes.sizeof(pynvml.c_nvmlMemory_t)
    assert offsets(libnvml.PciInfo) == offsets(pynvml.nvmlPciInfo_t)
    assert ctypes.sizeof(libnvml.PciInfo) == ctypes.sizeof(pynvml.nvmlPciInfo_t)
    assert libnvml.UUID_BUFFER == pynvml.NVML_DEVICE_UUID_V2_BUFFER_SIZE
    assert libnvml.NAME_BUFFER == pynvml.NVML_DEVICE_NAME_V2_BUFFER_SIZE
    assert libnvml.DRIVER_VERSION_BUFFER == pynvml.NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE


# -- the binding in this process ------------------------------------------------------------------

def test_probe_reads_every_fact_through_ctypes(use_fake: Path) -> None:
    before = state(use_fake)
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "ctypes"})
    assert hw.source == "nvml" and hw.warnings == ()
    assert (hw.driver, hw.cuda) == ("580.159.04", "13.0")
    # the A100 in MIG mode is replaced by its two MIG devices (slot 1 is empty), numbered in place
    assert facts(hw) == [
        (0, 0, "GPU-f598008f-b903-cab2-defc-eed33a0bb39a", "NVIDIA H100 80GB HBM3", (9, 0),
         85520809984, 85017493504, "00000000:00:06.0"),
        (1, 1, "MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000001", "NVIDIA A100-SXM4-40GB MIG 3g.20gb", (8, 0),
         20937965568, 20600000000, "00000000:41:00.0"),
        (2, 1, "MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000002", "NVIDIA A100-SXM4-40GB MIG 2g.10gb", (8, 0),
         10468982784, 10300000000, "00000000:41:00.0"),
    ]
    inits, shutdowns, early = (a - b for a, b in zip(state(use_fake), before, strict=True))
    assert (inits, shutdowns, early) == (1, 1, 0), "one init, one shutdown, no call before init"


def test_auto_takes_ctypes_and_leaves_pynvml_unimported(use_fake: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    hw = probe(environ={**QUIET, "CUDA_VISIBLE_DEVICES": "MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000002,0"})
    assert [(g.index, g.physical_index, g.uuid[:4]) for g in hw.gpus] == [(0, 1, "MIG-"), (1, 0, "GPU-")]
    assert "pynvml" not in sys.modules


def test_driver_not_loaded_is_a_warning_and_an_honest_no_gpu(use_fake: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NVML_SCENARIO", "driver-not-loaded")
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "ctypes"})
    assert hw.source == "none" and hw.gpus == ()
    assert any("cannot initialise" in w and "Driver Not Loaded" in w and "error 9" in w for w in hw.warnings)


def test_a_lost_gpu_is_skipped_with_the_reason(use_fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NVML_SCENARIO", "lost-gpu")
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "ctypes"})
    assert [g.name for g in hw.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert any("GPU 1 skipped" in w and "GPU is lost" in w for w in hw.warnings)


def test_mig_mode_pending_a_reset_is_not_mig_yet(use_fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Current mode off, pending on: CUDA still sees the whole GPU until it is reset."""
    monkeypatch.setenv("FAKE_NVML_SCENARIO", "mig-pending")
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "ctypes"})
    assert [(g.uuid[:4], g.name) for g in hw.gpus] == [("GPU-", "NVIDIA H100 80GB HBM3"),
                                                       ("GPU-", "NVIDIA A100-SXM4-40GB")]


HANG = textwrap.dedent("""
    import json, threading, time
    from pytest_lmbackend.hardware import probe
    start = time.monotonic()
    hw = probe()
    waiting = [t for t in threading.enumerate() if t.name == "lmbackend-nvml-probe"]
    print(json.dumps({"s": time.monotonic() - start, "source": hw.source, "warnings": list(hw.warnings),
                      "waiting": [t.daemon for t in waiting]}))
""")


def test_a_hanging_driver_is_left_waiting_in_a_daemon_thread(fake_library: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTEST_LM_HARDWARE")}
    env.update(QUIET, LD_LIBRARY_PATH=str(fake_library.parent), PYTEST_LM_NVML="ctypes",
               PYTEST_LM_NVML_TIMEOUT="0.5", FAKE_NVML_SCENARIO="hang-init")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", HANG], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["s"] < 2.5 and result["source"] == "none"
    assert result["waiting"] == [True]  # still inside nvmlInit, and a daemon: the exit did not wait
    assert any("did not answer in time (limit 0.5 s" in w for w in result["warnings"])
    assert time.monotonic() - start < 10


def test_errors_carry_nvml_text_code_and_function(use_fake: Path) -> None:
    nvml = libnvml.load()
    with pytest.raises(libnvml.NVMLError) as info:
        nvml.nvmlDeviceGetCount()  # before init
    assert (info.value.code, info.value.function) == (1, "nvmlDeviceGetCount_v2")
    assert str(info.value) == "Uninitialized (NVML error 1 in nvmlDeviceGetCount_v2)"
    nvml.nvmlInit()
    try:
        with pytest.raises(libnvml.NVMLError, match="Not Supported"):
            nvml.nvmlDeviceGetMigMode(nvml.nvmlDeviceGetHandleByIndex(0))
        with pytest.raises(libnvml.NVMLError, match="Invalid Argument"):
            nvml.nvmlDeviceGetHandleByIndex(7)
    finally:
        nvml.nvmlShutdown()


def test_a_library_without_nvml_calls_falls_back_to_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("libc.so.6 stands in for a library that lacks NVML's calls")
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("no libc.so.6 (not glibc) to stand in for a library without NVML's calls")
    monkeypatch.setattr(libnvml, "LIBRARY", "libc.so.6")
    with pytest.raises(libnvml.LibraryMissing, match="has no nvmlInit_v2"):
        libnvml.load()
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("pynvml was asked"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = probe(environ={**QUIET})
    assert any("pynvml was asked" in w for w in hw.warnings)
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "ctypes"})
    assert any("has no nvmlInit_v2" in w for w in hw.warnings)
    assert not any("pynvml was asked" in w for w in hw.warnings)


def test_no_library_on_linux_does_not_try_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynvml would load the same file name and fail the same way: its import is not paid for it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("elsewhere the probe leaves the library search to pynvml")
    monkeypatch.setattr(libnvml, "LIBRARY", "libnvidia-ml-absent-in-tests.so.1")
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("pynvml was asked"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = probe(environ={**QUIET})
    assert hw.source == "none"
    assert any(w.startswith("NVML: libnvidia-ml-absent-in-tests.so.1: cannot open shared object file")
               for w in hw.warnings), hw.warnings
    assert not any("pynvml was asked" in w for w in hw.warnings)
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "pynvml"})
    assert any("pynvml was asked" in w for w in hw.warnings)


def test_a_bad_binding_name_is_a_clear_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnvml, "LIBRARY", "libnvidia-ml-absent-in-tests.so.1")
    hw = probe(environ={**QUIET, "PYTEST_LM_NVML": "cuda"})
    assert hw.source == "none"
    assert any("PYTEST_LM_NVML='cuda' is not one of auto, ctypes, pynvml" in w for w in hw.warnings)


# -- the binding against pynvml, both on the stand-in ------------------------------------------------

READ = textwrap.dedent("""
    import json, sys
    from pytest_lmbackend.hardware import probe
    hw = probe()
    print(json.dumps({"source": hw.source, "driver": hw.driver, "cuda": hw.cuda,
                      "warnings": list(hw.warnings),
                      "gpus": [[g.index, g.physical_index, g.uuid, g.name, list(g.capability), g.memory_total,
                                g.memory_free, g.pci_bus_id] for g in hw.gpus],
                      "pynvml_imported": "pynvml" in sys.modules}))
""")


def read_in_subprocess(folder: Path, binding: str, visible: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PYTEST_LM_HARDWARE")}
    env.update(QUIET, LD_LIBRARY_PATH=str(folder), PYTEST_LM_NVML=binding)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run([sys.executable, "-c", READ], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# the old MIG form names GPU and compute instance ids: right only if both calls were read right
OLD_MIG_FORM = "MIG-GPU-2b7c1e44-0d5a-4c1f-9e0b-7a1d2c3e4f50/2/1"


@pytest.mark.parametrize("visible", [None, "", "1", "MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000002,0", "GPU-f598",
                                     OLD_MIG_FORM])
def test_ctypes_and_pynvml_agree_on_the_same_library(fake_library: Path, visible: str | None) -> None:
    pytest.importorskip("pynvml")
    ours = read_in_subprocess(fake_library.parent, "ctypes", visible)
    theirs = read_in_subprocess(fake_library.parent, "pynvml", visible)
    assert ours["source"] == theirs["source"] == "nvml", (ours["warnings"], theirs["warnings"])
    assert (ours["pynvml_imported"], theirs["pynvml_imported"]) == (False, True)
    for key in ("driver", "cuda", "gpus", "warnings"):
        assert ours[key] == theirs[key], key
    expected = {None: 3, "": 0, "1": 1, "GPU-f598": 1, OLD_MIG_FORM: 1}.get(visible, 2)  # 2: MIG + GPU 0
    assert len(ours["gpus"]) == expected
    if visible == OLD_MIG_FORM:
        assert ours["gpus"][0][2] == "MIG-5c3d2e1f-aaaa-5bbb-8ccc-000000000002"
