"""Text the plugin prints: backend header lines, the ``--lm-plan`` table, skips grouped by kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_lmbackend.backends import RunnerFacts
from pytest_lmbackend.selection import ItemOutcome, Verdict


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


def status_cell(outcome: ItemOutcome) -> str:
    backend = f"[{outcome.backend}]" if outcome.backend else ""
    if outcome.verdict is None:
        return f"run{backend}"
    if outcome.verdict.error:
        return f"FAIL:{outcome.verdict.kind}"
    return f"skip:{outcome.verdict.kind}{backend}"


def plan_table(nodeids: Sequence[str], columns: Sequence[str],
               outcomes: Sequence[Sequence[ItemOutcome]], require: frozenset[str] = frozenset()) -> list[str]:
    """One row per item, one column per hardware view, then each column's reasons with counts.

    ``outcomes[c][i]`` is item ``i`` under column ``c``. Kinds in ``require`` show as FAIL, as they
    would fail in a real run.
    """
    cells = [[_cell(o, require) for o in col] for col in outcomes]
    name_w = max([len("test"), *(len(n) for n in nodeids)])
    widths = [max([len(h), *(len(c) for c in col)]) for h, col in zip(columns, cells, strict=True)]
    head = ["test".ljust(name_w), *(h.ljust(w) for h, w in zip(columns, widths, strict=True))]
    lines = ["  ".join(head).rstrip()]
    for i, nodeid in enumerate(nodeids):
        row = [nodeid.ljust(name_w), *(col[i].ljust(w) for col, w in zip(cells, widths, strict=True))]
        lines.append("  ".join(row).rstrip())
    for title, col in zip(columns, outcomes, strict=True):
        runs = sum(1 for o in col if o.verdict is None)
        verdicts = [o.verdict for o in col if o.verdict is not None]
        failing = [v for v in verdicts if v.error or v.failing_kind(require) is not None]
        skipping = [v for v in verdicts if v not in failing]
        lines.append("")
        lines.append(f"{title}: {runs} would run, {len(skipping)} would skip, {len(failing)} would fail")
        lines += ["  " + line for line in skip_lines(failing, verb="would fail")]
        lines += ["  " + line for line in skip_lines(skipping)]
    return lines


def _cell(outcome: ItemOutcome, require: frozenset[str]) -> str:
    verdict = outcome.verdict
    if verdict is not None and not verdict.error:
        kind = verdict.failing_kind(require)
        if kind is not None:
            return f"FAIL:{kind}"
    return status_cell(outcome)


def skip_lines(verdicts: Sequence[Verdict], *, verb: str = "skipped") -> list[str]:
    """``kind: N skipped`` (or another ``verb``) then each distinct reason with its count, most
    frequent first."""
    from pytest_lmbackend.plan import format_skip_summary
    from pytest_lmbackend.requirements import Skip

    return format_skip_summary((Skip(v.kind, v.reason) for v in verdicts), verb=verb)
