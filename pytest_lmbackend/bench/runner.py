"""Run rounds in fresh interpreters (cold) or repeated in one (warm), with a per-round timeout."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest_lmbackend
from pytest_lmbackend.bench.phases import Mode, Phase, RoundResult, RoundStatus
from pytest_lmbackend.bench.scripts import SCRIPTS
from pytest_lmbackend.processes import ProcessGroup, sigterm_interrupts

CHILD_MODULE = "pytest_lmbackend.bench.child"
# Offline always: a benchmark that reached for the hub would time the network.
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
LOG_TAIL_CHARS = 3000

Progress = Callable[[RoundResult], None]
# a phase that just ended in the measured process: (name, seconds, parent or None, iteration, failed)
PhaseProgress = Callable[[str, float, "str | None", int, bool], None]


@dataclass(frozen=True)
class PhaseDone:
    """A phase that just ended inside a running round: what long rounds show while they run."""

    backend: str
    mode: Mode
    index: int
    warmup: bool
    name: str
    parent: str | None
    seconds: float
    failed: bool = False


class BenchError(Exception):
    """Bad benchmark input (unknown backend, missing model folder); the message says which."""


@dataclass(frozen=True)
class BenchOptions:
    """How to run one backend's rounds.

    :param warmup: rounds run first and reported, never counted. In warm mode the first in-process
        iteration (the one that pays the imports) is always a warm-up.
    :param timeout_s: a round still running after this is killed and reported as ``timeout``.
    :param script_options: handed to the round script (``eager_mode``, ``max_new_tokens``, ...).
    :param keep_going: run the remaining cold rounds after one crashed or hung; by default they are
        skipped, since a broken or hanging engine would only spend the time budget again.
    """

    rounds: int = 2
    warmup: int = 0
    timeout_s: float = 600.0
    mode: Mode = "cold"
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    script_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    keep_going: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise BenchError(f"rounds must be at least 1, got {self.rounds}")
        if self.warmup < 0:
            raise BenchError(f"warmup must not be negative, got {self.warmup}")
        if self.timeout_s <= 0:
            raise BenchError(f"timeout must be positive, got {self.timeout_s}")
        if self.mode not in ("cold", "warm"):
            raise BenchError(f"mode must be 'cold' or 'warm', got {self.mode!r}")

    @property
    def warmup_rounds(self) -> int:
        """Warm-up rounds that really run: in warm mode at least the one that pays the imports."""
        return max(1, self.warmup) if self.mode == "warm" else self.warmup


@dataclass(frozen=True)
class Overhead:
    """The harness's own cost: an empty round against a bare ``python -c pass``, medians in seconds."""

    bare_s: float
    empty_round_s: float
    samples: int

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.empty_round_s - self.bare_s)

    def share_of(self, wall_s: float) -> float:
        return self.overhead_s / wall_s if wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "bare_interpreter_s": round(self.bare_s, 4),
            "empty_round_s": round(self.empty_round_s, 4),
            "overhead_s": round(self.overhead_s, 4),
            "samples": self.samples,
        }


def resolve_script(backend: str) -> tuple[str, str]:
    """Backend name or round-script file -> (name, target for the child)."""
    if backend in SCRIPTS:
        return backend, SCRIPTS[backend]
    file, colon, function = (backend, "", "") if backend.endswith(".py") else backend.partition(":")
    path = Path(file)
    if path.suffix == ".py":
        if not path.is_file():
            raise BenchError(f"round script {path} does not exist")
        return path.stem + (f":{function}" if function else ""), str(path.resolve()) + colon + function
    known = ", ".join(sorted(n for n in SCRIPTS if n != "empty"))  # "empty" measures the harness only
    raise BenchError(f"no start-up round for backend {backend!r}: the benchmark times {known} (a backend "
                     "registered by a plugin needs its own round script: pass FILE.py)")


def check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise BenchError(f"{path}: not a model folder (no config.json)")
    return path.resolve()


