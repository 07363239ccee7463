"""The command line as a whole: version, the console script, one error style, help text."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend import __version__
from pytest_lmbackend.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    if script:
        found = shutil.which("pytest-lmbackend", path=str(Path(sys.executable).parent))
        if found is None:
            pytest.skip("the console script is not installed beside this interpreter")
        command = [found, *args]
    else:
        command = [sys.executable, "-m", "pytest_lmbackend", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("script", [False, True])
def test_version(script: bool) -> None:
    result = run("--version", script=script)
    assert result.returncode == 0
    assert result.stdout.strip() == f"pytest-lmbackend {__version__}"


def test_the_console_script_names_itself_in_usage_and_errors() -> None:
    result = run("detect", "--jsn", "x", script=True)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pytest-lmbackend detect ")
    assert "pytest-lmbackend detect: error: unrecognized arguments: --jsn" in result.stderr


@pytest.mark.parametrize(("args", "usage", "message"), [
    (["env", "--hardware", "no-such-profile"], False, "env: error: "),
    (["bench", "no-such-folder"], False, "bench: error: no-such-folder: not a model folder"),
    (["bench", "--rounds", "0", "x"], True, "bench: error: argument --rounds: must be at least 1"),
    (["env", "--jsn"], True, "env: error: unrecognized arguments: --jsn"),
    (["bench", "x", "--backend"], True, "bench: error: argument --backend: expected one argument"),
    (["audit", "--bogus", "x"], True, "audit: error: unrecognized arguments: --bogus"),
    (["detcet", "x"], True, "python -m pytest_lmbackend: error: argument COMMAND: invalid choice: 'detcet'"),
])
def test_every_subcommand_reports_errors_alike(args: list[str], usage: bool, message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1]
    assert lines[-1].startswith("python -m pytest_lmbackend")
    assert result.stderr.startswith("usage: ") == usage
    assert "Traceback" not in result.stderr


def test_help_has_no_rest_markup() -> None:
    for args in (["--help"], *([name, "--help"] for name in COMMANDS)):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        assert "``" not in result.stdout and ":param" not in result.stdout, (args, result.stdout)
