"""Speed of detection: in-memory configs, a warm model folder, and a fresh interpreter (import + detect)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.config import read_config
from pytest_lmbackend.rules import KNOWN_RELEASES, detect

pytest.importorskip("pytest_benchmark")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
# Small LLM config, a VL config with nested sub-configs, and one whose nested search runs (table arch).
FOLDERS = ["qwen2-vl", "llava-hf-qwen2-head64", "llama-head128"]


def parsed(name: str) -> dict[str, Any]:
    data = read_config(MODELS / name).data
    assert data is not None
    return dict(data)


@pytest.mark.parametrize("release", ["0.7.3", "0.18.0"])
@pytest.mark.parametrize("name", FOLDERS)
def test_detect_mapping(benchmark: Any, name: str, release: str) -> None:
    """In-memory detect, the path a fuzzer takes: target >= 20,000 configs/s on one core (<= 50 us)."""
    config = parsed(name)
    found = benchmark(detect, config, lmdeploy=release)
    assert found.release == release


def test_detect_mapping_every_release(benchmark: Any) -> None:
    """One config under all known releases (what ``--lmdeploy all`` does per path)."""
    config = parsed("llava-hf-qwen2-head64")

    def every() -> int:
        return sum(detect(config, lmdeploy=r).backend == "turbomind" for r in KNOWN_RELEASES)

    assert benchmark(every) > 0


@pytest.mark.parametrize("name", FOLDERS)
def test_detect_folder_warm(benchmark: Any, name: str) -> None:
    """A model folder detected again: file cached by (path, mtime_ns, size); target <= 50 us."""
    folder = str(MODELS / name)
    detect(folder, lmdeploy="0.18.0")
    found = benchmark(detect, folder, lmdeploy="0.18.0")
    assert found.arch


# Bytecode caching on, as for any installed package: the warm-up round writes the .pyc files.
FRESH_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=FRESH_ENV
    )
    return done.stdout.strip()


def test_fresh_interpreter_import_and_detect(benchmark: Any) -> None:
    """``python -c`` importing the package and detecting one folder; target <= 80 ms."""
    code = (
        "from pytest_lmbackend.rules import detect; "
        f"print(detect({str(MODELS / 'qwen2-vl')!r}, lmdeploy='0.18.0').backend)"
    )
    assert benchmark.pedantic(fresh, args=(code,), rounds=10, warmup_rounds=1) == "turbomind"


def test_fresh_interpreter_cli(benchmark: Any) -> None:
    """``python -m pytest_lmbackend detect --json FOLDER``: argument parsing and output included."""
    code = (
        "import sys; from pytest_lmbackend.__main__ import main; "
        f"sys.exit(main(['detect', '--json', {str(MODELS / 'qwen2-vl')!r}]))"
    )
    assert '"backend": "turbomind"' in benchmark.pedantic(fresh, args=(code,), rounds=10, warmup_rounds=1)


def test_fresh_interpreter_baseline(benchmark: Any) -> None:
    """The same interpreter doing nothing: what the fresh-process figures above include anyway."""
    benchmark.pedantic(fresh, args=("pass",), rounds=10, warmup_rounds=1)
