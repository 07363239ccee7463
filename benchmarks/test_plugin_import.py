"""Cost of the plugin: its import over bare pytest (target <= 10 ms), a whole empty session, and a
one-test session that uses nothing of it (target <= 10 ms CPU of its own work over pytest with the plugin
off)."""

from __future__ import annotations

import os
import resource
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


def _cpu_seconds(argv: list[str], cwd: str) -> float:
    """CPU time (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, capture_output=True, env=_env(), cwd=cwd, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _session_argv(folder: str, *, collector: bool) -> list[str]:
    """A one-test pytest session in a fresh interpreter, CPython's cyclic garbage collector on or off."""
    off = "" if collector else "import gc; gc.disable(); "
    code = f"{off}import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "-q", "-p", "no:cacheprovider", folder]


def _extra_ms(folder: str, *, collector: bool, pairs: int) -> tuple[float, float, float]:
    """CPU of the session with the plugin, without it (``-p no:lmbackend``, its one entry point), and
    the extra: run in turn, so that a busy moment weighs on both alike; the least and the lower
    quartile of each, as a shared machine adds noise only upwards."""
    argv = _session_argv(folder, collector=collector)
    on: list[float] = []
    off: list[float] = []
    for _ in range(pairs):
        on.append(_cpu_seconds(argv, folder))
        off.append(_cpu_seconds([*argv, "-p", "no:lmbackend"], folder))
    quartile = len(on) // 4
    extra = min(min(on) - min(off), sorted(on)[quartile] - sorted(off)[quartile])
    return min(on) * 1000, min(off) * 1000, extra * 1000


def test_unused_session_cpu_over_pytest_alone(benchmark: Any) -> None:
    """A one-test session that uses nothing of the plugin, with it and without: the plugin's own work
    costs at most 10 ms CPU (target), measured with the cyclic collector off in both.

    With the collector on, the figure is the plugin's work plus, in some environments, one more full
    collection: the plugin's ~420 long-lived objects (options, settings, fixtures, hooks) can push
    CPython 3.11 over its threshold for a full pass (``gc.get_stats()``: 3 instead of 2 here). That is
    an edge, not a cost per object: here 100 lists from a stand-in plugin tip it just the same, and a
    pass over the ~47,000 objects of a pytest session costs 8-10 ms on this 2-core machine. It is
    recorded (``extra_cpu_ms_collector_on``) and held under 25 ms so that a real regression shows."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "test_one.py"), "w", encoding="utf-8") as file:
            file.write("def test_one():\n    pass\n")
        _cpu_seconds(_session_argv(folder, collector=True), folder)  # bytecode written once
        figures: dict[str, tuple[float, float, float]] = {}

        def measure() -> None:
            figures["off"] = _extra_ms(folder, collector=False, pairs=25)
            figures["on"] = _extra_ms(folder, collector=True, pairs=15)

        benchmark.pedantic(measure, rounds=1, iterations=1)
    with_ms, without_ms, extra_ms = figures["off"]
    on_with, on_without, on_extra = figures["on"]
    benchmark.extra_info.update(
        cpu_ms_with=round(with_ms, 1), cpu_ms_without=round(without_ms, 1), extra_cpu_ms=round(extra_ms, 1),
        cpu_ms_with_collector_on=round(on_with, 1), cpu_ms_without_collector_on=round(on_without, 1),
        extra_cpu_ms_collector_on=round(on_extra, 1),
    )
    assert extra_ms <= 10.0, f"a session that uses nothing costs {extra_ms:.1f} ms CPU more with the plugin"
    assert on_extra <= 25.0, f"with the collector on, {on_extra:.1f} ms CPU more with the plugin"
