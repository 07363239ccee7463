"""Cost of the plugin: its import over bare pytest (target <= 10 ms), and a whole empty session."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

# Measured inside a fresh interpreter that has already imported pytest, so only the plugin's own
# modules count; bytecode may be written, as in any installed package.
CHILD = (
    "import time, pytest\n"
    "t = time.perf_counter()\n"
    "import pytest_lmbackend.plugin\n"
    "print(time.perf_counter() - t)\n"
)
HEAVY = ("torch", "transformers", "lmdeploy", "pynvml")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _import_seconds() -> float:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True,
                         env=_env())
    return float(out.stdout.strip())


def test_plugin_import_over_bare_pytest(benchmark: Any) -> None:
    """Import of ``pytest_lmbackend.plugin`` after ``import pytest``; target <= 10 ms (median)."""
    _import_seconds()  # writes bytecode once
    seconds: list[float] = []

    def once() -> float:
        value = _import_seconds()
        seconds.append(value)
        return value

    benchmark.pedantic(once, rounds=15, iterations=1)
    median_ms = statistics.median(seconds) * 1000
    benchmark.extra_info["import_median_ms"] = round(median_ms, 2)
    assert median_ms <= 10.0, f"plugin import takes {median_ms:.1f} ms over bare pytest"


def test_plugin_import_loads_nothing_heavy() -> None:
    code = CHILD + f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("plugin", ["enabled", "disabled"])
def test_empty_session(benchmark: Any, plugin: str) -> None:
    """``pytest --collect-only`` on an empty folder with the plugin and without (``-p no:lmbackend``):
    the difference is what a session pays for options, markers and the backend registry."""
    extra = [] if plugin == "enabled" else ["-p", "no:lmbackend"]
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *extra,
                folder]

        def run() -> int:
            return subprocess.run(argv, capture_output=True, env=_env(), cwd=folder).returncode

        code = benchmark.pedantic(run, rounds=5, iterations=1)
    assert code == pytest.ExitCode.NO_TESTS_COLLECTED
