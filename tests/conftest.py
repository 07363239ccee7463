"""The suite's two tiers: `slow` is set here by rule, never by hand, and fast tests run first.

A test is slow when it starts other processes or the real LMDeploy:
- it runs pytest in a subprocess (`pytester.runpytest_subprocess`, `runpython`, `popen`, `spawn_pytest`),
- it runs pytest-xdist (`-n`/`--numprocesses`/`--dist`/`--tx` among its arguments),
- the suite it writes uses `lm_isolated` (each such test runs in a fresh interpreter),
- it talks to a real LMDeploy (the `oracle` fixture, `shared_oracle`, `find_python`, `venv_python`).
The rule reads the code of the test function and of its fixtures defined in its module and, transitively,
the module-level helpers (also behind decorators such as `functools.cache`) and string constants they name.
`pytest -m "not slow"` is the inner loop; a plain `pytest` runs everything, fast tests first.
`tests/test_tiers.py` keeps the fast tier at least 90% of the suite.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Iterator
from typing import Any

import pytest

SLOW_REASONS = ("subprocess", "xdist", "isolated", "lmdeploy")

_SUBPROCESS_CALLS = frozenset({"runpytest_subprocess", "runpython", "runpython_c", "popen", "spawn_pytest"})
# what finds or starts a real LMDeploy environment (pytest_lmbackend.oracle)
_ORACLE_NAMES = frozenset({"shared_oracle", "find_python", "venv_python"})
_XDIST_ARG = re.compile(r"^(-n\d*|-n=.+|--numprocesses(=.+)?|--dist(=.+)?|--tx(=.+)?)$")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: starts processes or the real LMDeploy (set by rule in tests/conftest.py)")


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _same_module(value: Any, module: str | None) -> types.FunctionType | None:
    """`value` as a plain function of `module`, looking through decorators such as functools.cache."""
    while not isinstance(value, types.FunctionType) and hasattr(value, "__wrapped__"):
        value = value.__wrapped__
    if isinstance(value, types.FunctionType) and value.__module__ == module:
        return value
    return None


def _reach(start: list[Any]) -> tuple[set[str], list[str]]:
    """Names and string constants of the functions in `start` (a test and its fixtures), their nested
    code, and the module-level helpers and string constants they name, transitively within the module."""
    module = getattr(start[0], "__module__", None)
    module_globals: dict[str, Any] = getattr(start[0], "__globals__", {})
    names: set[str] = set()
    strings: list[str] = []
    pending = list(start)
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
                elif (helper := _same_module(value, module)) is not None:
                    pending.append(helper)
    return names, strings


def _fixture_functions(item: pytest.Item, module: str | None) -> list[Any]:
    """The item's fixtures defined in its own module (they may start the real LMDeploy for it)."""
    info = getattr(item, "_fixtureinfo", None)
    found = []
    for defs in getattr(info, "name2fixturedefs", {}).values():
        for fixturedef in defs:
            func = _same_module(getattr(fixturedef, "func", None), module)
            if func is not None:
                found.append(func)
    return found


def slow_reason(item: pytest.Item) -> str | None:
    """Why this item is slow (one of SLOW_REASONS), or None for a fast one."""
    func = getattr(item, "function", None)
    if func is None:
        return None
    # the test's own code, not Hypothesis's or a decorator's wrapper around it
    func = inspect.unwrap(getattr(getattr(func, "hypothesis", None), "inner_test", func))
    fixtures = set(getattr(item, "fixturenames", ()))
    names, strings = _reach([func, *_fixture_functions(item, getattr(func, "__module__", None))])
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
