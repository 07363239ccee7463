"""Collection imports no engine and leaves CUDA alone: checked in a fresh interpreter."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

HEAVY_CHECK = """
import sys

HEAVY = ("torch", "transformers", "lmdeploy")


def pytest_collection_finish(session):
    loaded = sorted(m for m in HEAVY if m in sys.modules)
    print("HEAVY-AFTER-COLLECTION:", ",".join(loaded) or "none")
"""


@pytest.mark.parametrize("hardware", [None, "h100x8"])
def test_collect_only_auto_imports_no_engine(pytester: pytest.Pytester, hardware: str | None) -> None:
    if not (EXAMPLES / "conftest.py").is_file():
        pytest.skip("examples/ is not in this checkout")
    pytester.makepyfile(heavycheck=HEAVY_CHECK)
    args = ["-p", "heavycheck", "--collect-only", "--lm-backend=auto", "-q", str(EXAMPLES)]
    if hardware:
        args.append(f"--lm-hardware={hardware}")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["HEAVY-AFTER-COLLECTION: none"])
    # every marker of the plugin and of LMDeploy is in that suite
    used = "".join(p.read_text() for p in EXAMPLES.glob("test_*.py"))
    for marker in ("lm_requires", "lm_backend(", "lm_model(", "lm_isolated", "lm_engine", "mark.turbomind",
                   "mark.pytorch", "not_turbomind", "not_pytorch", "gpu_num_"):
        assert marker in used, marker


def test_plan_imports_no_engine(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(heavycheck=HEAVY_CHECK.replace("pytest_collection_finish", "pytest_sessionfinish"))
    result = pytester.runpytest_subprocess("-p", "heavycheck", "--lm-plan", "--lm-hardware=h100x8,cpu",
                                           str(EXAMPLES))
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*lm-plan: *", "HEAVY-AFTER-COLLECTION: none"])


def test_shipped_hypothesis_profiles_load_by_name(pytester: pytest.Pytester) -> None:
    # a downstream project has no conftest that registers them: the plugin must, before Hypothesis
    # loads the profile named on the command line
    pytester.makepyfile(
        """
        from hypothesis import settings

        def test_profile():
            assert settings.default.max_examples == 50
            assert settings.default.derandomize
        """
    )
    result = pytester.runpytest_subprocess("--hypothesis-profile=lmbackend-fast", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