def run_backend(
    model_dir: str | Path, backend: str, options: BenchOptions, progress: Progress | None = None,
    phase_progress: Callable[[PhaseDone], None] | None = None,
) -> list[RoundResult]:
    """All rounds of one backend. A failed round is reported and the next one still runs, except
    after ``unavailable`` (nothing would change) or a warm process that died (nothing is left).

    :param progress: called with each round as it ends.
    :param phase_progress: called with each phase as it ends, while its round runs.
    """
    name, target = resolve_script(backend)
    model = check_model_dir(model_dir)
    results: list[RoundResult] = []
    if options.mode == "cold":
        for i in range(options.warmup + options.rounds):
            warm_up = i < options.warmup
            r = run_cold_round(options, name, target, model, index=i if warm_up else i - options.warmup,
                               warmup=warm_up, phase_progress=phase_progress)  # fmt: skip
            results.append(r)
            if progress:
                progress(r)
            if r.status == "unavailable" or (not r.ok and not options.keep_going):
                break
        return results
    lead = options.warmup_rounds

    def on_phase(phase: str, seconds: float, parent: str | None, i: int, failed: bool) -> None:
        if phase_progress is not None:
            index = i if i < lead else i - lead
            phase_progress(PhaseDone(name, "warm", index, i < lead, phase, parent, seconds, failed))

    with tempfile.TemporaryDirectory(prefix="lmbench-") as work:
        res = _run_process(
            options, target, model, Path(work), f"{name}-warm", iterations=lead + options.rounds,
            on_phase=on_phase,
        )
    for r in _warm_rounds(name, lead, res):
        results.append(r)
        if progress:
            progress(r)
    return results


def run_cold_round(
    options: BenchOptions, name: str, target: str, model: Path, *, index: int = 0, warmup: bool = False,
    phase_progress: Callable[[PhaseDone], None] | None = None,
) -> RoundResult:
    """One round in a fresh interpreter: spawn, run the round script once, exit."""

    def on_phase(phase: str, seconds: float, parent: str | None, i: int, failed: bool) -> None:
        if phase_progress is not None:
            phase_progress(PhaseDone(name, "cold", index, warmup, phase, parent, seconds, failed))

    with tempfile.TemporaryDirectory(prefix="lmbench-") as work:
        res = _run_process(options, target, model, Path(work), f"{name}-{index}", iterations=1,
                           on_phase=on_phase)
    return _cold_round(name, index, warmup, res)


_contexts: dict[tuple[str, str], Any] = {}


def run_in_process(
    name: str, target: str, model: Path, options: BenchOptions, *, index: int = 0
) -> RoundResult:
    """One warm round inside this process (no timeout can apply: nothing here could stop it).

    The round script and its state are kept per (script, model), so hooks are installed once.
    """
    from pytest_lmbackend.bench.child import MemoryEvents, RoundContext, Unavailable, load_target

    key = (target, str(model))
    if key not in _contexts:
        _contexts[key] = (
            load_target(target),
            RoundContext(MemoryEvents(), str(model), dict(options.script_options)),
        )
    run, ctx = _contexts[key]
    events = MemoryEvents()
    ctx.events = events
    ctx.options = dict(options.script_options)
    ctx.iteration = 0
    status: RoundStatus = "ok"
    error: str | None = None
    t0 = time.monotonic()
    try:
        run(ctx)
    except Unavailable as exc:
        status, error = "unavailable", str(exc)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:
        # the measured code failed: a crashed round, or an unavailable one when it skipped
        # (pytest.importorskip) - never an exception loose in the caller's benchmark timer
        if type(exc).__name__ == "Skipped":
            status, error = "unavailable", str(exc) or "skipped"
        elif isinstance(exc, SystemExit):
            status, error = "crashed", f"SystemExit({exc.code!r}) before the round finished"
        else:
            status, error = "crashed", f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - t0
    phases = tuple(_phases(events.items, 0, t0))
    return RoundResult(name, index, "warm", status, elapsed, phases, False, error, _info(events.items, 0, t0))


