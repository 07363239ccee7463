"""Turn the fleet's plan (``pytest --lm-plan-json=plan.json``) into a GitHub Actions job matrix.

    python examples/fleet/matrix.py plan.json examples/fleet/runners.json >> "$GITHUB_OUTPUT"

prints ``matrix={"include": [{"runner": NAME, "runs-on": LABELS, "tests": N}, ...]}``, one entry per
runner that has work (orphans count: the last runner reports them), and ``any=true`` or ``false``.
``runners.json`` says which machine each runner name is: a hosted label or a self-hosted runner's
labels. A runner with work but no labels is an error (exit 2) naming it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def matrix(plan: dict[str, Any], labels: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """One job per runner of the plan's fleet that has tests, in the fleet's order."""
    include = []
    for name in plan["fleet"]:
        tests = plan["runners"].get(name, [])
        if not tests:
            continue
        if name not in labels:
            raise KeyError(name)
        include.append({"runner": name, "runs-on": labels[name], "tests": len(tests)})
    return {"include": include}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: matrix.py PLAN_JSON RUNNERS_JSON", file=sys.stderr)
        return 2
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    labels = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        jobs = matrix(plan, labels)
    except KeyError as exc:
        print(f"{argv[1]}: runner {exc.args[0]!r} has tests but no runs-on labels", file=sys.stderr)
        return 2
    print("matrix=" + json.dumps(jobs, separators=(",", ":")))
    print("any=" + ("true" if jobs["include"] else "false"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
