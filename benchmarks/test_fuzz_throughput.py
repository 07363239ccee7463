"""Fuzzing throughput: detect on generated configs, Hypothesis generation, and the bridge to real LMDeploy.

Targets: in-memory `detect` >= 20,000 generated configs/s on one core; the default `hf_configs()`
strategy >= 500 examples/s; >= 200 configs/s per release through the bridge. The rate of each run
is stored in the benchmark's ``extra_info`` (``configs_per_s``) and checked against its target.
CPU-bound rates are measured in process CPU time, so other load on the machine does not count.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.rules import detect
from pytest_lmbackend.strategies import hf_configs

pytest.importorskip("pytest_benchmark")

N_CONFIGS = 2000
BRIDGE_RELEASES = [
    r.strip()
    for r in os.environ.get("LMBACKEND_DIFF_RELEASES", "0.18.0").split(",")
    if r.strip() and r != "none"
]


def generate(n: int, **kwargs: Any) -> list[dict[str, Any]]:
    """`n` configs drawn by Hypothesis itself (as a test would see them), in a fixed order."""
    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(hf_configs(**kwargs))
    def collect(cfg: dict[str, Any]) -> None:
        drawn.append(cfg)

    collect()
    return drawn


@pytest.fixture(scope="module")
def configs() -> list[dict[str, Any]]:
    return generate(N_CONFIGS) + generate(N_CONFIGS // 4, valid=False)


def cpu_rate(fn: Any, count: int) -> float:
    start = time.process_time()
    fn()
    return count / max(time.process_time() - start, 1e-9)


@pytest.mark.parametrize("release", ["0.7.3", "0.18.0"])
def test_detect_generated_configs(benchmark: Any, configs: list[dict[str, Any]], release: str) -> None:
    """In-memory detect over generated configs (typed errors included): >= 20,000 configs/s/core."""

    def run() -> int:
        answered = 0
        for cfg in configs:
            try:
                detect(cfg, lmdeploy=release)
                answered += 1
            except ConfigError:
                pass
        return answered

    assert benchmark(run) > len(configs) // 2
    rate = cpu_rate(run, len(configs))
    benchmark.extra_info["configs_per_s"] = round(rate)
    assert rate >= 20_000, f"detect: {rate:.0f} configs/s per core, target 20,000"


def test_hf_configs_generation(benchmark: Any) -> None:
    """Hypothesis drawing the default `hf_configs()`: >= 500 examples/s."""
    n = 1000
    drawn = benchmark.pedantic(generate, args=(n,), rounds=3, iterations=1)
    assert len(drawn) == n
    rate = cpu_rate(lambda: generate(n), n)
    benchmark.extra_info["configs_per_s"] = round(rate)
    assert rate >= 500, f"hf_configs(): {rate:.0f} examples/s, target 500"


@pytest.mark.parametrize("workers", [1, max(2, os.cpu_count() or 1)])
@pytest.mark.parametrize("release", BRIDGE_RELEASES)
def test_bridge(benchmark: Any, configs: list[dict[str, Any]], release: str, workers: int) -> None:
    """Real LMDeploy answering batches over the pipe: >= 200 configs/s per release (wall clock)."""
    from pytest_lmbackend.oracle import Oracle, OracleError, VenvError, find_python

    python = find_python(release)
    if python is None:
        pytest.skip(
            f"no environment for lmdeploy {release}: python -m pytest_lmbackend.oracle setup {release}"
        )
    batch = configs[:400]
    try:
        oracle = Oracle(release, python=python, workers=workers)
    except (OracleError, VenvError) as exc:
        pytest.fail(f"lmdeploy {release}: {exc}", pytrace=False)
    with oracle:
        oracle.detect(batch[:20])  # warm: first calls import lazily-loaded config classes
        answers = benchmark.pedantic(oracle.detect, args=(batch,), rounds=3, iterations=1)
        assert len(answers) == len(batch)
        rate = len(batch) / benchmark.stats.stats.mean
    benchmark.extra_info["configs_per_s"] = round(rate)
    benchmark.extra_info["workers"] = workers
    assert rate >= 200, (
        f"bridge to lmdeploy {release} with {workers} worker(s): {rate:.0f} configs/s, target 200"
    )
