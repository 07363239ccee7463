"""``python -m pytest_lmbackend env [--json] [--hardware PROFILE]``: the hardware the plugin sees."""

from __future__ import annotations

import argparse
import json
import sys

from pytest_lmbackend import commands
from pytest_lmbackend.hardware import DEFAULT_TIMEOUT, Hardware, ProfileError, probe_many


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per hardware view, one a line")
    parser.add_argument("--hardware", metavar="PROFILE|FILE[,..]", default=None,
                        help="show a fake hardware profile (or several) instead of probing; "
                             "default: $PYTEST_LM_HARDWARE, else the probe")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long nvidia-smi may take (default {DEFAULT_TIMEOUT:g})")


def _backends(hw: Hardware) -> dict[str, str | None]:
    """Backend availability as the plugin judges it."""
    from pytest_lmbackend.backends import BackendCheckError, build_registry, facts_from_hardware

    try:
        return dict(build_registry().availability(facts_from_hardware(hw)))
    except BackendCheckError as exc:  # a registered check that is broken: the env report still comes out
        return {"(backends)": f"cannot judge: {exc}"}


def run(args: argparse.Namespace) -> int:
    from pytest_lmbackend.report import env_text, to_json

    try:
        views = probe_many(profile=args.hardware, timeout=args.timeout)
    except ProfileError as exc:
        commands.error(args, str(exc))
        return 2
    for n, hw in enumerate(views):
        backends = _backends(hw)
        if args.json:
            print(json.dumps(to_json(hw, backends=backends)))
        else:
            if n:
                print()
            sys.stdout.write(env_text(hw, backends=backends))
    return 0
