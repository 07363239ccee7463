"""Why an item does not run: one value for unmet requirements, backend choice, the plan and the summary."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from pytest_lmbackend.display import printable

SKIP_KIND_PROPERTY = "lm_skip_kind"  # user property on items the plugin skipped; travels with xdist reports


@dataclass(frozen=True)
class Verdict:
    """Why an item does not run, naming what was wanted, what was found and where.

    :param kind: groups the summary and feeds ``--lm-require`` (``gpu``, ``capability``, ``backend``, ...).
    :param error: bad input (a model that cannot be read): the item fails whatever the options.
    :param unchecked: GPU-fact kinds the test asked for that could not be judged for want of GPUs
        (with kind ``gpu``).
    """

    kind: str
    reason: str
    error: bool = False
    unchecked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # reasons quote GPU names, profile fields and config text: made terminal-safe once, here, for
        # the skip line, the summary and the plan alike
        object.__setattr__(self, "reason", printable(self.reason))

    def failing_kind(self, require: Collection[str]) -> str | None:
        """The ``--lm-require`` kind that turns this skip into a failure, else None. A test asking a
        capability on a runner without the GPUs fails under ``--lm-require=capability`` too: the
        capability was required and nothing met it."""
        if self.kind in require:
            return self.kind
        return next((k for k in sorted(self.unchecked) if k in require), None)
