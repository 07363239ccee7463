"""``python -m pytest_lmbackend bench MODEL_DIR --backend NAME|all``: start-up time per backend, by phase."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_lmbackend import commands
from pytest_lmbackend.bench.phases import RoundResult
from pytest_lmbackend.bench.report import BenchReport, format_table, machine_facts
from pytest_lmbackend.bench.runner import (
    BenchError,
    BenchOptions,
    PhaseDone,
    check_model_dir,
    measure_overhead,
    resolve_script,
    run_backend,
)
from pytest_lmbackend.bench.scripts import ALL_BACKENDS, SCRIPTS, check_options
from pytest_lmbackend.display import printable
from pytest_lmbackend.processes import Terminated, current_umask

EXIT_OK, EXIT_FAILED_ROUND, EXIT_USAGE = 0, 1, 2


def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        digits = text.strip().removeprefix("-")
        if not (digits.isascii() and digits.isdigit()):  # int() alone takes '١' and '²'... and '1_0'
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        if not text.isascii() or "_" in text:  # float() alone takes '١٠' and '1_0'
            raise ValueError(text)
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < 10**9:  # nan and inf too: a wait on inf seconds overflows
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def _options(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _plot_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".svg"):
        raise argparse.ArgumentTypeError(f"{text}: the plot must be a .png or .svg file")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ", ".join(sorted(n for n in SCRIPTS if n != "empty"))
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder with config.json")
    parser.add_argument(
        "--backend", action="append", metavar="NAME",
        help=f"{names}, all, or a round script FILE.py; repeat or comma-separate (default: all)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=_int_at_least(1), default=2, help="counted rounds (default 2)")
    parser.add_argument("--warmup", type=_int_at_least(0), default=0, help="uncounted rounds first")
    parser.add_argument(
        "--timeout", type=_seconds, default=600.0, metavar="S",
        help="a round running longer is killed and reported as timed out (default 600)",
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cold", dest="mode", action="store_const", const="cold",
                      help="a fresh interpreter per round (default)")  # fmt: skip
    mode.add_argument("--warm", dest="mode", action="store_const", const="warm",
                      help="rounds repeated inside one interpreter")  # fmt: skip
    parser.set_defaults(mode="cold")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--plot", type=_plot_path, metavar="FILE", help="stacked phase bars (.png or .svg)")
    parser.add_argument(
        "--save", type=Path, metavar="FILE",
        help="write the JSON report here, rewritten after every round (a killed run keeps what it measured)",
    )  # fmt: skip
    parser.add_argument("--keep-going", action="store_true",
                        help="run a backend's remaining rounds after one crashed or hung")  # fmt: skip
    parser.add_argument(
        "--options", type=_options, default={}, metavar="JSON",
        help='handed to the round scripts, e.g. \'{"eager_mode": true, "max_new_tokens": 8}\'',
    )  # fmt: skip
    parser.add_argument("--no-overhead", dest="overhead", action="store_false",
                        help="skip measuring the harness overhead")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="interpreter the rounds run in")


def backends_of(values: list[str] | None) -> list[str]:
    """``--backend`` values -> backend names in order, ``all`` expanded, duplicates dropped."""
    out: list[str] = []
    for value in values or ["all"]:
        for name in filter(None, (v.strip() for v in value.split(","))):
            for n in ALL_BACKENDS if name == "all" else (name,):
                if n not in out:
                    out.append(n)
    return out


def run(args: argparse.Namespace) -> int:
    # SIGTERM (a CI step's timeout) unwinds like Ctrl-C: the running round's processes are killed
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM through _terminate
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        kept = f"; {args.save} holds the rounds that finished" if args.save is not None else ""
        commands.error(args, f"interrupted by {signum.name}: the running round and everything it started "
                             f"were killed{kept}")
        return 128 + signum
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    results: dict[str, tuple[RoundResult, ...]] = {}
    machine = machine_facts()
    try:
        options = BenchOptions(
            rounds=args.rounds, warmup=args.warmup, timeout_s=args.timeout, mode=args.mode,
            python=args.python, script_options=args.options, keep_going=args.keep_going,
        )  # fmt: skip
        check_model_dir(args.model_dir)
        backends = backends_of(args.backend)
        if not backends:
            raise BenchError("--backend names no backend")
        names: dict[str, str] = {}
        for backend in backends:  # an unknown name fails before any round runs
            name, _ = resolve_script(backend)
            if name in names:  # results are keyed by name: two scripts would be merged into one
                raise BenchError(f"--backend {names[name]} and --backend {backend} would both be reported "
                                 f"as {name!r}: give the round scripts different file names")
            names[name] = backend
        if args.save is not None:
            _check_writable(args.save)
        problem = check_options(backends, dict(options.script_options))
        if problem is not None:
            raise BenchError(f"--options: {problem}")

        def progress(r: RoundResult) -> None:
            _show(r)
            results[r.backend] = (*results.get(r.backend, ()), r)
            if args.save is not None:
                _save(args.save, BenchReport(str(args.model_dir), options, results, None, machine))

        for backend in backends:
            run_backend(args.model_dir, backend, options, progress=progress, phase_progress=_show_phase)
    except BenchError as exc:
        commands.error(args, str(exc))
        return EXIT_USAGE
    overhead = None
    if args.overhead and args.mode == "cold":
        try:
            overhead = measure_overhead(args.python)
        except (BenchError, OSError, subprocess.SubprocessError) as exc:  # the rounds still count
            commands.note(args, f"harness overhead not measured: {exc}")
    report = BenchReport(str(args.model_dir), options, results, overhead, machine)
    if args.save is not None:
        _save(args.save, report)
    if args.plot is not None:
        from pytest_lmbackend.bench.plot import plot

        try:
            written = plot(report, args.plot)
        except Exception as exc:  # a missing picture must not cost the numbers
            commands.error(args, f"plot not written: {type(exc).__name__}: {exc}")
        else:
            print(printable(f"bench: plot written to {written}"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(format_table(report))
    return EXIT_FAILED_ROUND if report.failed() else EXIT_OK


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(f"received {signal.Signals(signum).name}")


def _show_phase(p: PhaseDone) -> None:
    """A progress line as each phase of a running round ends, on stderr: long rounds show where they are."""
    kind = "warm-up" if p.warmup else "round"
    name = f"{p.parent} / {p.name}" if p.parent else p.name
    failed = " (failed)" if p.failed else ""
    print(printable(f"bench: {p.backend} {p.mode} {kind} {p.index + 1}: {name} {p.seconds:.2f} s{failed}"),
          file=sys.stderr, flush=True)


def _show(r: RoundResult) -> None:
    """The progress line of one round, on stderr."""
    kind = "warm-up" if r.warmup else "round"
    what = f"{r.elapsed_s:.2f} s" if r.ok else f"{r.status}: {r.error}"
    slow = max(r.phases, key=lambda p: p.seconds, default=None) if r.ok else None
    detail = f" (longest: {slow.name} {slow.seconds:.2f} s)" if slow else ""
    print(printable(f"bench: {r.backend} {r.mode} {kind} {r.index + 1}: {what}{detail}"), file=sys.stderr,
          flush=True)


def _check_writable(path: Path) -> None:
    """Before a round runs: a --save target that cannot be written would cost every round. Only a
    file made here for the purpose is written and removed: never one that was there."""
    if path.is_dir():
        raise BenchError(f"--save {path}: is a folder; give a file name such as {path / 'startup.json'}")
    if not path.parent.is_dir():
        raise BenchError(f"--save {path}: folder {path.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".check")
    except OSError as exc:
        raise BenchError(f"--save {path}: cannot write there: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _save(path: Path, report: BenchReport) -> None:
    """Write the JSON beside ``path`` under a fresh name, then move it over ``path`` in one step, so a
    reader (or a kill) never meets half a file; permissions as any file the user creates (umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(report.to_json(), indent=1) + "\n")
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
