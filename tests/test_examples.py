"""The example suite: its plan under three runner profiles, and a real run on this CPU machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PROFILES = EXAMPLES / "profiles"

pytestmark = pytest.mark.skipif(not (EXAMPLES / "conftest.py").is_file(), reason="examples/ is not here")


def plan(pytester: pytest.Pytester, *profiles: str) -> dict[str, list[str]]:
    """nodeid -> one cell per profile, from the --lm-plan table."""
    result = pytester.runpytest_subprocess(str(EXAMPLES), "--lm-plan", "--lm-hardware=" + ",".join(profiles))
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    rows = {}
    for line in result.outlines:
        if "::" in line and not line.startswith(" "):
            name, *cells = line.split()
            rows[name] = cells
    return rows


def test_plan_under_three_runner_profiles(pytester: pytest.Pytester) -> None:
    runners = (str(PROFILES / "h100x8-lmdeploy.toml"), str(PROFILES / "h200-pytorch-only.toml"), "cpu")
    rows = plan(pytester, *runners)
    assert len(rows) == 22
    assert all(len(cells) == 3 for cells in rows.values())
    # LMDeploy 0.18.0 picks pytorch for Mistral: runs wherever LMDeploy and a GPU are
    assert rows["test_generation.py::test_greedy_generation_is_repeatable"] == [
        "run[pytorch]", "run[pytorch]", "skip:backend[pytorch]"]
    # TurboMind models need the extension: the PyTorch-only runner skips them
    assert rows["test_generation.py::test_turbomind_llama"] == [
        "run[turbomind]", "skip:backend[turbomind]", "skip:backend[turbomind]"]
    assert rows["test_engines.py::test_vl_model_gets_an_engine_config"][:2] == [
        "run[turbomind]", "skip:backend[turbomind]"]
    # the reference backend runs everywhere torch and transformers are
    assert rows["test_generation.py::test_reference_backend_generates"][0] == "run[transformers]"
    # detection-level tests need no engine: they run everywhere, those bound to a model showing the
    # backend LMDeploy picks for it
    assert all(all(c.startswith("run") for c in cells) for name, cells in rows.items()
               if name.startswith("test_detection.py"))
    assert rows["test_detection.py::test_backend_and_task[mistral]"] == ["run[pytorch]"] * 3
    # requirements: flash-attn is stated by neither GPU profile; the CPU has no GPU at all
    assert rows["test_engines.py::test_needs_flash_attention_on_hopper"] == [
        "skip:packages", "skip:packages", "skip:gpu"]


def test_plan_of_shipped_profiles_uses_this_interpreters_packages(pytester: pytest.Pytester) -> None:
    rows = plan(pytester, "h100x8", "a10")
    lmdeploy_here = importlib.util.find_spec("lmdeploy") is not None
    cell = rows["test_generation.py::test_greedy_generation_is_repeatable"][0]
    assert cell == ("run[pytorch]" if lmdeploy_here else "skip:backend[pytorch]")
    # a10 is one GPU: the two-GPU test skips there whatever the packages
    assert rows["test_engines.py::test_tensor_parallel_two_gpus"][1].startswith("skip:")


def test_run_on_this_cpu_machine(pytester: pytest.Pytester) -> None:
    for package in ("torch", "transformers", "tokenizers", "safetensors"):
        pytest.importorskip(package)
    result = pytester.runpytest_subprocess(str(EXAMPLES), "--lm-hardware=cpu", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "lmbackend: hardware: *profile 'cpu'*",
        "lmbackend: --lm-backend=auto; LMDeploy rules 0.18.0; backends available: transformers, echo",
        "*lmbackend skips by kind*",
    ])
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    # 2 collection + 8 detection + 1 hardware + 1 reference generation run; the rest skip with reasons
    assert outcomes["passed"] == 12 and outcomes["skipped"] == 10
    text = result.stdout.str()
    assert "backend pytorch needs" in text and "needs 1 GPU; profile 'cpu' has none" in text
