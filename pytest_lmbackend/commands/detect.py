"""``python -m pytest_lmbackend detect``: backend, task and deciding rule per model source and release."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pytest_lmbackend import commands
from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.display import printable
from pytest_lmbackend.rules import KNOWN_RELEASES, Detection, UnknownReleaseError, detect_all, resolve_release

TYPE_CHECKING = False  # typing stays unimported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, TextIO

ALL = "all"
Outcome = Detection | Exception
# Exit statuses: every path answered (or, without --strict, got a typed error); an error that is not
# one of ours (a bug); usage errors (argparse's); --strict and some path got an error.
EXIT_OK, EXIT_UNTYPED, EXIT_USAGE, EXIT_ERRORS = 0, 1, 2, 3


class ReleaseChoice(tuple[str, ...]):
    """The releases ``--lmdeploy`` named; ``note`` says whose rules answer a version that is not a
    known release (printed by ``run``)."""

    note: str | None = None


def release_spec(text: str) -> ReleaseChoice:
    """argparse ``type=``: ``all``, or a version (resolved to a known release)."""
    if text == ALL:
        return ReleaseChoice(KNOWN_RELEASES)
    try:
        release = resolve_release(text)
    except UnknownReleaseError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    choice = ReleaseChoice((release,))
    if text.strip().lstrip("v") != release:
        if release == KNOWN_RELEASES[-1]:
            # newer than every table: a rule may have changed since; answer, but say whose rules answer
            why = "the newest known"
        else:  # a pre-release, a local build, or a patch release that changed no rule
            why = "the newest known release at or before it"
        choice.note = f"LMDeploy {text} is not a known release; answering with the rules of {release}, {why}"
    return choice


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lmdeploy",
        type=release_spec,
        default=None,
        metavar="VERSION|all",
        help="which release's rules (default: the installed lmdeploy, else the newest known); "
        "'all' gives one row per known release and one column per path",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line per path and release")
    parser.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_ERRORS} when any path got an error (a typed one included)",
    )
    parser.add_argument(
        "--language-model-only",
        action="store_true",
        help="as LMDeploy's language_model_only engine option (0.15+; disable_vision_encoder in 0.14)",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="model folder, config.json, TurboMind workspace, or hub id in the local HF cache",
    )


def _error(exc: Exception) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def json_record(path: str, release: str, outcome: Outcome) -> dict[str, Any]:
    """The ``--json`` object for one path and release (exactly the documented keys)."""
    if isinstance(outcome, Detection):
        return {
            "path": path, "lmdeploy": release, "arch": outcome.arch, "backend": outcome.backend,
            "task": outcome.task, "rule": outcome.rule, "error": None,
        }  # fmt: skip
    return {
        "path": path, "lmdeploy": release, "arch": None, "backend": None, "task": None, "rule": None,
        "error": _error(outcome),
    }  # fmt: skip


def _outcomes(path: str, releases: tuple[str, ...], llm_only: bool) -> dict[str, Outcome]:
    try:
        return detect_all(path, releases=releases, language_model_only=llm_only)
    except Exception as exc:  # reading failed: the same error for every release
        return dict.fromkeys(releases, exc)


def _is_typed(outcome: Outcome) -> bool:
    return isinstance(outcome, (Detection, ConfigError, UnknownReleaseError))


def _cell(outcome: Outcome) -> str:
    if isinstance(outcome, Detection):
        return f"{'TM' if outcome.backend == 'turbomind' else 'PT'} {outcome.task}"
    return "error"


def _table(rows: list[list[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; every cell made safe for the terminal first (a config's
    text with escape sequences or newlines must neither act nor forge rows)."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _arch(outcomes: dict[str, Outcome]) -> str:
    return next((o.arch for o in outcomes.values() if isinstance(o, Detection) and o.arch), "-")


def _one_release(results: list[tuple[str, dict[str, Outcome]]], release: str, out: TextIO) -> None:
    rows = [["PATH", "ARCH", "BACKEND", "TASK", f"RULE (LMDeploy {release})"]]
    for path, outcomes in results:
        o = outcomes[release]
        if isinstance(o, Detection):
            rows.append([path, o.arch or "-", o.backend, o.task, o.rule])
        else:
            rows.append([path, "-", "-", "-", f"{type(o).__name__}: {o}"])
    _table(rows, out)


def _by_release(results: list[tuple[str, dict[str, Outcome]]], releases: tuple[str, ...],
                out: TextIO) -> None:
    """Many releases: the paths numbered above, then one row per release and one column per path (a
    column per release would be 43 columns wide)."""
    for n, (path, outcomes) in enumerate(results, 1):
        out.write(printable(f"[{n}] {path}: {_arch(outcomes)}") + "\n")
    out.write("\n")
    rows = [["LMDEPLOY", *(f"[{n}]" for n in range(1, len(results) + 1))]]
    rows += [[release, *(_cell(outcomes[release]) for _, outcomes in results)] for release in releases]
    _table(rows, out)
    errors = [(p, r, o) for p, oc in results for r, o in oc.items() if not isinstance(o, Detection)]
    if errors:
        out.write("\n")
    for path, release, o in errors[:20]:
        out.write(printable(f"{path} [{release}]: {type(o).__name__}: {o}") + "\n")
    if len(errors) > 20:
        out.write(f"... and {len(errors) - 20} more errors (use --json)\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    releases: tuple[str, ...] = args.lmdeploy or (resolve_release(None),)
    note = getattr(args.lmdeploy, "note", None)
    if note is not None:
        commands.note(args, note)
    llm_only = bool(getattr(args, "language_model_only", False))
    if llm_only:
        from pytest_lmbackend.rules import rule_set

        without = [r for r in releases if rule_set(r).llm_only_switch is None]
        if without:
            commands.note(args, f"--language-model-only has no effect for LMDeploy {', '.join(without[:3])}"
                                f"{', ...' if len(without) > 3 else ''}: no engine option forces the task "
                                "there (disable_vision_encoder came in 0.14)")
    results = [(path, _outcomes(path, releases, llm_only)) for path in args.paths]
    if args.json:
        for path, outcomes in results:
            for release, outcome in outcomes.items():
                out.write(json.dumps(json_record(path, release, outcome)) + "\n")
    elif len(releases) == 1:
        _one_release(results, releases[0], out)
    else:
        _by_release(results, releases, out)
    outcomes_all = [o for _, outcomes in results for o in outcomes.values()]
    if not all(_is_typed(o) for o in outcomes_all):
        return EXIT_UNTYPED
    if getattr(args, "strict", False) and any(not isinstance(o, Detection) for o in outcomes_all):
        return EXIT_ERRORS
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detect")
    add_arguments(parser)
    return run(parser.parse_args(argv))