def measure_overhead(python: str = sys.executable, samples: int = 3) -> Overhead:
    """Median spawn-to-exit time of ``python -c pass`` and of an empty round, alternated."""
    bare: list[float] = []
    empty: list[float] = []
    options = BenchOptions(rounds=1, python=python, timeout_s=60)
    with tempfile.TemporaryDirectory(prefix="lmbench-") as work:
        model = Path(work)
        for i in range(samples):
            t = time.monotonic()
            try:
                subprocess.run([python, "-c", "pass"], env=_child_env(options), check=True, cwd=work)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise BenchError(f"the bare interpreter {python!r} did not run: {exc}") from exc
            bare.append(time.monotonic() - t)
            res = _run_process(options, SCRIPTS["empty"], model, model, f"empty-{i}", iterations=1)
            if res.rc != 0:
                raise BenchError(f"the empty round failed (exit {res.rc}): {res.log_tail}")
            empty.append(res.reaped - res.spawned)
    return Overhead(bare_s=statistics.median(bare), empty_round_s=statistics.median(empty), samples=samples)


# --------------------------------------------------------------------------------------------
# one measured process


@dataclass
class _Process:
    spawned: float
    reaped: float
    rc: int | None
    timed_out: bool
    events: list[dict[str, Any]]
    log_tail: str
    timeout_s: float


