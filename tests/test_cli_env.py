"""Tests of ``python -m pytest_lmbackend env``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_env_text_for_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--hardware", "a100-40gb,h100x2"]) == 0
    out = capsys.readouterr().out
    assert "hardware: 1 GPU, profile 'a100-40gb'" in out
    assert "hardware: 2 GPUs, profile 'h100x2'" in out
    assert out.count("GPU 1 -> physical 1: NVIDIA H100 80GB HBM3") == 1


def test_env_json_one_object_per_view(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "--json", "--hardware", "cpu,t4"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["profile"] for o in objects] == ["cpu", "t4"]
    assert objects[0]["gpus"] == [] and objects[1]["gpus"][0]["name"] == "Tesla T4"


def test_env_bad_profile_is_exit_2_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["env", "--hardware", "h1000"]) == 2
    assert "hardware profile 'h1000': no such profile" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"gpus": [{"name": "X"}]}')
    assert main(["env", "--hardware", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "gpus[0].capability" in err


def test_env_probes_in_a_fresh_process_without_torch(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path) + os.pathsep + os.path.dirname(sys.executable),
           "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_LM_HARDWARE", None)
    code = ("import sys, runpy; sys.argv = ['x', 'env', '--json', '--timeout', '2'];"
            "from pytest_lmbackend.__main__ import main; rc = main();"
            "print(sorted(m for m in ('torch', 'transformers', 'lmdeploy') if m in sys.modules), rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert last == "[] 0"
    data = json.loads(first)
    assert data["source"] in ("nvml", "nvidia-smi", "none")
    assert data["profile"] is None


def test_env_reads_the_environment_profile(tmp_path: Path) -> None:
    env = {**os.environ, "PYTEST_LM_HARDWARE": "v100", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "env"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "profile 'v100'" in out.stdout and "Tesla V100-SXM2-32GB, sm70 (7.0)" in out.stdout
