"""The plan's text: the ``--lm-plan`` table (one column per hardware profile) and skips grouped by kind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_lmbackend.display import printable
from pytest_lmbackend.selection import ItemOutcome
from pytest_lmbackend.verdict import Verdict

if TYPE_CHECKING:
    from pytest_lmbackend.fleet.assignment import Assignment, RunnerCost
    from pytest_lmbackend.hardware import Hardware

RUN = "run"


@dataclass(frozen=True)
class SkipGroup:
    """Skips of one kind: how many, and each distinct reason with its count (most frequent first)."""

    kind: str
    count: int
    reasons: tuple[tuple[str, int], ...]


def group_skips(skips: Iterable[Verdict]) -> list[SkipGroup]:
    """Skips grouped by kind, the largest group first (ties by kind name)."""
    by_kind: dict[str, Counter[str]] = {}
    for skip in skips:
        by_kind.setdefault(skip.kind, Counter())[skip.reason] += 1
    groups = [
        SkipGroup(kind, sum(reasons.values()), tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        for kind, reasons in by_kind.items()
    ]
    return sorted(groups, key=lambda g: (-g.count, g.kind))


def format_skip_summary(skips: Iterable[Verdict], *, max_reasons: int = 5,
                        verb: str = "skipped") -> list[str]:
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


@dataclass(frozen=True)
class PlanRow:
    """One test of the plan: what the plugin decided for it under each profile (one per column) and,
    under a fleet, the runner it goes to (as the table shows it)."""

    nodeid: str
    outcomes: tuple[ItemOutcome, ...]
    runner: str | None = None


def cell(outcome: ItemOutcome, require: Collection[str] = ()) -> str:
    """``run[pytorch]``, ``skip:capability`` (with the backend it would have had), or ``FAIL:kind`` for
    bad input and for a kind in ``require``, as the run would end."""
    verdict = outcome.verdict
    backend = f"[{outcome.backend}]" if outcome.backend else ""
    if verdict is None:
        return f"{RUN}{backend}"
    if verdict.error:
        return f"FAIL:{verdict.kind}"
    failing = verdict.failing_kind(require)
    if failing is not None:
        return f"FAIL:{failing}"
    return f"skip:{verdict.kind}{backend}"


def format_plan(rows: Sequence[PlanRow], columns: Sequence[str], *,
                require: Collection[str] = ()) -> list[str]:
    """A table, one row per test and one column per profile (after a ``runner`` column when any row
    has a runner); then, per profile, how many would run, skip and fail, with each reason and its count.

    :raises ValueError: a row without exactly one outcome per column.
    """
    for row in rows:
        if len(row.outcomes) != len(columns):
            raise ValueError(f"{row.nodeid}: {len(row.outcomes)} outcomes for {len(columns)} columns")
    fleet = any(row.runner is not None for row in rows)
    head = ["test", *(["runner"] if fleet else []), *columns]
    body = [[row.nodeid, *([row.runner or ""] if fleet else []), *(cell(o, require) for o in row.outcomes)]
            for row in rows]
    widths = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(r, widths, strict=True)).rstrip()
             for r in (head, *body)]
    for n, title in enumerate(columns):
        outcomes = [row.outcomes[n] for row in rows]
        verdicts = [o.verdict for o in outcomes if o.verdict is not None]
        failing = [v for v in verdicts if v.error or v.failing_kind(require) is not None]
        skipping = [v for v in verdicts if not (v.error or v.failing_kind(require) is not None)]
        lines.append("")
        lines.append(f"{title}: {len(outcomes) - len(verdicts)} would run, {len(skipping)} would skip, "
                     f"{len(failing)} would fail")
        lines += ["  " + line for line in format_skip_summary(failing, verb="would fail")]
        lines += ["  " + line for line in format_skip_summary(skipping)]
    return lines


def profile_lines(hardware: Hardware, availability: Mapping[str, str | None],
                  release: str | None = None) -> list[str]:
    """One profile of a several-profile plan in brief, for the header: its GPUs by kind, driver and
    CUDA, packages, the backends available there and the LMDeploy release whose rules decide there;
    then its warnings."""
    from pytest_lmbackend.hardware import (
        TURBOMIND_KEY,
        describe_package,
        format_capability,
        format_memory,
        notable_packages,
    )

    kinds = Counter((g.name, g.capability, g.memory_total) for g in hardware.gpus)
    gpus = "; ".join(f"{n} x {name} (sm{cap[0]}{cap[1]} = {format_capability(cap)}, {format_memory(mem)})"
                     for (name, cap, mem), n in kinds.items()) or "no GPU"
    npu_kinds = Counter((n.name, n.memory_total) for n in hardware.npus)
    npu = "".join(f"; {n} x {name} ({format_memory(mem)})" for (name, mem), n in npu_kinds.items())
    npu = npu or (", Ascend NPU" if hardware.ascend else "")
    if hardware.nodes > 1:
        gpus = f"{hardware.nodes} nodes of {gpus}"
    turbomind = " with TurboMind" if TURBOMIND_KEY in hardware.packages else ""
    packages = ", ".join(f"{describe_package(name, version)}{turbomind if name == 'lmdeploy' else ''}"
                         for name, version in notable_packages(hardware.packages) if name != TURBOMIND_KEY)
    if not hardware.packages_stated and hardware.source == "profile":
        packages = f"this interpreter's: {packages or 'none notable'}"
    ready = [name for name, why in availability.items() if why is None]
    where = (f"profile {hardware.profile!r}" if hardware.source == "profile"
             else f"this machine ({hardware.source})")
    lines = [f"{where}: {gpus}{npu}; driver {hardware.driver or 'none'}, CUDA {hardware.cuda or 'none'}; "
             f"packages: {packages or 'none notable'}; backends available: {', '.join(ready) or 'none'}"
             f"{'' if release is None else '; LMDeploy rules ' + release}",
             *(f"  warning: {w}" for w in hardware.warnings)]
    return [printable(line) for line in lines]  # a profile's GPU names and fields


def _tests(n: int) -> str:
    return f"{n} test{'' if n == 1 else 's'}"


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4.5 min``, ``2.1 h``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fleet_lines(assignment: Assignment, costs: Sequence[RunnerCost], *, max_orphans: int = 20) -> list[str]:
    """Under a fleet, after the table: each runner's share with its estimated cost (the bottleneck
    named), then the orphans with their reasons."""
    lines = ["runners (cheapest first):"]
    slowest = max(costs, key=lambda c: c.seconds, default=None)
    for cost in costs:
        share = f"{cost.tests} test{'' if cost.tests == 1 else 's'}"
        if cost.orphans:
            share += f" + {cost.orphans} orphan{'' if cost.orphans == 1 else 's'}"
        total = cost.tests + cost.orphans
        if cost.timed:
            estimate = f"{format_seconds(cost.seconds)} by last durations ({cost.timed} of {total} timed)"
        else:
            estimate = "no durations recorded" if total else "no work"
        mark = " <- bottleneck" if cost is slowest and cost.seconds > 0 and len(costs) > 1 else ""
        lines.append(f"  {cost.name}: {share}; {estimate}{mark}")
    orphans = assignment.orphans
    if orphans:
        reasons = assignment.reasons()
        lines.append(f"orphans: {_tests(len(orphans))} can run on no runner of the fleet; "
                     f"the last runner, {assignment.fleet[-1]}, skips them "
                     "(--lm-require=fleet fails them)")
        lines += [f"  {nodeid}: {reasons.get(nodeid, '')}" for nodeid in orphans[:max_orphans]]
        if len(orphans) > max_orphans:
            lines.append(f"  ... and {len(orphans) - max_orphans} more")
    else:
        lines.append("orphans: none; every test can run on a runner of the fleet")
    return lines


def runner_summary_lines(name: str, fleet: Sequence[str], shares: Mapping[str, int],
                         orphans: Sequence[str]) -> list[str]:
    """The terminal summary of one runner's job: its share, where the other tests went, the orphans."""
    total = sum(shares.values())
    others = ", ".join(f"{other} ({shares.get(other, 0)})" for other in fleet if other != name)
    lines = [f"runner {name!r}: {shares.get(name, 0)} of {total} tests are this runner's"
             + (f"; the others went to {others}" if others else "")]
    if orphans:
        last = fleet[-1]
        where = "this runner, the last," if name == last else f"the last runner, {last},"
        lines.append(f"{_tests(len(orphans))} can run on no runner of the fleet; "
                     f"{where} reports them: skipped, or failed under --lm-require=fleet")
    return lines
