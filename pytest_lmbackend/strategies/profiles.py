"""Hypothesis settings profiles: `lmbackend-fast` for PR CI, `lmbackend-deep` for nightly runs."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

FAST = "lmbackend-fast"
DEEP = "lmbackend-deep"


def register_profiles() -> None:
    """Register both profiles with Hypothesis (idempotent); select one with ``--hypothesis-profile``."""
    # Fast: bounded and reproducible, so a PR run costs seconds and fails the same way twice.
    settings.register_profile(
        FAST,
        max_examples=50,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # Deep: many examples, a persistent example database, every phase, for nightly runs.
    settings.register_profile(
        DEEP,
        max_examples=5000,
        derandomize=False,
        deadline=None,
        print_blob=True,
        phases=tuple(Phase),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
