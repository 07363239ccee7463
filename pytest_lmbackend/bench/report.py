"""A benchmark's results as JSON and as a phase table (phases as rows, backends as columns)."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_lmbackend.backends import package_versions
from pytest_lmbackend.bench.phases import OTHER, BackendSummary, RoundResult, Stats, phase_sort_key, summarize
from pytest_lmbackend.bench.runner import BenchOptions, Overhead
from pytest_lmbackend.display import printable

# Named phases must explain at least this share of a round, and the harness cost at most this.
MIN_COVERAGE = 0.95
MAX_OVERHEAD = 0.02

VERSIONED = ("torch", "transformers", "tokenizers", "safetensors", "triton", "lmdeploy", "pytest-benchmark")


@dataclass(frozen=True)
class BenchReport:
    """Every round of every backend, the harness overhead, and what the machine was."""

    model_dir: str
    options: BenchOptions
    rounds: Mapping[str, tuple[RoundResult, ...]]
    overhead: Overhead | None = None
    machine: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def summaries(self) -> dict[str, BackendSummary]:
        return {name: summarize(name, rs) for name, rs in self.rounds.items()}

    def failed(self) -> bool:
        """A round crashed or hung (an unavailable backend is not a failure of the run)."""
        return any(r.status in ("crashed", "timeout") for rs in self.rounds.values() for r in rs)

    def checks(self) -> list[str]:
        """Honesty checks that did not hold: phase coverage and harness overhead per backend."""
        out: list[str] = []
        for name, s in self.summaries().items():
            if s.coverage_min is not None and s.coverage_min < MIN_COVERAGE:
                out.append(f"{name}: named phases cover only {s.coverage_min:.1%} of a round")
            if self.overhead is not None and s.wall is not None and self.options.mode == "cold":
                share = self.overhead.share_of(s.wall.median)
                if share > MAX_OVERHEAD:
                    out.append(f"{name}: harness overhead {share:.1%} of the median round")
        return out

    def to_json(self) -> dict[str, Any]:
        summaries = self.summaries()
        return {
            "model_dir": self.model_dir,
            "model": model_facts(self.model_dir),
            "mode": self.options.mode,
            "rounds": self.options.rounds,
            "warmup": self.options.warmup_rounds,  # warm mode: the import-paying round counts
            "timeout_s": self.options.timeout_s,
            "script_options": dict(self.options.script_options),
            "machine": dict(self.machine),
            "overhead": self.overhead.to_json() if self.overhead else None,
            "checks_failed": self.checks(),
            "backends": {
                name: {"summary": summaries[name].to_json(), "rounds": [r.to_json() for r in rs]}
                for name, rs in self.rounds.items()
            },
        }


def model_facts(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the timed model is, so results of different models are not compared unawares: its
    resolved folder, architecture, model type and size fields from config.json (nothing imported)."""
    folder = Path(model_dir).resolve()
    facts: dict[str, Any] = {"path": str(folder)}
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return facts
    if isinstance(data, dict):
        archs = data.get("architectures")
        facts["arch"] = archs[0] if isinstance(archs, list) and archs else None
        for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key in data:
                facts[key] = data[key]
    return facts


def machine_facts() -> dict[str, Any]:
    """Python, package versions (metadata only, nothing imported) and the GPUs, driver and CUDA."""
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "versions": package_versions((*VERSIONED, "pytest-lmbackend")),
    }
    try:  # the project's probe: NVML, then nvidia-smi; never CUDA
        from pytest_lmbackend.hardware import probe

        hw = probe()
        facts.update(
            gpus=[{"name": g.name, "capability": f"{g.capability[0]}.{g.capability[1]}",
                   "memory_total": g.memory_total} for g in hw.gpus],
            driver=hw.driver,
            cuda=hw.cuda,
            gpu_source=hw.source,
        )  # fmt: skip
    except Exception as exc:  # machine facts are decoration: never fail a benchmark over them
        facts["gpu_error"] = f"{type(exc).__name__}: {exc}"
    return facts


def format_table(report: BenchReport) -> str:
    """Phases as rows, backends as columns; each cell ``median (min-max)`` in seconds."""
    summaries = report.summaries()
    names = list(summaries)
    keys = sorted({k for s in summaries.values() for k in s.phases}, key=phase_sort_key)
    rows: list[list[str]] = [["phase (s)", *names]]
    for key in keys:
        top, _, sub = key.partition("/")
        label = f"  {sub}" if sub else top
        if sub == OTHER:
            label = f"  {OTHER} ({top})"
        rows.append([label, *(_cell(summaries[n].phases.get(key)) for n in names)])
    rows.append(["wall", *(_cell(summaries[n].wall) if summaries[n].wall else "-" for n in names)])
    rows.append(["named phases cover", *(_coverage(summaries[n]) for n in names)])
    rows.append(["rounds", *(_counts(summaries[n]) for n in names)])
    if report.overhead is not None:
        ov = report.overhead
        rows.append(["harness overhead", *(_overhead(ov, summaries[n], report.options.mode) for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    head = (
        f"{report.options.mode} start-up of {report.model_dir}: {report.options.rounds} round(s)"
        + (f" after {report.options.warmup_rounds} warm-up" if report.options.warmup_rounds else "")
        + f", timeout {report.options.timeout_s:g} s"
    )
    notes = [f"{n}: {e}" for n in names for e in summaries[n].errors]
    if report.overhead is not None:
        notes.append(
            f"harness overhead: empty round {report.overhead.empty_round_s:.3f} s vs bare interpreter "
            f"{report.overhead.bare_s:.3f} s (median of {report.overhead.samples})"
        )
    notes.extend(f"check failed: {c}" for c in report.checks())
    # folder, backend (a script's file name) and error texts come from outside: one safe line each
    return "\n".join(printable(line) for line in [head, "", *lines, *(["", *notes] if notes else [])])


def _cell(stats: Stats | None) -> str:
    if stats is None:
        return "-"
    if stats.n == 1:
        return f"{stats.median:.3f}"
    return f"{stats.median:.3f} ({stats.min:.3f}-{stats.max:.3f})"


def _coverage(s: BackendSummary) -> str:
    return "-" if s.coverage_min is None else f"{s.coverage_min:.1%} (min)"


def _counts(s: BackendSummary) -> str:
    parts = [f"{n} {status}" for status, n in s.counts.items() if n]
    return ", ".join(parts) or "none"


def _overhead(ov: Overhead, s: BackendSummary, mode: str) -> str:
    if s.wall is None:
        return "-"
    if mode != "cold":
        return f"{ov.overhead_s:.3f} s"
    return f"{ov.overhead_s:.3f} s ({ov.share_of(s.wall.median):.1%})"
