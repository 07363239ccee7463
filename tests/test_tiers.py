"""The two test tiers: the rule in tests/conftest.py, and the fast tier's share of the suite."""

from __future__ import annotations

import importlib.util
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
        "test_real_lmdeploy_through_a_fixture": "lmdeploy",
        "test_real_lmdeploy_through_a_cached_helper": "lmdeploy",
        "test_in_process_pytester": None,
        "test_plain": None,
        "test_marked_by_hand": None,
    }


# one collection of the whole suite, each item with its tier, in run order
COLLECT = """
import sys, pytest

class Tiers:
    def pytest_collection_finish(self, session):
        for item in session.items:
            print("TIER", "slow" if item.get_closest_marker("slow") else "fast", item.nodeid)

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Tiers()]))
"""


def test_the_fast_tier_keeps_nine_tests_in_ten_and_runs_first() -> None:
    result = subprocess.run([sys.executable, "-c", COLLECT], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    tiers = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("TIER ")]
    slow = tiers.count("slow")
    assert slow, "the rule marks nothing slow: it no longer reads the tests"
    assert slow <= MAX_SLOW_SHARE * len(tiers), (
        f"{slow} of {len(tiers)} tests are slow; the fast tier must keep at least "
        f"{1 - MAX_SLOW_SHARE:.0%} (make tests cheaper rather than raising the share)")
    assert tiers == sorted(tiers), "a fast test runs after a slow one"
