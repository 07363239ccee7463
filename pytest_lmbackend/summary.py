"""Text the plugin prints: backend header lines and skips grouped by kind (the plan's text is in plan.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_lmbackend.backends import RunnerFacts
from pytest_lmbackend.display import printable
from pytest_lmbackend.verdict import Verdict


def backend_lines(availability: Mapping[str, str | None], facts: RunnerFacts, *, mode: str,
                  release: str | None) -> list[str]:
    """Header lines about backends: which can run here and why the others cannot."""
    ready = [name for name, why in availability.items() if why is None]
    lines = [
        f"lmbackend: --lm-backend={mode}; LMDeploy rules {release or '(not loaded)'}; "
        f"backends available: {', '.join(ready) or 'none'}"
    ]
    for name, why in availability.items():
        if why is not None:
            lines.append(f"lmbackend:   {name}: {why}")
    return [printable(line) for line in lines]  # third-party backends' names and reasons


def skip_lines(verdicts: Sequence[Verdict], *, verb: str = "skipped") -> list[str]:
    """``kind: N skipped`` (or another ``verb``) then each distinct reason with its count, most
    frequent first."""
    from pytest_lmbackend.plan import format_skip_summary

    return format_skip_summary(verdicts, verb=verb)
