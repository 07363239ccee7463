"""``python -m pytest_lmbackend detect``: backend, task and deciding rule per model source and release."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.rules import KNOWN_RELEASES, Detection, UnknownReleaseError, detect_all, resolve_release

TYPE_CHECKING = False  # typing stays unimported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, TextIO

ALL = "all"
Outcome = Detection | Exception


def release_spec(text: str) -> tuple[str, ...]:
    """argparse ``type=``: ``all``, or a version (resolved to a known release)."""
    if text == ALL:
        return KNOWN_RELEASES
    try:
        release = resolve_release(text)
    except UnknownReleaseError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if text.strip().lstrip("v") != release:
        if release == KNOWN_RELEASES[-1]:
            # newer than every table: a rule may have changed since; answer, but say whose rules answer
            why = "the newest known"
        else:  # a pre-release, a local build, or a patch release that changed no rule
            why = "the newest known release at or before it"
        print(f"note: LMDeploy {text} is not a known release; answering with the rules of {release}, {why}",
              file=sys.stderr)
    return (release,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lmdeploy",
        type=release_spec,
        default=None,
        metavar="VERSION|all",
        help="which release's rules (default: the installed lmdeploy, else the newest known); "
        "'all' gives one column per known release",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line per path and release")
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    releases: tuple[str, ...] = args.lmdeploy or (resolve_release(None),)
    llm_only = bool(getattr(args, "language_model_only", False))
    if llm_only:
        from pytest_lmbackend.rules import rule_set

        without = [r for r in releases if rule_set(r).llm_only_switch is None]
        if without:
            print(f"note: --language-model-only has no effect for LMDeploy {', '.join(without[:3])}"
                  f"{', ...' if len(without) > 3 else ''}: no engine option forces the task there "
                  "(disable_vision_encoder came in 0.14)", file=sys.stderr)
    results = [(path, _outcomes(path, releases, llm_only)) for path in args.paths]
    if args.json:
        for path, outcomes in results:
            for release, outcome in outcomes.items():
                out.write(json.dumps(json_record(path, release, outcome)) + "\n")
    elif len(releases) == 1:
        release = releases[0]
        rows = [["PATH", "ARCH", "BACKEND", "TASK", f"RULE (LMDeploy {release})"]]
        for path, outcomes in results:
            o = outcomes[release]
            if isinstance(o, Detection):
                rows.append([path, o.arch or "-", o.backend, o.task, o.rule])
            else:
                rows.append([path, "-", "-", "-", f"{type(o).__name__}: {o}"])
        _table(rows, out)
    else:
        rows = [["PATH", "ARCH", *releases]]
        for path, outcomes in results:
            arch = next((o.arch for o in outcomes.values() if isinstance(o, Detection) and o.arch), "-")
            rows.append([path, arch, *(_cell(outcomes[r]) for r in releases)])
        _table(rows, out)
        errors = [(p, r, o) for p, oc in results for r, o in oc.items() if not isinstance(o, Detection)]
        for path, release, o in errors[:20]:
            out.write(f"{path} [{release}]: {type(o).__name__}: {o}\n")
        if len(errors) > 20:
            out.write(f"... and {len(errors) - 20} more errors (use --json)\n")
    ok = all(_is_typed(o) for _, outcomes in results for o in outcomes.values())
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detect")
    add_arguments(parser)
    return run(parser.parse_args(argv))
