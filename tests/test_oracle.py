"""Tests for pytest_lmbackend.oracle that need no LMDeploy: environments, answers, failures, CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_lmbackend import oracle
from pytest_lmbackend.oracle import Answer, Oracle, OracleError, VenvError
from pytest_lmbackend.oracle.venv import TRANSFORMERS_PINS, oracle_home, spec_for, venv_python


def test_home_comes_from_the_environment_or_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LMBACKEND_ORACLE_HOME", str(tmp_path / "o"))
    assert oracle_home() == tmp_path / "o"
    monkeypatch.delenv("LMBACKEND_ORACLE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert oracle_home() == tmp_path / "cache" / "pytest-lmbackend" / "oracle"


def test_specs_pin_transformers_per_release() -> None:
    assert TRANSFORMERS_PINS["0.18.0"] == "5.17.0" and TRANSFORMERS_PINS["0.7.3"] == "4.51.3"
    spec = spec_for("0.18.0")
    assert spec.name == "lmdeploy-0.18.0"
    assert "transformers==5.17.0" in spec.requirements() and "torch==2.13.0" in spec.requirements()
    assert spec_for("0.18.0", "5.24.0").name == "lmdeploy-0.18.0-tf5.24.0"
    assert "numpy<2" in spec_for("0.7.3").requirements()
    with pytest.raises(VenvError, match=r"no transformers pin for lmdeploy 0\.12\.3"):
        spec_for("0.12.3")


def test_a_missing_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMBACKEND_ORACLE_HOME", str(tmp_path))
    assert oracle.find_python("0.18.0") is None
    with pytest.raises(OracleError, match=r"python -m pytest_lmbackend.oracle setup 0.18.0"):
        Oracle("0.18.0")
    assert venv_python(spec_for("0.18.0")).is_relative_to(tmp_path)


def test_an_interpreter_without_lmdeploy_is_reported_not_hung() -> None:
    # this interpreter has no lmdeploy: the worker must say so on its first line
    with pytest.raises(OracleError, match=r"LMDeploy did not load.*lmdeploy"):
        Oracle("0.18.0", python=Path(sys.executable), timeout=60)


def test_answers_from_json() -> None:
    ok = Answer.from_json(
        {
            "arch": "LlamaForCausalLM",
            "turbomind_supported": True,
            "backend": "turbomind",
            "is_vl": False,
            "task": "llm",
            "error": None,
            "errors": {},
        }
    )
    assert (ok.backend, ok.task, ok.error_type()) == ("turbomind", "llm", None)
    bad = Answer.from_json(
        {
            "arch": None,
            "backend": None,
            "task": None,
            "error": "TypeError: x",
            "errors": {"task": "TypeError: x", "arch": "RuntimeError: y"},
        }
    )
    assert bad.error_type() == "TypeError" and bad.error_type("arch") == "RuntimeError"
    fault = Answer.from_json({"fault": "PermissionError: ships Python files"})
    assert fault.error_type() == "OracleFault" and fault.backend is None


def test_cli_setup_reports_an_unpinned_release(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pytest_lmbackend.oracle.__main__ import main

    assert main(["setup", "0.12.3", "--home", str(tmp_path)]) == 1
    assert "no transformers pin" in capsys.readouterr().err


def test_cli_runs_as_a_module() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "pytest_lmbackend.oracle", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "setup" in done.stdout and "detect" in done.stdout
