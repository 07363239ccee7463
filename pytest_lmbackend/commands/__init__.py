"""Subcommands of the command line: one module each, with ``add_arguments`` and ``run``.

Each prints its errors and notes through ``error`` and ``note``, in argparse's style
(``PROG SUBCOMMAND: error: MESSAGE`` on stderr), so every subcommand speaks alike.
"""

from __future__ import annotations

import argparse
import sys

from pytest_lmbackend.display import printable

#: The name the command line goes by (``python -m pytest_lmbackend`` or the console script
#: ``pytest-lmbackend``); each subcommand's parser stores its own as ``args.prog``.
PROG = "python -m pytest_lmbackend"


def error(args: argparse.Namespace, message: str) -> None:
    """``PROG SUBCOMMAND: error: MESSAGE`` on stderr (not a usage error: no usage line)."""
    _say(args, "error", message)


def note(args: argparse.Namespace, message: str) -> None:
    """``PROG SUBCOMMAND: note: MESSAGE`` on stderr."""
    _say(args, "note", message)


def _say(args: argparse.Namespace, kind: str, message: str) -> None:
    prog = getattr(args, "prog", None) or PROG
    print(f"{prog}: {kind}: {printable(message)}", file=sys.stderr)
