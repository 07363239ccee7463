"""The two test tiers: the rule in tests/conftest.py, and the fast tier's share of the suite."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = ROOT / "fixtures" / "tiers" / "test_kinds.py"
MAX_SLOW_SHARE = 0.10


def tiers() -> ModuleType:
    path = Path(__file__).with_name("conftest.py")
    spec = importlib.util.spec_from_file_location("lmbackend_test_tiers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_finds_each_kind_of_slow_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kinds=KINDS.read_text())
    items, _ = pytester.inline_genitems()
    reason = tiers().slow_reason
    assert {item.name: reason(item) for item in items} == {
        "test_subprocess": "subprocess",
        "test_runpython": "subprocess",
        "test_xdist_in_own_args": "xdist",
        "test_xdist_through_a_helper": "xdist",
        "test_xdist_in_params[args0]": "xdist",
        "test_xdist_in_params[args1]": None,
        "test_isolated_suite": "isolated",
        "test_real_lmdeploy": "lmdeploy",
        "test_in_process_pytester": None,
        "test_plain": None,
        "test_marked_by_hand": None,
    }


def collected(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if re.match(r"tests/\S+::", line)]


def test_the_fast_tier_keeps_nine_tests_in_ten_and_runs_first() -> None:
    everything = collected()
    slow = set(collected("-m", "slow"))
    assert slow, "the rule marks nothing slow: it no longer reads the tests"
    assert len(slow) <= MAX_SLOW_SHARE * len(everything), (
        f"{len(slow)} of {len(everything)} tests are slow; the fast tier must keep at least "
        f"{1 - MAX_SLOW_SHARE:.0%} (make tests cheaper rather than raising the share)")
    first_slow = min(i for i, nodeid in enumerate(everything) if nodeid in slow)
    assert slow == set(everything[first_slow:]), "a fast test runs after a slow one"
