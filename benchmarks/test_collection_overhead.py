"""Collection of a generated 1,000-test suite with the plugin installed, against pytest alone
(``-p no:lmbackend``): target within 1.15x of the CPU time."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

# 50 modules of 20 tests: plain functions, a class, parametrized ones and pytest's own marks, the way
# an ordinary suite that knows nothing of the plugin is written
MODULE = """
import pytest


def test_plain_{n}():
    pass


@pytest.mark.slow
def test_marked_{n}():
    pass


@pytest.mark.skipif(False, reason="never")
def test_skipif_{n}():
    pass


@pytest.mark.parametrize("x", range(10))
def test_param_{n}(x, tmp_path):
    pass


class TestGroup{n}:
    def test_a(self):
        pass

    @pytest.mark.parametrize("y", ["a", "b", "c", "d", "e", "f"])
    def test_b(self, y):
        pass
"""
INI = "[pytest]\nmarkers =\n    slow: a slow test\n"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _cpu_seconds(argv: list[str], cwd: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=cwd, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert "1000 tests collected" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_collecting_a_thousand_tests_with_the_plugin_installed(benchmark: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "pytest.ini").write_text(INI)
        for n in range(50):
            (root / f"test_module_{n}.py").write_text(MODULE.format(n=n))
        argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", folder]
        on: list[float] = []
        off: list[float] = []

        def pairs() -> None:
            for _ in range(7):  # in turn, so that a busy moment weighs on both alike
                on.append(_cpu_seconds(argv, folder))
                off.append(_cpu_seconds([*argv, "-p", "no:lmbackend"], folder))

        _cpu_seconds(argv, folder)  # bytecode written once
        benchmark.pedantic(pairs, rounds=1, iterations=1)
    ratio = min(on) / min(off)
    benchmark.extra_info.update(cpu_ms_with=round(min(on) * 1000, 1),
                                cpu_ms_without=round(min(off) * 1000, 1), ratio=round(ratio, 3))
    print(f"collection CPU: {min(on) * 1000:.0f} ms with the plugin, {min(off) * 1000:.0f} ms without "
          f"({ratio:.3f}x)")
    assert ratio <= 1.15, f"collection takes {ratio:.2f}x the CPU of pytest alone"
