"""Text the plugin prints: backend header lines and skips grouped by kind (the plan's text is in plan.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_lmbackend.backends import RunnerFacts
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
    return lines


def fallback_hardware_lines(facts: RunnerFacts) -> list[str]:
    """Minimal hardware lines, used when the hardware report module offers none."""
    where = f"profile {facts.profile} (fake)" if facts.profile else "probe"
    lines = [f"lmbackend: hardware from {where}; CUDA {facts.cuda or 'none'}"]
    lines += [f"lmbackend:   {d.describe()}" for d in facts.devices] or ["lmbackend:   no GPU"]
    pkgs = ", ".join(f"{k} {v}" for k, v in sorted(facts.packages.items()) if v is not None)
    lines.append(f"lmbackend: packages: {pkgs or 'none of lmdeploy, torch, transformers'}")
    return lines


def skip_lines(verdicts: Sequence[Verdict], *, verb: str = "skipped") -> list[str]:
    """``kind: N skipped`` (or another ``verb``) then each distinct reason with its count, most
    frequent first."""
    from pytest_lmbackend.plan import format_skip_summary

    return format_skip_summary(verdicts, verb=verb)
