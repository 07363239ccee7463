"""The suite's two tiers: `slow` is set here by rule, never by hand, and fast tests run first.

A test is slow when it starts other processes or the real LMDeploy:
- it runs pytest in a subprocess (`pytester.runpytest_subprocess`, `runpython`, `popen`, `spawn_pytest`),
- it runs pytest-xdist (`-n`/`--numprocesses`/`--dist`/`--tx` among its arguments),
- the suite it writes uses `lm_isolated` (each such test runs in a fresh interpreter),
- it talks to a real LMDeploy (the `oracle` fixture, `shared_oracle`).
The rule reads the test function's code and, transitively, the module-level helpers and string constants
it names. `pytest -m "not slow"` is the inner loop; a plain `pytest` runs everything, fast tests first.
`tests/test_tiers.py` keeps the fast tier at least 90% of the suite.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Any

import pytest

SLOW_REASONS = ("subprocess", "xdist", "isolated", "lmdeploy")

_SUBPROCESS_CALLS = frozenset({"runpytest_subprocess", "runpython", "runpython_c", "popen", "spawn_pytest"})
_ORACLE_NAMES = frozenset({"shared_oracle"})
_XDIST_ARG = re.compile(r"^(-n\d*|-n=.+|--numprocesses(=.+)?|--dist(=.+)?|--tx(=.+)?)$")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts processes or the real LMDeploy (set by rule in tests/conftest.py)")


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _reach(func: Any) -> tuple[set[str], list[str]]:
    """Names and string constants of `func`, its nested code, and the module-level helpers it names."""
    module_globals: dict[str, Any] = getattr(func, "__globals__", {})
    names: set[str] = set()
    strings: list[str] = []
    pending = [func]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        code = getattr(current, "__code__", None)
        if code is None or id(code) in seen:
            continue
        seen.add(id(code))
        for one in _codes(code):
            names.update(one.co_names)
            strings.extend(c for c in one.co_consts if isinstance(c, str))
            for name in one.co_names:
                value = module_globals.get(name)
                if isinstance(value, str):
                    strings.append(value)
                elif (isinstance(value, types.FunctionType)
                      and value.__module__ == getattr(func, "__module__", None)):
                    pending.append(value)
    return names, strings


def slow_reason(item: pytest.Item) -> str | None:
    """Why this item is slow (one of SLOW_REASONS), or None for a fast one."""
    func = getattr(item, "function", None)
    if func is None:
        return None
    fixtures = set(getattr(item, "fixturenames", ()))
    names, strings = _reach(func)
    params = getattr(getattr(item, "callspec", None), "params", {})
    strings.extend(v for v in params.values() if isinstance(v, str))
    for value in params.values():
        if isinstance(value, tuple | list):
            strings.extend(v for v in value if isinstance(v, str))
    if "oracle" in fixtures or names & _ORACLE_NAMES:
        return "lmdeploy"
    if "pytester" in fixtures:
        if names & _SUBPROCESS_CALLS:
            return "subprocess"
        if any(_XDIST_ARG.match(s) for s in strings):
            return "xdist"
        if any("lm_isolated" in s for s in strings):
            return "isolated"
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    # Before every other implementation, as pytest's own suite does: `-m "not slow"` sees the marks, and
    # --lf/--ff and fixture grouping still apply to the fast-first order.
    fast: list[pytest.Item] = []
    slow: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("slow") is not None or slow_reason(item) is not None:
            item.add_marker(pytest.mark.slow)
            slow.append(item)
        else:
            fast.append(item)
    items[:] = fast + slow
    yield
