"""``python -m pytest_lmbackend audit``: the rules against a real LMDeploy over model folders, by rule."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_lmbackend import commands
from pytest_lmbackend.display import printable

TYPE_CHECKING = False  # typing stays unimported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any, TextIO

    from pytest_lmbackend.verify import Check

EXIT_DISAGREE = 1
EXIT_UNASKED = 3  # the real LMDeploy could not be asked at all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--python", metavar="PYTHON", default=None,
        help="the interpreter whose LMDeploy answers (default: this one, when it has lmdeploy)",
    )
    parser.add_argument(
        "--lmdeploy", metavar="VERSION", default=None,
        help="whose rules to hold against it (default: the rules for that LMDeploy's version: the newest "
             "known at or below it)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per folder")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="LMDeploy processes (default 1)")
    parser.add_argument(
        "dirs", nargs="+", metavar="DIR",
        help="model folders (with config.json, or a TurboMind workspace), or folders of them",
    )


def model_folders(dirs: Sequence[str]) -> list[str]:
    """Each DIR that is a model folder, else its sub-folders that are (sorted).

    :raises ValueError: a DIR that is neither.
    """
    found: list[str] = []
    for given in dirs:
        if _is_model(given):
            found.append(given)
            continue
        try:
            names = sorted(os.listdir(given))
        except OSError as exc:
            raise ValueError(f"{given}: {exc.strerror or exc}") from None
        inner = [os.path.join(given, n) for n in names if _is_model(os.path.join(given, n))]
        if not inner:
            raise ValueError(f"{given}: no config.json here or in its sub-folders")
        found += inner
    return found


def _is_model(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, "config.json"))
            or os.path.isdir(os.path.join(path, "triton_models")))


@dataclass(frozen=True)
class Group:
    """The disagreements one of our rules is behind."""

    rule: str
    checks: tuple[Check, ...]


def deciding_rule(check: Check) -> str:
    """The part of our answer that differs: the backend's rule, the task's, or our error."""
    ours, theirs = check.ours, check.theirs
    if isinstance(ours, Exception):
        return f"{type(ours).__name__} on field {getattr(ours, 'field', None)!r}"
    parts = ours.rule.split("; ")
    if theirs.error is None and ours.backend == theirs.backend:
        return parts[-1]  # the task differs: the VL rule decided it
    return parts[0]


def group(checks: Sequence[Check]) -> list[Group]:
    """Disagreements by the rule behind them, the rule with the most first."""
    by_rule: dict[str, list[Check]] = {}
    for check in checks:
        if check.disagreement is not None and not check.unasked:
            by_rule.setdefault(deciding_rule(check), []).append(check)
    return [Group(rule, tuple(c)) for rule, c in sorted(by_rule.items(), key=lambda kv: (-len(kv[1]), kv[0]))]


def _json(check: Check) -> dict[str, Any]:
    from pytest_lmbackend.oracle.__main__ import error_object

    ours = check.ours
    mine: dict[str, Any]
    if isinstance(ours, Exception):
        mine = {"arch": None, "backend": None, "task": None, "rule": None,
                "error": {"type": type(ours).__name__, "message": str(ours)}}
    else:
        mine = {"arch": ours.arch, "backend": ours.backend, "task": ours.task, "rule": ours.rule,
                "error": None}
    t = check.theirs
    return {
        "path": check.label, "rules": check.rules, "lmdeploy": check.lmdeploy, "ours": mine,
        "theirs": {"arch": t.arch, "backend": t.backend, "task": t.task, "error": error_object(t.error)},
        "agree": check.disagreement is None and not check.unasked, "unasked": check.unasked,
    }


def report(checks: Sequence[Check], python: str, out: TextIO) -> None:
    """The table: a line per rule behind disagreements, the folders under it with both answers."""
    from pytest_lmbackend.verify import shown

    agree = sum(c.disagreement is None and not c.unasked for c in checks)
    unasked = [c for c in checks if c.unasked]
    first = checks[0] if checks else None
    whose = f"LMDeploy {first.lmdeploy} ({python}) against the rules of {first.rules}" if first else python
    out.write(printable(f"{whose}: {agree} of {len(checks)} folders agree") + "\n")
    groups = group(checks)
    if groups:
        out.write("\nDISAGREEMENTS BY RULE (ours -> LMDeploy's)\n")
    for g in groups:
        out.write("\n" + printable(f"{len(g.checks):>4}  {g.rule}") + "\n")
        for c in g.checks:  # paths and the answers' texts come from the configs: one safe line each
            out.write(printable(f"      {c.label}: {shown(c.ours)} -> {shown(c.theirs)}") + "\n")
    for c in unasked:
        out.write(printable(f"not asked: {c.label}: {c.theirs.error}") + "\n")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from pytest_lmbackend.oracle import Oracle, OracleError
    from pytest_lmbackend.rules import UnknownReleaseError, resolve_release
    from pytest_lmbackend.verify import ask, default_python, detect_outcome, interpreter

    out = out or sys.stdout
    try:
        how = "python -m pytest_lmbackend audit --python PATH DIR..."
        python = (interpreter(args.python, "--python", how=how) if args.python
                  else default_python("audit", how="--python /path/to/python"))
        folders = model_folders(args.dirs)
        if args.lmdeploy is not None:
            resolve_release(args.lmdeploy)
        if args.workers < 1:
            raise ValueError(f"--workers {args.workers}: at least 1")
    except (ValueError, UnknownReleaseError) as exc:
        commands.error(args, str(exc))
        return 2
    try:
        with Oracle(args.lmdeploy or "?", python=Path(python), workers=args.workers, timeout=120) as oracle:
            version = str(oracle.info.get("lmdeploy", "?"))
            release = resolve_release(args.lmdeploy or version)
            ours = [detect_outcome(folder, release) for folder in folders]
            checks = ask(oracle, folders, folders, ours, release)
    except (OracleError, UnknownReleaseError) as exc:
        commands.error(args, f"could not ask the LMDeploy of {python}: {exc}")
        return EXIT_UNASKED
    if args.json:
        for check in checks:
            out.write(json.dumps(_json(check)) + "\n")
    else:
        report(checks, python, out)
    return EXIT_DISAGREE if any(c.disagreement is not None for c in checks) else 0
