"""Start-up time per backend on a tiny local Llama: cold rounds, phases in ``extra_info``.

Run with ``pytest benchmarks/test_startup.py`` (add ``--benchmark-autosave``, later
``--benchmark-compare --benchmark-compare-fail=median:20%`` with ``LMBACKEND_BENCH_ROUNDS=3`` on a quiet
runner, ``median:150%`` on a shared, loaded one: the gates measured to hold, docs/BENCHMARKS.md).
``LMBACKEND_BENCH_MODEL=DIR`` benchmarks that model folder instead of the generated one; backends that
cannot run here are skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_lmbackend.bench.plugin import StartupBenchmark
from pytest_lmbackend.modeldir import tiny_llama

ROUNDS = int(os.environ.get("LMBACKEND_BENCH_ROUNDS", "2"))
TIMEOUT_S = float(os.environ.get("LMBACKEND_BENCH_TIMEOUT", "600"))


@pytest.fixture(scope="session")
def startup_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("LMBACKEND_BENCH_MODEL")
    if given:
        return Path(given)
    pytest.importorskip("torch", reason="writing the tiny model's weights needs torch")
    pytest.importorskip("tokenizers", reason="writing the tiny model's tokenizer needs tokenizers")
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("backend", ["transformers", "pytorch", "turbomind"])
def test_cold_startup(lm_startup: StartupBenchmark, startup_model: Path, backend: str) -> None:
    summary = lm_startup(startup_model, backend, rounds=ROUNDS, timeout_s=TIMEOUT_S)
    assert summary.counts["ok"] == ROUNDS
    assert summary.coverage_min is not None and summary.coverage_min >= 0.95
    assert summary.phases["first token"].n == ROUNDS


def test_warm_startup_transformers(lm_startup: StartupBenchmark, startup_model: Path) -> None:
    # in this process, after one warm-up round that pays the imports
    summary = lm_startup(startup_model, "transformers", rounds=ROUNDS, mode="warm")
    assert summary.counts["ok"] == ROUNDS
    assert summary.phases["import transformers"].max < 0.1  # already imported: warm means warm