def _child_env(options: BenchOptions) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CHILD_ENV)
    env.update(options.env)
    # the child imports this package from the same place as the parent, installed or not
    root = str(Path(pytest_lmbackend.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_process(
    options: BenchOptions,
    target: str,
    model: Path,
    work: Path,
    tag: str,
    *,
    iterations: int,
    on_phase: PhaseProgress | None = None,
) -> _Process:
    events_path = work / f"{tag}.jsonl"
    log_path = work / f"{tag}.log"
    cmd = [
        options.python, "-m", CHILD_MODULE, "--script", target, "--model", str(model),
        "--events", str(events_path), "--iterations", str(iterations),
        "--options", json.dumps(dict(options.script_options)),
    ]  # fmt: skip
    env = _child_env(options)
    with open(log_path, "wb") as log, sigterm_interrupts():
        try:
            group = ProcessGroup(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=work)  # fmt: skip
        except OSError as exc:
            raise BenchError(f"cannot start the interpreter {options.python!r}: {exc}") from exc
        # leaving this block any way (the end, a timeout, Ctrl-C, SIGTERM, an error) kills the
        # process group: engine helpers left behind in the child's session die with it
        with group:
            timed_out = _watch(group, events_path, options.timeout_s, on_phase)
            rc = group.kill()
    spawned = group.spawned
    end = group.exited_at if group.exited_at is not None else time.monotonic()
    return _Process(
        spawned=spawned,
        reaped=end,
        rc=rc,
        timed_out=timed_out,
        events=_read_events(events_path),
        log_tail=log_path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:],
        timeout_s=options.timeout_s,
    )


def _watch(group: ProcessGroup, events_path: Path, timeout_s: float, on_phase: PhaseProgress | None) -> bool:
    """Wait for the process; True when it ran past the timeout, which restarts at each finished
    iteration (warm mode). Phases that ended since the last look go to ``on_phase``."""
    deadline = group.spawned + timeout_s
    seen_ends = 0
    seen_phases = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        # the exit is seen at once; the events file is read now and then for progress
        exited = group.wait(min(remaining, 0.5))
        events = _read_events(events_path)
        phases = [e for e in events if e.get("ev") == "phase"]
        if on_phase is not None:
            for e in phases[seen_phases:]:
                on_phase(str(e["name"]), float(e["end"]) - float(e["start"]), e.get("parent"), int(e["i"]),
                         bool(e.get("failed")))
        seen_phases = len(phases)
        if exited:
            return False
        ends = [e for e in events if e.get("ev") == "end"]
        if len(ends) > seen_ends:
            seen_ends = len(ends)
            deadline = float(ends[-1]["t"]) + timeout_s


def _read_events(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:  # the line a killed process was writing
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


# --------------------------------------------------------------------------------------------
# events -> rounds


def _cold_round(backend: str, index: int, warmup: bool, res: _Process) -> RoundResult:
    t0 = res.spawned
    start = next((e for e in res.events if e.get("ev") == "start"), None)
    phases: list[Phase] = []
    if start is not None:
        phases.append(Phase("interpreter start", 0.0, float(start["t"]) - t0))
    status, error = _outcome(res, 0)
    phases.extend(_phases(res.events, 0, t0, cut=None if status == "ok" else res.reaped))
    if status == "ok":
        end = next(e for e in res.events if e.get("ev") == "end")
        phases.append(Phase("exit", float(end["t"]) - t0, res.reaped - t0))
    info = _info(res.events, 0, t0)
    if status != "ok":
        info["log_tail"] = res.log_tail
    return RoundResult(backend, index, "cold", status, res.reaped - t0, tuple(phases), warmup, error, info)


def _warm_rounds(backend: str, lead: int, res: _Process) -> list[RoundResult]:
    out: list[RoundResult] = []
    begins = {int(e["i"]): float(e["t"]) for e in res.events if e.get("ev") == "round"}
    ends = {int(e["i"]): float(e["t"]) for e in res.events if e.get("ev") == "end"}
    for i in sorted(begins):
        t0 = begins[i]
        status, error = _outcome(res, i)
        elapsed = (ends[i] if i in ends else res.reaped) - t0
        info = _info(res.events, i, t0)
        if status != "ok":
            info["log_tail"] = res.log_tail
        index = i if i < lead else i - lead
        out.append(
            RoundResult(backend, index, "warm", status, elapsed, tuple(_phases(res.events, i, t0)), i < lead,
                        error, info)
        )  # fmt: skip
    if not begins:  # died before its first iteration
        status, error = _outcome(res, 0)
        out.append(RoundResult(backend, 0, "warm", status, res.reaped - res.spawned, (), True, error,
                               {"log_tail": res.log_tail}))  # fmt: skip
    return out


def _phases(events: Sequence[Mapping[str, Any]], i: int, t0: float,
            cut: float | None = None) -> list[Phase]:
    """The phases of iteration ``i``; with ``cut`` (when the process was killed), the phases that had
    started and never ended too, ending at ``cut`` and marked failed: where a hang or crash was."""
    done = [e for e in events if e.get("ev") == "phase" and e.get("i") == i]
    out = [Phase(e["name"], float(e["start"]) - t0, float(e["end"]) - t0, e.get("parent"), bool(e["failed"]))
           for e in done]
    if cut is not None:
        ended = {(e["name"], e.get("parent"), float(e["start"])) for e in done}
        for e in events:
            if (e.get("ev") == "phase-start" and e.get("i") == i
                    and (e["name"], e.get("parent"), float(e["start"])) not in ended):
                out.append(Phase(e["name"], float(e["start"]) - t0, cut - t0, e.get("parent"), True))
    return out


def _info(events: Sequence[Mapping[str, Any]], i: int, t0: float) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for e in events:
        if e.get("ev") == "info" and e.get("i") == i and isinstance(e.get("data"), dict):
            info.update(e["data"])
    if isinstance(info.get("log"), list):  # absolute monotonic marks -> seconds into the round
        info["log"] = [[round(float(t) - t0, 3), msg] for t, msg in info["log"]]
    return info


def _outcome(res: _Process, i: int) -> tuple[RoundStatus, str | None]:
    """Status of iteration ``i``: only a finished iteration of a process that exited cleanly is ok."""
    mine = [e for e in res.events if e.get("i") == i]
    for e in mine:
        if e.get("ev") == "unavailable":
            return "unavailable", str(e.get("reason"))
        if e.get("ev") == "error":
            return "crashed", f"{e.get('type')}: {e.get('message')}"
    finished = any(e.get("ev") == "end" for e in mine)
    # warm: an iteration is done once the next one began, whatever happened to the process later
    went_on = any(e.get("ev") == "round" and int(e.get("i", -1)) > i for e in res.events)
    if finished and (res.rc == 0 or went_on):
        return "ok", None
    if res.timed_out:
        return "timeout", f"no result within the {res.timeout_s:g} s timeout; the process was killed"
    return "crashed", _exit_reason(res.rc)


def _exit_reason(rc: int | None) -> str:
    if rc is None:
        return "the process did not exit"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc} before the round finished"
