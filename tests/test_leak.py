"""GPU memory left by a test: parsing, the comparison, and warn/fail runs against a fake NVML reading."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from pytest_lmbackend import leak

MiB = 1 << 20


@pytest.mark.parametrize(("text", "expected"), [("64MiB", 64 * MiB), ("1GB", 10**9), ("100", 100),
                                                ("1.5 GiB", 3 * 512 * MiB)])
def test_threshold_sizes(text: str, expected: int) -> None:
    assert leak.parse_threshold(text) == expected


@pytest.mark.parametrize("text", ["lots", "-5MiB", "12 parsecs"])
def test_bad_threshold_names_the_option(pytester: pytest.Pytester, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="memory size"):
        leak.parse_threshold(text)
    # argparse names the option, the settings reader the ini key
    for args, where in (([f"--lm-leak-threshold={text}"], "argument --lm-leak-threshold"),
                        (["-o", f"lm_leak_threshold={text}", "--lm-leak=warn"], "ini lm_leak_threshold")):
        result = pytester.runpytest("-p", "no:xdist", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*{where}: *memory size*"])


def test_modes() -> None:
    assert [leak.parse_mode(m) for m in ("OFF", "warn", " fail ")] == ["off", "warn", "fail"]
    with pytest.raises(argparse.ArgumentTypeError, match="off, warn, fail"):
        leak.parse_mode("loud")


def test_only_growth_above_the_threshold_counts() -> None:
    before = {"a": 1000 * MiB, "b": 1000 * MiB, "c": 0}
    after = {"a": 1064 * MiB, "b": 1065 * MiB, "c": 5 * MiB}
    found = leak.leftovers(before, after, 64 * MiB, {"b": "GPU 1 (Fake)"})
    assert found == (leak.Leftover("GPU 1 (Fake)", 1000 * MiB, 1065 * MiB),)
    message = leak.leak_message("t.py::test_x", found, 64 * MiB, 0.25)
    assert message.splitlines() == [
        "t.py::test_x left GPU memory in use (threshold 64 MiB, measured 0.25 s after teardown):",
        "  GPU 1 (Fake): 65 MiB more in use (1000 MiB before, 1.04 GiB after)",
    ]


def test_importing_never_imports_torch() -> None:
    code = "import sys, pytest_lmbackend.leak, pytest_lmbackend.isolation, pytest_lmbackend.xdist; " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


FAKE_NVML = """
import pytest

BASE = 10 << 30
USED = {}  # GPU index -> bytes the tests put there
# asynchronous releases: [reads left before it lands, GPU index, bytes]; counted in reads, not seconds,
# so the outcome does not depend on how loaded the machine is
PENDING = []


class FakeReader:
    def used(self, gpus):
        for release in list(PENDING):
            release[0] -= 1
            if release[0] <= 0:
                USED[release[1]] = USED.get(release[1], 0) + release[2]
                PENDING.remove(release)
        return {g.uuid: BASE + USED.get(g.index, 0) for g in gpus}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    checker = config.pluginmanager.get_plugin("lmbackend_leak_checker")
    if checker is not None:
        checker.reader = FakeReader()
"""

SUITE = """
import pytest
from conftest import PENDING, USED

MiB = 1 << 20


def grow(index, amount):
    USED[index] = USED.get(index, 0) + amount


@pytest.mark.lm_requires(gpus=1)
def test_leaky():
    grow(0, 256 * MiB)


@pytest.mark.gpu_num_2
def test_leaks_on_second():
    grow(1, 100 * MiB)


@pytest.mark.lm_requires(gpus=1)
def test_clean():
    grow(0, 512 * MiB)
    grow(0, -512 * MiB)


@pytest.mark.lm_requires(gpus=1)
def test_released_late():
    grow(0, 300 * MiB)
    # lands on the 6th NVML read after this point: later than the checker's immediate re-reads
    # (--lm-leak-wait=0), well within the polling of the default one-second wait
    PENDING.append([6, 0, -300 * MiB])


def test_not_a_gpu_test():
    grow(0, 1024 * MiB)


@pytest.mark.lm_requires(gpus=1)
def test_small():
    grow(0, 10 * MiB)
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeconftest(FAKE_NVML)
    pytester.makepyfile(test_suite=SUITE)
    pytester.syspathinsert()
    return pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x2", "-o", "lm_markers=lmdeploy", *args)


def test_warn_names_the_test_and_the_amounts(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--lm-leak=warn")
    result.assert_outcomes(passed=6, warnings=2)
    result.stdout.fnmatch_lines([
        "*lmbackend leak check: warn when a GPU test leaves more than 64 MiB in use (NVML)*",
        "*GPUMemoryLeakWarning: test_suite.py::test_leaky left GPU memory in use (threshold 64 MiB*",
        "*GPU 0 (NVIDIA H100*): 256 MiB more in use (10 GiB before, 10.25 GiB after)*",
        "*test_suite.py::test_leaks_on_second left GPU memory in use*",
        "*GPU 1 (NVIDIA H100*): 100 MiB more in use*",
    ])
    for quiet in ("test_clean", "test_released_late", "test_not_a_gpu_test", "test_small"):
        assert f"{quiet} left" not in result.stdout.str()


def test_fail_turns_a_leak_into_a_teardown_error(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--lm-leak=fail")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_leaky*",
        "test_suite.py::test_leaky left GPU memory in use*",
        "  GPU 0 (*): 256 MiB more in use*",
    ])


def test_without_waiting_late_release_counts(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "--lm-leak=fail", "--lm-leak-wait=0", "--lm-leak-threshold=200MiB")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaky*",
                                 "*ERROR at teardown of test_released_late*"])


