"""The command line: ``python -m pytest_lmbackend COMMAND ...``, also installed as ``pytest-lmbackend``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pytest_lmbackend import __version__, commands

# name -> (module under pytest_lmbackend.commands, one-line help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when its subcommand runs
# (or when building --help), so ``detect`` never pays for ``bench``. A new subcommand is one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "detect": ("detect", "which backend and task LMDeploy picks for model folders, per release"),
    "env": ("env", "the GPUs, driver, CUDA, backends and packages this machine has"),
    "bench": ("bench", "time pipeline start-up per backend, by phase, cold or warm"),
    "audit": ("audit", "the rules against a real LMDeploy over model folders: disagreements by rule"),
}

DESCRIPTION = ("pytest-lmbackend's command line: which backend LMDeploy gives a model, what hardware the "
               "plugin sees, how long start-up takes. Usage errors exit with status 2.")


def build_parser(selected: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or commands.PROG
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"pytest-lmbackend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(prog=sp.prog)  # errors and notes name the subcommand, as argparse's own do
        if selected is None or selected == name:
            module = importlib.import_module(f"pytest_lmbackend.commands.{module_name}")
            module.add_arguments(sp)
    return parser


def _prog(argv0: str) -> str:
    """How the user called us: the console script by its name, else ``python -m pytest_lmbackend``."""
    name = os.path.basename(argv0)
    return "pytest-lmbackend" if name.startswith("pytest-lmbackend") else "python -m pytest_lmbackend"


def _forgiving_streams() -> None:
    """Text the terminal cannot encode (an architecture named in UTF-8 on an ASCII terminal) is
    escaped, not a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def main(argv: Sequence[str] | None = None) -> int:
    _forgiving_streams()
    if argv is None:
        commands.PROG = _prog(sys.argv[0])
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    parser = build_parser(selected)
    args, extra = parser.parse_known_args(args_list)
    if extra:
        # a misspelt option of a subcommand: that subcommand's usage, not the top level's
        sub_parser = _subparser(parser, args.command)
        sub_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = importlib.import_module(f"pytest_lmbackend.commands.{COMMANDS[args.command][0]}")
    code: int = module.run(args)
    return code


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser


def _entry() -> int:
    """The console entry: a reader that closes the pipe early (``| head``) ends the output quietly."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        # Python would report the failed flush at exit again: point stdout at nothing first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(_entry())
