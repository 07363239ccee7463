"""pytest's own skip marks as the plan and the fleet see them, judged by pytest's own evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pytest_lmbackend.selection import ItemOutcome
from pytest_lmbackend.verdict import Verdict

PYTEST_KIND = "pytest"  # the verdict kind of a test pytest itself skips; no --lm-require kind fails it


@dataclass(frozen=True)
class PytestSkip:
    """Why pytest skips a test before the plugin sees it.

    ``local`` is set when a condition decided it (``skipif``, ``xfail(condition, run=False)``): it was
    evaluated on this machine, and a runner evaluates it again on its own. ``error`` is set when pytest
    could not evaluate a condition (the test errors at setup).
    """

    reason: str
    local: bool = False
    error: bool = False

    def outcome(self) -> ItemOutcome:
        """The plan's cell for every profile: pytest skips the test whatever the hardware."""
        reason = self.reason
        if self.local:
            reason += " (its condition was evaluated on this machine; a runner may decide otherwise)"
        return ItemOutcome(None, None, Verdict(PYTEST_KIND, reason, self.error))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _conditions(mark: pytest.Mark) -> bool:
    return bool(mark.args) or "condition" in mark.kwargs


def pytest_skip(item: pytest.Item) -> PytestSkip | None:
    """What pytest's own ``skip``, ``skipif`` and ``xfail(run=False)`` marks do to ``item`` at setup
    (empty parameter sets carry one of the first or the last), or None when pytest would run it.

    Conditions are evaluated by pytest's own functions, as its setup would; ``--runxfail`` is honoured.
    """
    from _pytest.skipping import evaluate_skip_marks, evaluate_xfail_marks

    try:
        skipped = evaluate_skip_marks(item)
        if skipped is not None:
            # a skip mark, or a skipif without a condition, holds on any machine
            fixed = any(True for _ in item.iter_markers("skip")) or any(
                not _conditions(m) for m in item.iter_markers("skipif"))
            return PytestSkip(f"skipped by pytest: {skipped.reason or 'unconditional skip'}", local=not fixed)
        if item.config.option.runxfail:
            return None
        xfailed = evaluate_xfail_marks(item)
    except pytest.skip.Exception as exc:  # a condition that itself calls pytest.skip()
        return PytestSkip(f"skipped by pytest: {_one_line(exc)}", local=True)
    except (pytest.fail.Exception, TypeError) as exc:
        # a condition pytest cannot evaluate (its words name the mark and the error); TypeError is
        # pytest's own for a skip mark with bad arguments
        return PytestSkip(f"pytest cannot evaluate a skip mark: {_one_line(exc)}", local=True, error=True)
    if xfailed is None or xfailed.run:
        return None
    first = next(item.iter_markers("xfail"), None)
    local = first is not None and _conditions(first)  # the first xfail mark decides unless it has a condition
    return PytestSkip(f"not run by pytest: xfail(run=False): {xfailed.reason or 'no reason given'}",
                      local=local)
