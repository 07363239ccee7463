"""`python -m pytest_lmbackend.oracle`: build LMDeploy environments and print their answers."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_lmbackend.display import printable_block

from .bridge import Answer, Oracle, OracleError
from .venv import HOME_ENV, VenvError, build


def _cmd_setup(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else None
    rc = 0
    for release in args.releases:
        try:
            python = build(release, transformers=args.transformers, home=home, force=args.force)
        except (VenvError, OSError, subprocess.CalledProcessError) as exc:
            print(printable_block(f"lmdeploy {release}: {exc}"), file=sys.stderr)
            rc = 1
            continue
        print(f"lmdeploy {release}: {python}")
    return rc


def error_object(text: str | None) -> dict[str, str] | None:
    """``"Type: message"`` as the ``{"type", "message"}`` object that ``detect --json`` prints."""
    if text is None:
        return None
    kind, sep, message = text.partition(": ")
    if not sep or not kind.isidentifier():
        return {"type": "Error", "message": text}
    return {"type": kind, "message": message}


def json_record(path: str, release: str | None, answer: Answer) -> dict[str, object]:
    """One ``detect`` line: LMDeploy's answer, with errors shaped as ``detect --json`` shapes them."""
    return {
        "path": path, "lmdeploy": release, "arch": answer.arch,
        "turbomind_supported": answer.turbomind_supported, "backend": answer.backend,
        "is_vl": answer.is_vl, "task": answer.task, "error": error_object(answer.error),
        "errors": {step: error_object(text) for step, text in answer.errors.items()},
    }  # fmt: skip


def _cmd_detect(args: argparse.Namespace) -> int:
    try:
        with Oracle(args.lmdeploy, transformers=args.transformers) as oracle:
            for path, answer in zip(args.paths, oracle.detect(args.paths), strict=True):
                print(json.dumps(json_record(path, oracle.info.get("lmdeploy"), answer)))
    except (OracleError, VenvError) as exc:
        print(printable_block(f"oracle: {exc}"), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_lmbackend.oracle",
        description="Environments with real LMDeploy releases, and their answers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="build (or reuse) the environment of each release")
    setup.add_argument("releases", nargs="+", metavar="RELEASE")
    setup.add_argument("--transformers", help="transformers version (default: the release's pin)")
    setup.add_argument("--home", help=f"root folder (default: ${HOME_ENV} or the user cache folder)")
    setup.add_argument("--force", action="store_true", help="rebuild even if the environment is ready")
    setup.set_defaults(func=_cmd_setup)
    detect = sub.add_parser("detect", help="LMDeploy's answer for model folders, one JSON line each")
    detect.add_argument("--lmdeploy", required=True, metavar="RELEASE")
    detect.add_argument("--transformers")
    detect.add_argument("paths", nargs="+", metavar="PATH")
    detect.set_defaults(func=_cmd_detect)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
