"""Audit of LMDeploy's own `autoget_backend_config`: TurbomindEngineConfig -> PytorchEngineConfig.

Runs LMDeploy's real classes and function in the release's environment (`pytest_lmbackend.oracle`).
The known LMDeploy bugs are marked strict xfails, with the minimal example Hypothesis found
(docs/FINDINGS.md): if LMDeploy fixes one, its test starts passing and strict xfail flags it.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pytest_lmbackend.oracle import Oracle, OracleError, VenvError, shared_oracle

RELEASE = os.environ.get("LMBACKEND_AUDIT_RELEASE", "0.18.0")
AUDIT = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
# TurboMind's name for PyTorch's block_size
ALIASES = {"cache_block_seq_len": "block_size"}

if os.environ.get("LMBACKEND_DIFF_RELEASES", "").strip().lower() == "none":
    pytestmark = pytest.mark.skip(
        reason="LMBACKEND_DIFF_RELEASES=none: runs against real LMDeploy switched off"
    )


@cache
def oracle() -> Oracle:
    try:
        return shared_oracle(RELEASE)
    except (VenvError, OracleError, OSError) as exc:
        pytest.fail(f"cannot run real LMDeploy {RELEASE}: {exc}", pytrace=False)


@cache
def fields() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    found = oracle().engine_fields()
    return ({f["name"]: f for f in found["turbomind"]}, {f["name"]: f for f in found["pytorch"]})


# Values a user may plausibly pass, per field name where the type alone says too little.
NAMED: dict[str, tuple[Any, ...]] = {
    "dtype": ("auto", "float16", "bfloat16"),
    "gemm_input_dtype": (None, "float16", "bfloat16", "float8_e4m3"),
    "model_format": (None, "hf", "awq", "gptq", "fp8"),
    "cache_prompt": ("auto", "all"),
    "cache_generation": ("auto", "all", "none"),
    "communicator": ("nccl", "native", "cuda-ipc"),
    "moe_a2a_backend": ("auto", "default", "deepep"),
    "download_dir": (None, "/data/models"),
    "revision": (None, "main"),
    "dist_init_addr": (None, "127.0.0.1:29500"),
    "devices": (None, [0], [0, 1]),
    "hf_overrides": (None, {}, {"rope_theta": 1000000.0}),
    "cache_max_entry_count": (0.8, 0.5, 0.9, 1.5, 0.0),
    "rope_scaling_factor": (0.0, 2.0, 4.0),
    "quant_policy": (0, 4, 8),
    "async_": (1, 0),
}
BY_TYPE: dict[str, tuple[Any, ...]] = {
    "bool": (False, True),
    "int": (0, 1, 2, 4, 8, 32, 4096),
    "float": (0.0, 0.5, 1.5),
}


def candidates(field: dict[str, Any]) -> tuple[Any, ...]:
    if field["name"] in NAMED:
        return NAMED[field["name"]]
    for name, values in BY_TYPE.items():
        if f"'{name}'" in field["type"] or field["type"].startswith(name):
            return (*values, None) if field["default"] is None else values
    return (field["default"],)


def user_configs(which: str) -> st.SearchStrategy[dict[str, Any]]:
    """TurbomindEngineConfig kwargs setting a few of `which` fields: "shared", "tm_only" or "all"."""

    def build() -> st.SearchStrategy[dict[str, Any]]:
        tm, pt = fields()
        names = sorted(n for n in tm if which == "all" or (which == "shared") == (n in pt or n in ALIASES))
        values = {n: st.sampled_from(candidates(tm[n])) for n in names}
        return st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True).flatmap(
            lambda ks: st.fixed_dictionaries({k: values[k] for k in ks})
        )

    return st.deferred(build)


def convert(kwargs: dict[str, Any]) -> dict[str, Any]:
    result = oracle().convert([kwargs])[0]
    assume(result["input_error"] is None)  # TurbomindEngineConfig itself rejects these values
    assert result["error"] is None, result["error"]
    assert result["result_class"] == "PytorchEngineConfig" and result["backend"] in (None, "pytorch")
    return result


def survives(kwargs: dict[str, Any], result: dict[str, Any], keep: Any) -> list[str]:
    lost = []
    for name, value in kwargs.items():
        target = ALIASES.get(name, name)
        if keep(value) and target in result["result"] and result["result"][target] != value:
            lost.append(f"{name}={value!r} came back as {target}={result['result'][target]!r}")
    return lost


@AUDIT
@given(kwargs=user_configs("shared"))
def test_truthy_values_survive(kwargs: dict[str, Any]) -> None:
    lost = survives(kwargs, convert(kwargs), bool)
    assert not lost, f"TurbomindEngineConfig({kwargs}) converted to PyTorch lost: {lost}"


@pytest.mark.xfail(
    strict=True,
    reason="known LMDeploy bug: autoget_backend_config copies only truthy "
    "fields (`if v and hasattr(config, k)`), so False/0 fall back to PyTorch's defaults",
)
@AUDIT
@example(kwargs={"enable_metrics": False})  # the case first reported (docs/FINDINGS.md)
@example(kwargs={"attn_tp_size": 0})  # Hypothesis's minimal example
@given(kwargs=user_configs("shared"))
def test_falsy_values_survive(kwargs: dict[str, Any]) -> None:
    lost = survives(kwargs, convert(kwargs), lambda v: not v)
    assert not lost, f"TurbomindEngineConfig({kwargs}) converted to PyTorch lost: {lost}"


@pytest.mark.xfail(
    strict=True,
    reason="known LMDeploy bug: setattr() on the PyTorch config bypasses its "
    "__post_init__ checks, so values PytorchEngineConfig rejects get through",
)
@AUDIT
@example(kwargs={"cache_max_entry_count": 1.5})  # the case first reported (docs/FINDINGS.md)
@example(kwargs={"cache_block_seq_len": 0})  # Hypothesis's minimal example
@given(kwargs=user_configs("all"))
def test_result_passes_its_own_validation(kwargs: dict[str, Any]) -> None:
    result = convert(kwargs)
    assert result["validation_error"] is None, (
        f"TurbomindEngineConfig({kwargs}) became a PytorchEngineConfig that PytorchEngineConfig(**fields) "
        f"rejects: {result['validation_error']}"
    )


@pytest.mark.xfail(
    strict=True,
    reason="known LMDeploy bug: TurboMind-only fields (rope_scaling_factor, "
    "devices, nnodes, ...) are dropped without a warning",
)
@AUDIT
@example(kwargs={"rope_scaling_factor": 2.0})  # the case first reported (docs/FINDINGS.md)
@example(kwargs={"async_": 0})  # Hypothesis's minimal example
@given(kwargs=user_configs("tm_only"))
def test_no_field_vanishes(kwargs: dict[str, Any]) -> None:
    tm, _ = fields()
    result = convert(kwargs)
    vanished = [
        k for k, v in kwargs.items() if v != tm[k]["default"] and ALIASES.get(k, k) not in result["result"]
    ]
    assert not vanished, f"TurbomindEngineConfig({kwargs}): {vanished} have no place in the PyTorch config"


@AUDIT
@given(kwargs=user_configs("shared"), model=st.sampled_from(["turbomind", "pytorch"]))
def test_a_pytorch_engine_config_always_wins(kwargs: dict[str, Any], model: str) -> None:
    _, pt = fields()
    pt_kwargs = {ALIASES.get(k, k): v for k, v in kwargs.items() if ALIASES.get(k, k) in pt}
    result = oracle().convert([pt_kwargs], engine="pytorch", model=model)[0]
    assume(result["input_error"] is None)
    assert result["error"] is None, result["error"]
    assert result["result_class"] == "PytorchEngineConfig" and result["same_object"], result
    assert result["backend"] in (None, "pytorch")


def test_the_audit_reaches_turbomind_for_a_turbomind_model() -> None:
    # the PyTorch-wins property means something only if the same model goes to TurboMind otherwise
    result = oracle().convert([{}], engine="turbomind", model="turbomind")[0]
    assert result["result_class"] == "TurbomindEngineConfig", result
