"""Repository-wide test settings: which Hypothesis profile the suite runs under."""

from __future__ import annotations

import os

from hypothesis import settings

from pytest_lmbackend.strategies.profiles import FAST, register_profiles

register_profiles()
# PR CI runs the bounded, derandomized profile; HYPOTHESIS_PROFILE=lmbackend-deep (or
# `--hypothesis-profile=lmbackend-deep`, which Hypothesis applies after this) selects the nightly one.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", FAST))
