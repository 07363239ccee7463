"""Tests for pytest_lmbackend.oracle that need no LMDeploy: environments, answers, failures, CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_lmbackend import oracle
from pytest_lmbackend.oracle import Answer, Oracle, OracleError, VenvError
from pytest_lmbackend.oracle.venv import (
    TRANSFORMERS_PINS,
    _uv_build,
    find_uv,
    local_torch_wheel,
    oracle_home,
    spec_for,
    venv_python,
)


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


def test_uv_gets_torch_only_as_the_local_cpu_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    links = tmp_path / "links"
    links.mkdir()
    (links / f"torch-2.13.0-{tag}-{tag}-manylinux_2_28_x86_64.whl").write_bytes(b"")  # the CUDA build's name
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_FIND_LINKS", f"file://{tmp_path / 'absent'} {links}")
    monkeypatch.delenv("LMBACKEND_ORACLE_TORCH", raising=False)
    assert local_torch_wheel() is None
    cpu = links / f"torch-2.13.0+cpu-{tag}-{tag}-manylinux_2_28_x86_64.whl"
    cpu.write_bytes(b"")
    assert local_torch_wheel() == cpu
    named = tmp_path / "torch-2.13.0+cpu-any.whl"
    named.write_bytes(b"")
    monkeypatch.setenv("LMBACKEND_ORACLE_TORCH", str(named))
    assert local_torch_wheel() == named
    monkeypatch.setenv("LMBACKEND_ORACLE_TORCH", "torch==2.13.0")  # a requirement, not a file: pip's job
    assert local_torch_wheel() is None


def test_without_uv_the_build_is_left_to_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LMBACKEND_INSTALLER", "pip")
    assert find_uv() is None
    assert _uv_build(spec_for("0.18.0"), tmp_path / "venvs" / "x", sys.executable) is False
    assert not (tmp_path / "venvs").exists()
    monkeypatch.delenv("LMBACKEND_INSTALLER")
    pytest.importorskip("uv")
    found = find_uv()
    assert found is not None and os.access(found, os.X_OK)


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


# -- a worker that misbehaves: every failure is an OracleError, and no worker outlives it

def fake_worker(tmp_path: Path, body: str) -> Path:
    """An 'interpreter' that ignores the worker script it is given and runs `body` instead."""
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\nimport sys, time, os\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n{body}\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


def worker_gone(tmp_path: Path) -> bool:
    import os

    pid = int((tmp_path / "pid").read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (nothing left to reap here would mean the bridge never waited)
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(")")[-1].split()[0] == "Z"


READY = 'print(\'{"ready": true, "lmdeploy": "0.0", "transformers": "0"}\', flush=True)'


@pytest.mark.parametrize(("body", "message"), [
    (READY + "\ntime.sleep(300)", r"no answer from LMDeploy .* within 1s"),
    (READY + "\nsys.stdin.readline()\nprint('not json', flush=True)\ntime.sleep(300)", r"not JSON"),
    (READY + "\nsys.stdin.readline()\nprint('[1, 2]', flush=True)\ntime.sleep(300)", r"not a JSON object"),
    (READY + "\nsys.stdin.readline()\nprint(b'\\xff\\xfe'.decode('latin-1'), flush=True)\ntime.sleep(300)",
     r"not JSON"),
    (READY + "\nsys.stdin.readline()\nprint('{\"id\": 7, \"results\": []}', flush=True)\ntime.sleep(300)",
     r"out-of-order answer: wanted 1"),
    (READY + "\nsys.stdin.readline()\nprint('{\"id\": 1, \"results\": []}', flush=True)\ntime.sleep(300)",
     r"answered 1 items with \[\]"),
    (READY + "\nsys.stdin.readline()\nprint('{\"id\": 1}', flush=True)\ntime.sleep(300)",
     r"answered 1 items with None"),
    (READY + "\nsys.stdin.readline()\nsys.exit(3)", r"exited \(3\)"),
])
def test_a_worker_that_misbehaves_after_ready(tmp_path: Path, body: str, message: str) -> None:
    lmdeploy = Oracle("0.18.0", python=fake_worker(tmp_path, body), timeout=1)
    with pytest.raises(OracleError, match=message):
        lmdeploy.detect([{"architectures": ["LlamaForCausalLM"]}])
    assert worker_gone(tmp_path)
    assert lmdeploy.closed
    with pytest.raises(OracleError, match="closed"):
        lmdeploy.detect([{}])


@pytest.mark.parametrize(("body", "message"), [
    ("print('Loading lmdeploy...', flush=True)\ntime.sleep(300)", r"not JSON.*Loading lmdeploy"),
    ("print('5', flush=True)\ntime.sleep(300)", r"not a JSON object"),
    ("time.sleep(300)", r"no answer from LMDeploy .* within 4s"),
    ("sys.stderr.write('ImportError: no torch\\n'); sys.exit(1)", r"exited \(1\)\n.*no torch"),
    ('print(\'{"ready": false, "error": "ImportError: x"}\', flush=True)\ntime.sleep(300)',
     r"LMDeploy did not load: ImportError: x"),
])
def test_a_worker_that_never_gets_ready(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(OracleError, match=message):
        Oracle("0.18.0", python=fake_worker(tmp_path, body), timeout=1)
    assert worker_gone(tmp_path)


def test_a_program_that_cannot_run_is_an_oracle_error(tmp_path: Path) -> None:
    not_executable = tmp_path / "python"
    not_executable.write_text("")
    with pytest.raises(OracleError, match="cannot start"):
        Oracle("0.18.0", python=not_executable, timeout=1)


def test_shared_oracle_starts_afresh_after_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_lmbackend.oracle import bridge

    body = READY + "\nsys.stdin.readline()\nprint('not json', flush=True)\ntime.sleep(300)"
    python = fake_worker(tmp_path, body)
    monkeypatch.setattr(bridge, "find_python", lambda release, transformers=None: python)
    monkeypatch.setattr(bridge, "_SHARED", {})
    first = bridge.shared_oracle("0.18.0")
    with pytest.raises(OracleError):
        first.detect([{}])
    second = bridge.shared_oracle("0.18.0")
    assert second is not first and not second.closed
    second.close()


def test_cli_json_errors_have_the_shape_detect_prints() -> None:
    """`oracle detect` and `python -m pytest_lmbackend detect --json` shape an error alike."""
    from pytest_lmbackend.commands.detect import json_record as ours
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.oracle.__main__ import json_record as theirs
    from pytest_lmbackend.rules import detect

    crashed = Answer.from_json({"error": "TypeError: 'NoneType' object is not subscriptable",
                                "errors": {"task": "TypeError: 'NoneType' object is not subscriptable",
                                           "arch": "RuntimeError: Could not find: x"}})
    record = theirs("m", "0.18.0", crashed)
    assert record["error"] == {"type": "TypeError", "message": "'NoneType' object is not subscriptable"}
    assert record["errors"] == {"task": record["error"],
                                "arch": {"type": "RuntimeError", "message": "Could not find: x"}}
    try:
        detect({"model_type": "llama"}, lmdeploy="0.18.0")
    except ConfigError as exc:
        mine = ours("m", "0.18.0", exc)
    assert set(mine["error"]) == set(record["error"]) == {"type", "message"}
    answered = theirs("m", "0.18.0", Answer.from_json({"arch": "A", "backend": "pytorch", "task": "llm"}))
    assert answered["error"] is None and answered["errors"] == {}
    answer_keys = set(ours("m", "0.18.0", detect({"architectures": ["A"]}, lmdeploy="0.18.0")))
    assert answer_keys <= set(answered) | {"rule"}
    odd = theirs("m", None, Answer.from_json({"fault": "no colon here"}))
    assert odd["error"] == {"type": "OracleFault", "message": "no colon here"}
