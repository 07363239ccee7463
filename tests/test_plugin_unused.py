"""Pay only when used: a session that uses nothing of the plugin loads almost none of it and probes
nothing; the hardware is read when first needed, once (checked in fresh interpreters)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Prints which of the plugin's modules the session loaded, after everything else ran.
REPORT = """
import sys

def pytest_unconfigure(config):
    loaded = sorted(m for m in sys.modules if m.startswith("pytest_lmbackend"))
    sys.stdout.write("LM-MODULES: " + ",".join(loaded) + "\\n")
"""
FAKE_SMI = "#!/bin/sh\necho probed >> '{log}'\nexit 9\n"


@pytest.fixture
def probes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A probe counter: NVML is refused, so every probe runs ``nvidia-smi``, a stand-in that logs
    each call. Returns the log."""
    folder = pytester.path / "bin"
    folder.mkdir()
    log = pytester.path / "probes.log"
    smi = folder / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(log=log))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTEST_LM_NVML", "refused-here")  # not a binding: NVML answers nothing
    monkeypatch.delenv("PYTEST_LM_HARDWARE", raising=False)
    pytester.makepyfile(lmreport=REPORT)
    return log


def count(log: Path) -> int:
    return log.read_text().count("probed") if log.exists() else 0


def modules(result: pytest.RunResult) -> list[str]:
    line = next(line for line in result.outlines if line.startswith("LM-MODULES: "))
    return line.removeprefix("LM-MODULES: ").split(",")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "lmreport", "-p", "no:cacheprovider", *args)


def test_a_session_that_uses_nothing_loads_and_probes_nothing(pytester: pytest.Pytester,
                                                              probes: Path) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    loaded = modules(result)
    assert [m for m in loaded if m.startswith("pytest_lmbackend.rules")] == []
    assert [m for m in loaded if m.startswith("pytest_lmbackend.hardware")] == []
    assert "pytest_lmbackend.session" not in loaded and "pytest_lmbackend.config" not in loaded
    assert count(probes) == 0
    said = [line for line in result.outlines if "lmbackend" in line]
    assert [line for line in said if not line.startswith(("plugins:", "LM-MODULES:"))] == []
    # -v alone adds one header line and still reads nothing (every `pytest -v` of a suite, and each
    # session pytester starts inside it, would run nvidia-smi)
    verbose = run(pytester, "-v")
    assert count(probes) == 0
    assert [m for m in modules(verbose) if m.startswith("pytest_lmbackend.hardware")] == []
    said = [line for line in verbose.outlines if line.startswith("lmbackend")]
    assert said == ["lmbackend: no lm_ option or ini key given; hardware read when a test first needs it "
                    "(pytest-lmbackend env: now)"]
    # the counter counts: -v with a setting reads the hardware for the header, once
    used = run(pytester, "-v", "-o", "lm_backend=auto")
    assert count(probes) == 1
    assert "pytest_lmbackend.hardware.probing" in modules(used)
    used.stdout.fnmatch_lines(["lmbackend: hardware: 0 GPUs, no NVIDIA GPU found*",
                               "lmbackend: warning: nvidia-smi*"])


def test_xdist_workers_never_probe_for_a_header(pytester: pytest.Pytester,
                                                probes: Path) -> None:
    """pytest-xdist's own acceptance runs (``-n2 --dist=loadscope -v``) probed three times: the
    controller for its header, each worker too."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_one="def test_one():\n    pass\n\ndef test_two():\n    pass\n")
    result = run(pytester, "-n", "2", "--dist=loadscope", "-v")
    result.assert_outcomes(passed=2)
    assert count(probes) == 0
    # with a setting, -v reads the hardware for the controller's header only: a worker's is never shown
    # (LMDeploy opted in, `pytest -n 8 -v` ran nvidia-smi 9 times)
    result = run(pytester, "-n", "2", "-v", "-o", "lm_markers=lmdeploy")
    result.assert_outcomes(passed=2)
    assert count(probes) == 1


def test_a_setting_alone_reads_no_hardware(pytester: pytest.Pytester, probes: Path) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = run(pytester, "-o", "lm_backend=auto")
    result.assert_outcomes(passed=1)
    assert count(probes) == 0
    result.stdout.fnmatch_lines(["lmbackend: --lm-backend=auto; LMDeploy rules *; hardware read when a test "
                                 "first needs it (-v: now)"])
    assert "lmbackend: hardware" not in result.stdout.str()


@pytest.mark.parametrize(
    ("test", "args"),
    [
        ("@pytest.mark.lm_requires(gpus=1)\ndef test_x(): pass", ()),
        ("def test_x(lm_hardware): assert lm_hardware.source == 'none'", ()),
        ("def test_x(lm_backend): pass", ()),
        ("def test_x(): pass", ("--lm-plan",)),
        ("@pytest.mark.lm_requires(gpus=1)\ndef test_x(): pass", ("--lm-plan",)),
    ],
    ids=["requirement", "lm_hardware", "bound", "plan", "plan-and-requirement"],
)
def test_the_hardware_is_read_once_when_first_needed(pytester: pytest.Pytester, probes: Path, test: str,
                                                     args: tuple[str, ...]) -> None:
    pytester.makepyfile(test_one=f"import pytest\n\n{test}\n\ndef test_plain(): pass\n")
    result = run(pytester, "-rs", *args)
    assert count(probes) == 1, result.stdout.str()
    if "--lm-plan" not in args:
        # read after the header: the terminal summary says what was found, warnings included
        result.stdout.fnmatch_lines(["*lmbackend hardware*",
                                     "lmbackend: hardware: 0 GPUs, no NVIDIA GPU found*",
                                     "lmbackend: warning: nvidia-smi*"])


def test_planning_a_fleet_reads_only_its_profiles(pytester: pytest.Pytester, probes: Path) -> None:
    """A CI job that plans the fleet (``--lm-fleet`` + ``--lm-plan``, no ``--lm-runner``) ran on a CPU box
    and probed it, printing its hardware and probe warnings above the fleet's profiles."""
    pytester.makepyfile(test_one="import pytest\n\n@pytest.mark.lm_requires(gpus=2)\ndef test_x(): pass\n")
    result = run(pytester, "--lm-fleet=cpu,h100x8", "--lm-plan")
    assert count(probes) == 0
    result.stdout.fnmatch_lines(["lmbackend: *this machine's hardware not read (a fleet plan judges the "
                                 "fleet's profiles)",
                                 "lmbackend: fleet (cheapest first, --lm-fleet): cpu, h100x8; planning"])
    assert "lmbackend: warning" not in result.stdout.str()
