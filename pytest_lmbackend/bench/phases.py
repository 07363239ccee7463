"""The start-up phase model: named phases per round, round outcomes, and statistics over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

# Top-level phases in the order a start-up goes through them; a backend records the ones it has.
PHASE_ORDER: tuple[str, ...] = (
    "interpreter start",
    "import torch",
    "import transformers",
    "import lmdeploy",
    "detection",
    "device init",
    "config load",
    "tokenizer load",
    "weight load",
    "engine construction",
    "first token",
    "second request",
    "close",
    "exit",
)

# Sub-phases of LMDeploy's engine construction, in the order the engine runs them.
ENGINE_PHASES: tuple[str, ...] = (
    "backend config",
    "chat template",
    "tokenizer load",
    "config load",
    "environment check",
    "executor build",
    "model build",
    "memory profiling",
    "graph runner",
    "cache engine",
    "warm-up / graph capture",
    "engine build",
    "engine start",
)

# Time inside a parent phase that no sub-phase claims gets this row, so sub-phases always add up.
OTHER = "other"

RoundStatus = Literal["ok", "crashed", "timeout", "unavailable"]
STATUSES: tuple[RoundStatus, ...] = ("ok", "crashed", "timeout", "unavailable")
Mode = Literal["cold", "warm"]


@dataclass(frozen=True)
class Phase:
    """One named stretch of a round, in seconds since the round began.

    :param parent: the enclosing top-level phase for a sub-phase (LMDeploy's engine construction).
    :param failed: the phase raised; it ends where the failure surfaced.
    """

    name: str
    start: float
    end: float
    parent: str | None = None
    failed: bool = False

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


def _frozen(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(data or {}))


@dataclass(frozen=True)
class RoundResult:
    """What one round did. Only an ``ok`` round has a wall time; the others say why they have none.

    :param elapsed_s: seconds until the round ended, crashed or was killed (for the record only).
    :param warmup: a warm-up round: reported, never counted in statistics.
    """

    backend: str
    index: int
    mode: Mode
    status: RoundStatus
    elapsed_s: float
    phases: tuple[Phase, ...] = ()
    warmup: bool = False
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=lambda: _frozen(None))

    def __post_init__(self) -> None:
        if not isinstance(self.info, MappingProxyType):
            object.__setattr__(self, "info", _frozen(self.info))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def wall_s(self) -> float | None:
        return self.elapsed_s if self.ok else None

    def top_level(self) -> tuple[Phase, ...]:
        return tuple(p for p in self.phases if p.parent is None)

    def durations(self) -> dict[str, float]:
        """Phase (or ``parent/sub``) -> seconds, summing repeats; sub-phases gain an ``other`` share."""
        out: dict[str, float] = {}
        children: dict[str, float] = {}
        for p in self.phases:
            key = p.name if p.parent is None else f"{p.parent}/{p.name}"
            out[key] = out.get(key, 0.0) + p.seconds
            if p.parent is not None:
                children[p.parent] = children.get(p.parent, 0.0) + p.seconds
        for parent, claimed in children.items():
            if parent in out:
                out[f"{parent}/{OTHER}"] = max(0.0, out[parent] - claimed)
        return out

    def coverage(self) -> float:
        """Share of the round's elapsed time that named top-level phases account for."""
        if self.elapsed_s <= 0:
            return 0.0
        return min(1.0, sum(p.seconds for p in self.top_level()) / self.elapsed_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "index": self.index,
            "mode": self.mode,
            "status": self.status,
            "warmup": self.warmup,
            "wall_s": _round(self.wall_s),
            "elapsed_s": _round(self.elapsed_s),
            "coverage": _round(self.coverage()) if self.ok else None,
            "error": self.error,
            "phases": [
                {
                    "name": p.name,
                    "parent": p.parent,
                    "start_s": _round(p.start),
                    "seconds": _round(p.seconds),
                    **({"failed": True} if p.failed else {}),
                }
                for p in self.phases
            ],
            "info": dict(self.info),
        }


@dataclass(frozen=True)
class Stats:
    """Spread of one quantity over the counted rounds."""

    n: int
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values")
        return cls(n=len(values), min=min(values), median=statistics.median(values), max=max(values))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "min": _round(self.min), "median": _round(self.median), "max": _round(self.max)}


@dataclass(frozen=True)
class BackendSummary:
    """Statistics of one backend's counted rounds, and how many rounds ended each way."""

    backend: str
    counts: Mapping[str, int]
    wall: Stats | None
    phases: Mapping[str, Stats]
    coverage_min: float | None
    errors: tuple[str, ...] = ()

    @property
    def counted(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "counts": dict(self.counts),
            "wall": self.wall.to_json() if self.wall else None,
            "coverage_min": _round(self.coverage_min),
            "phases": {k: v.to_json() for k, v in self.phases.items()},
            "errors": list(self.errors),
        }


def summarize(backend: str, rounds: Iterable[RoundResult]) -> BackendSummary:
    """Min/median/max per phase over the ``ok`` rounds that are not warm-ups; other rounds only count."""
    rounds_list = list(rounds)
    counted = [r for r in rounds_list if not r.warmup]
    counts: dict[str, int] = {s: sum(1 for r in counted if r.status == s) for s in STATUSES}
    ok = [r for r in counted if r.ok]
    per_phase: dict[str, list[float]] = {}
    for r in ok:
        for key, seconds in r.durations().items():
            per_phase.setdefault(key, []).append(seconds)
    phases = {k: Stats.of(v) for k, v in sorted(per_phase.items(), key=lambda kv: phase_sort_key(kv[0]))}
    # a warm-up that failed is not counted, but its reason is shown: in warm mode it is the one round
    # that pays the imports, and a failure there leaves no counted round at all
    errors = tuple(dict.fromkeys(f"{'warm-up ' if r.warmup else ''}{r.status}: {r.error}"
                                 for r in rounds_list if not r.ok and r.error))
    return BackendSummary(
        backend=backend,
        counts=counts,
        wall=Stats.of([r.elapsed_s for r in ok]) if ok else None,
        phases=phases,
        coverage_min=min(r.coverage() for r in ok) if ok else None,
        errors=errors,
    )


def phase_sort_key(key: str) -> tuple[int, str, int, str]:
    """Order keys as a start-up runs: top-level by PHASE_ORDER, then each parent's sub-phases."""
    top, _, sub = key.partition("/")
    top_rank = PHASE_ORDER.index(top) if top in PHASE_ORDER else len(PHASE_ORDER)
    if not sub:
        return (top_rank, top, -1, "")
    if sub == OTHER:
        return (top_rank, top, len(ENGINE_PHASES) + 1, sub)
    sub_rank = ENGINE_PHASES.index(sub) if sub in ENGINE_PHASES else len(ENGINE_PHASES)
    return (top_rank, top, sub_rank, sub)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
