"""How long the hardware probe takes: in-process, from a profile, and in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.hardware import load_profile, probe

pytest.importorskip("pytest_benchmark")

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_LM_HARDWARE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_probe_in_process(benchmark: Any) -> None:
    """The real probe (NVML, else nvidia-smi, else none) once pynvml is imported."""
    environ = _env()
    hw = benchmark(probe, environ=environ, timeout=5.0)
    benchmark.extra_info.update(source=hw.source, gpus=len(hw.gpus))


def test_profile_load(benchmark: Any) -> None:
    hw = benchmark(load_profile, "h100x8", local_packages={})
    assert len(hw.gpus) == 8


@pytest.mark.parametrize("what", ["bare-python", "import", "probe"])
def test_probe_fresh_process(benchmark: Any, what: str) -> None:
    """A fresh interpreter: bare, importing the hardware package, probing. probe - bare is the cost a
    pytest session pays once; the target on a GPU machine is 150 ms or less."""
    code = {
        "bare-python": "pass",
        "import": "import pytest_lmbackend.hardware",
        "probe": "from pytest_lmbackend.hardware import probe; probe()",
    }[what]
    env = _env()

    def run() -> None:
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
