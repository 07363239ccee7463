"""A round that does nothing: the harness's own cost, measured against a bare interpreter."""

from __future__ import annotations

from pytest_lmbackend.bench.child import RoundContext


def run(ctx: RoundContext) -> None:
    """Records no phase; the parent still adds interpreter start and exit."""