def test_threshold_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlm_leak = fail\nlm_leak_threshold = 1GiB\n")
    _run(pytester).assert_outcomes(passed=6)


def test_off_registers_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_sessionstart(session):
            assert session.config.pluginmanager.get_plugin("lmbackend_leak_checker") is None
        """
    )
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x2")
    result.assert_outcomes(passed=1)
    assert "leak check" not in result.stdout.str()


def test_a_profile_is_not_read_through_nvml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_requires(gpus=1)
        def test_gpu():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100", "--lm-leak=fail")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*leak check did not run: GPU memory could not be read (the hardware is "
                                 "the profile 'h100'*"])


def test_bad_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:xdist", "--lm-leak=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --lm-leak: must be one of off, warn, fail*"])


FAKE_TORCH = """
import sys, types
import pytest

BASE = 10 << 30
USED = {}       # GPU index -> bytes in use beyond BASE
RESERVED = {}   # device index -> bytes torch still holds for live tensors
STATE = {"initialised": False}

cuda = types.SimpleNamespace(
    is_initialized=lambda: STATE["initialised"],
    synchronize=lambda: None,
    empty_cache=lambda: None,
    device_count=lambda: 2,
    memory_reserved=lambda i: RESERVED.get(i, 0),
)
sys.modules["torch"] = types.SimpleNamespace(cuda=cuda)


class FakeReader:
    def used(self, gpus):
        return {g.uuid: BASE + USED.get(g.index, 0) for g in gpus}


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.pluginmanager.get_plugin("lmbackend_leak_checker").reader = FakeReader()
"""

CONTEXT_SUITE = """
import pytest
from conftest import USED, RESERVED, STATE

MiB = 1 << 20

@pytest.mark.lm_requires(gpus=1)
def test_a_creates_the_context_and_frees_its_tensor():
    STATE["initialised"] = True
    USED[0] = 500 * MiB  # the context: stays for the life of the process

@pytest.mark.lm_requires(gpus=1)
def test_b_keeps_a_tensor():
    USED[0] += 256 * MiB
    RESERVED[0] = 256 * MiB
"""


def test_the_cuda_context_a_test_creates_is_not_a_leak(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # the fake one goes away with the run
    pytester.makeconftest(FAKE_TORCH)
    pytester.makepyfile(test_ctx=CONTEXT_SUITE)
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x2", "--lm-leak=fail")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_b_keeps_a_tensor*",
                                 "  GPU 0 (*): 256 MiB more in use (10.49 GiB before, 10.74 GiB after)"])


def test_a_tensor_kept_by_the_test_that_created_the_context_counts(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    pytester.makeconftest(FAKE_TORCH)
    pytester.makepyfile(
        test_ctx="""
        import pytest
        from conftest import USED, RESERVED, STATE

        @pytest.mark.lm_requires(gpus=1)
        def test_context_and_tensor():
            STATE["initialised"] = True
            USED[0] = (500 + 300) << 20
            RESERVED[0] = 300 << 20
        """
    )
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x2", "--lm-leak=fail")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "  GPU 0 (*): 300 MiB more in use (10.49 GiB before, 10.78 GiB after)",
        "  not counted: the CUDA context this test created (500 MiB on GPU 0 (*))",
    ])


def test_under_xdist_each_worker_checks_its_own_tests(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.delenv("PYTEST_LM_WORKER_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makeconftest(FAKE_NVML)
    pytester.makepyfile(test_suite=SUITE)
    pytester.syspathinsert()
    result = pytester.runpytest("-n", "2", "--lm-hardware=h100x2", "--lm-gpus-per-worker=1",
                                "--lm-leak=fail", "-o", "lm_markers=lmdeploy")
    # each worker holds one GPU: the 2-GPU test skips there; the leak on GPU 0 is still caught
    result.assert_outcomes(passed=5, skipped=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaky*", "*256 MiB more in use*"])


def test_no_nvml_reads_while_the_probe_left_nvml_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the probe gave up on a hanging NVML, the leak check must not call it on the test's
    thread: it would hang the test on the same driver."""
    import dataclasses
    import threading
    import types

    from pytest_lmbackend import xdist
    from pytest_lmbackend.hardware import load_profile
    # the package's own name `probe` is the function; the module is reached by its full name
    probe_module = importlib.import_module("pytest_lmbackend.hardware.probing")

    hardware = dataclasses.replace(load_profile("h100"), source="nvml")
    config = types.SimpleNamespace(stash=pytest.Stash())
    config.stash[xdist._HARDWARE_KEY] = hardware
    checker = leak.LeakChecker(config, "fail", 64 * MiB, 0.0)  # type: ignore[arg-type]

    def refuse(gpus: object) -> dict[str, int]:
        raise AssertionError("NVML was asked")

    monkeypatch.setattr(checker.reader, "used", refuse)
    release = threading.Event()
    stuck = threading.Thread(target=release.wait, daemon=True)
    stuck.start()
    monkeypatch.setattr(probe_module, "_stuck", stuck)
    try:
        assert checker._read(hardware.gpus) is None
        assert checker.unavailable == "NVML did not answer the hardware probe in time"
    finally:
        release.set()
        stuck.join(5)


def test_under_xdist_a_check_that_could_not_run_says_so_on_the_controller(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_requires(gpus=1)
        def test_gpu():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-n", "1", "--lm-hardware=h100", "--lm-leak=fail")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*lmbackend leak check did not run on xdist worker(s) gw0: GPU memory "
                                 "could not be read (the hardware is the profile 'h100'*"])
