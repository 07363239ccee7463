"""The ``--lm-plan`` table (one column per hardware profile) and skips grouped by kind; pure text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from pytest_lmbackend.requirements import Skip, failing_kind

RUN = "run"


@dataclass(frozen=True)
class SkipGroup:
    """Skips of one kind: how many, and each distinct reason with its count (most frequent first)."""

    kind: str
    count: int
    reasons: tuple[tuple[str, int], ...]


def group_skips(skips: Iterable[Skip]) -> list[SkipGroup]:
    """Skips grouped by kind, the largest group first (ties by kind name)."""
    by_kind: dict[str, Counter[str]] = {}
    for skip in skips:
        by_kind.setdefault(skip.kind, Counter())[skip.reason] += 1
    groups = [
        SkipGroup(kind, sum(reasons.values()), tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        for kind, reasons in by_kind.items()
    ]
    return sorted(groups, key=lambda g: (-g.count, g.kind))


def format_skip_summary(skips: Iterable[Skip], *, max_reasons: int = 5, verb: str = "skipped") -> list[str]:
    """``capability: 3 skipped`` (or another ``verb``) then the reasons, indented, with counts; []
    when nothing skipped."""
    lines: list[str] = []
    for group in group_skips(skips):
        lines.append(f"{group.kind}: {group.count} {verb}")
        for reason, count in group.reasons[:max_reasons]:
            lines.append(f"  {count} x {reason}")
        hidden = len(group.reasons) - max_reasons
        if hidden > 0:
            lines.append(f"  ... and {hidden} more reason{'s' if hidden > 1 else ''}")
    return lines


def _cell(outcome: Skip | None, required: Collection[str], notes: dict[tuple[str, str], int]) -> str:
    if outcome is None:
        return RUN
    number = notes.setdefault((outcome.kind, outcome.reason), len(notes) + 1)
    action = "FAIL" if failing_kind(outcome.kind, outcome.unchecked, required) else "skip"
    return f"{action} [{number}]"


def format_plan(rows: Sequence[tuple[str, Sequence[Skip | None]]], columns: Sequence[str], *,
                required: Collection[str] = ()) -> list[str]:
    """A table: one row per test, one column per profile; a cell is ``run``, ``skip [n]`` or, for a kind
    in ``required``, ``FAIL [n]``; then note ``[n]`` = kind and reason; then counts per column.

    :param rows: (nodeid, one outcome per column); None means the test would run.
    """
    for nodeid, outcomes in rows:
        if len(outcomes) != len(columns):
            raise ValueError(f"{nodeid}: {len(outcomes)} outcomes for {len(columns)} columns")
    notes: dict[tuple[str, str], int] = {}
    cells = [[_cell(o, required, notes) for o in outcomes] for _, outcomes in rows]
    head = ["test", *columns]
    body = [[nodeid, *row] for (nodeid, _), row in zip(rows, cells, strict=True)]
    totals = []
    for col in range(len(columns)):
        column = [row[col] for row in cells]
        ran = sum(c == RUN for c in column)
        failed = sum(c.startswith("FAIL") for c in column)
        text = f"{ran} run, {len(column) - ran - failed} skip"
        totals.append(text + (f", {failed} fail" if failed else ""))
    footer = ["total", *totals]
    widths = [max(len(r[i]) for r in (head, *body, footer)) for i in range(len(head))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    out = [line(head), line(["-" * w for w in widths]), *(line(r) for r in body), line(footer)]
    if notes:
        out.append("")
        out.extend(f"[{n}] {kind}: {reason}" for (kind, reason), n in notes.items())
    return out
