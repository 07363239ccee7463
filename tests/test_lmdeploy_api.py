"""The drop-ins with LMDeploy's names: autoget_backend, check_vl_llm, get_task, get_model_arch, ..."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_lmbackend import lmdeploy_api
from pytest_lmbackend.config import ConfigError, ConfigNotFoundError, MissingArchitectureError, read_config
from pytest_lmbackend.lmdeploy_api import (
    LMDeployNotInstalledError,
    autoget_backend,
    autoget_backend_config,
    check_vl_llm,
    get_model_arch,
    get_task,
    is_supported,
    plan_backend_config,
)
from pytest_lmbackend.rules import KNOWN_RELEASES, LMDeployCrashError
from pytest_lmbackend.strategies import hf_configs

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def test_signatures_match_lmdeploy_0_18() -> None:
    # LMDeploy 0.18.0: autoget_backend(model_path, trust_remote_code=False);
    # check_vl_llm(backend, config);
    # get_task(backend, model_path, trust_remote_code=False, backend_config=None);
    # get_model_arch(model_path, trust_remote_code=False). Ours add only the keyword-only ``lmdeploy``.
    expected = {
        "autoget_backend": ["model_path", "trust_remote_code"],
        "check_vl_llm": ["backend", "config"],
        "get_task": ["backend", "model_path", "trust_remote_code", "backend_config"],
        "get_model_arch": ["model_path", "trust_remote_code"],
        "is_supported": ["model_path", "trust_remote_code"],
        # 0.13.0+: autoget_backend_config(model_path, backend_config=None, trust_remote_code=False)
        "autoget_backend_config": ["model_path", "backend_config", "trust_remote_code"],
    }
    for name, positional in expected.items():
        params = inspect.signature(getattr(lmdeploy_api, name)).parameters
        assert [p for p, v in params.items() if v.kind is v.POSITIONAL_OR_KEYWORD] == positional
        assert params["lmdeploy"].kind is inspect.Parameter.KEYWORD_ONLY


def test_autoget_backend_per_release() -> None:
    # Answers of the real LMDeploy 0.7.3 / 0.10.2 / 0.14.0 / 0.18.0 on this folder (PT, TM, PT, TM).
    path = MODELS / "qwen2-vl"
    assert [autoget_backend(path, lmdeploy=r) for r in ("0.7.3", "0.10.2", "0.14.0", "0.18.0")] == [
        "pytorch", "turbomind", "pytorch", "turbomind",
    ]  # fmt: skip
    assert is_supported(str(path), lmdeploy="0.10.2") is True


def test_autoget_backend_answers_where_only_get_task_fails() -> None:
    # LMDeploy 0.18.0 picks turbomind for an auto_map-only config, then get_task raises TypeError.
    assert autoget_backend(MODELS / "auto-map-only", lmdeploy="0.18.0") == "turbomind"
    with pytest.raises(LMDeployCrashError):
        get_task("turbomind", MODELS / "auto-map-only", lmdeploy="0.18.0")
    assert autoget_backend(MODELS / "tm-workspace", lmdeploy="0.18.0") == "turbomind"


@pytest.mark.parametrize(("config", "real"), [
    # what real LMDeploy 0.18.0 (transformers 5.17.0) answered; its check_vl_llm / get_task raise on each
    ({"architectures": None, "model_type": "llama",
      "auto_map": {"AutoModelForCausalLM": "modeling_x.LlamaForCausalLM"}}, True),
    ({"architectures": [], "model_type": "llama",
      "auto_map": {"AutoModelForCausalLM": "modeling_x.LlamaForCausalLM"}}, True),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "language_config": None,
      "vision_config": {}}, True),
    ({"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_vl_v2",
      "language_config": {"architectures": []}, "vision_config": {}}, False),
])
def test_is_supported_answers_where_only_the_task_half_fails(tmp_path: Path, config: dict[str, Any],
                                                             real: bool) -> None:
    """TurboMind's is_supported reads the arch, smooth_quant and its table, nothing of the task."""
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    assert is_supported(str(tmp_path), lmdeploy="0.18.0") is real
    assert autoget_backend(tmp_path, lmdeploy="0.18.0") == ("turbomind" if real else "pytorch")
    with pytest.raises(ConfigError):
        get_task("turbomind" if real else "pytorch", tmp_path, lmdeploy="0.18.0")


def test_check_vl_llm_both_signatures() -> None:
    cfg = read_config(MODELS / "qwen3-5-vl").data
    assert cfg is not None
    config = dict(cfg)
    # 0.12.3+ answers False on TurboMind only; 0.12.2 (one-argument form) answers False always.
    assert check_vl_llm("turbomind", config, lmdeploy="0.13.0") is False
    assert check_vl_llm("pytorch", config, lmdeploy="0.13.0") is True
    assert check_vl_llm(config, lmdeploy="0.12.2") is False
    assert check_vl_llm("turbomind", config, lmdeploy="0.18.0") is True
    with pytest.raises(TypeError):
        check_vl_llm("turbomind", lmdeploy="0.18.0")


def test_get_task_and_backend_config() -> None:
    path = MODELS / "qwen2-vl"
    assert get_task("turbomind", path, lmdeploy="0.18.0") == "vlm"
    only = SimpleNamespace(language_model_only=True)
    assert get_task("turbomind", path, backend_config=only, lmdeploy="0.18.0") == "llm"
    assert get_task("turbomind", path, backend_config=only, lmdeploy="0.14.0") == "vlm"  # field did not exist
    no_vision = SimpleNamespace(disable_vision_encoder=True)
    assert get_task("pytorch", path, False, no_vision, lmdeploy="0.14.0") == "llm"
    assert get_task("turbomind", MODELS / "tm-workspace", lmdeploy="0.10.2") == "llm"


def test_get_model_arch() -> None:
    arch, config = get_model_arch(MODELS / "xcomposer2-auto-map", lmdeploy="0.14.0")
    assert arch == "InternLMXComposer2ForCausalLM"  # the auto_map names it, until 0.15.0
    assert get_model_arch(MODELS / "xcomposer2-auto-map", lmdeploy="0.15.0")[0] == "InternLM2ForCausalLM"
    assert config["model_type"] == "internlm2"
    deepseek_vl2 = MODELS / "deepseek-vl2-language-auto-map"
    assert get_model_arch(deepseek_vl2, lmdeploy="0.7.1")[0] == "DeepseekV2ForCausalLM"
    with pytest.raises(MissingArchitectureError):
        get_model_arch(deepseek_vl2, lmdeploy="0.7.0")
    # 0.5-0.11 read a workspace's arch from its own config; later releases need config.json.
    assert get_model_arch(MODELS / "tm-workspace", lmdeploy="0.10.2")[0] == "LlamaForCausalLM"
    with pytest.raises(ConfigNotFoundError):
        get_model_arch(MODELS / "tm-workspace", lmdeploy="0.12.0")



# -- autoget_backend_config: the decision over plain data

def _never() -> Any:
    raise AssertionError("the model was read, where LMDeploy does not read it")


PT_ATTRS = {"pytorch": {"session_len", "enable_metrics", "attn_tp_size", "block_size", "dtype"}}
TM_FIELDS = {
    "session_len": 4096, "enable_metrics": False, "attn_tp_size": 0, "dtype": "",
    "rope_scaling_factor": 2.0, "cache_block_seq_len": 0,
}  # fmt: skip


def test_plan_copies_only_truthy_fields_then_the_block_size() -> None:
    plan = plan_backend_config(
        "turbomind", TM_FIELDS, backend="pytorch", target_attrs=PT_ATTRS, lmdeploy="0.18.0"
    )
    assert (plan.backend, plan.reuse) == ("pytorch", False)
    # LMDeploy's `if v and hasattr(config, k)`: False, 0 and "" are dropped, PyTorch's defaults stay;
    # the block size is copied across unconditionally (0 included), after the others.
    assert list(plan.assign.items()) == [("session_len", 4096), ("block_size", 0)]
    assert set(plan.dropped) == set(TM_FIELDS) - {"session_len"}
    assert plan.dropped["enable_metrics"].startswith("falsy")
    assert "no such attribute" in plan.dropped["rope_scaling_factor"]
    assert plan.dropped["cache_block_seq_len"] == "carried as block_size"


def test_plan_pytorch_config_before_and_after_0_12() -> None:
    fields = {"session_len": 2048, "block_size": 64, "enable_prefix_caching": False}
    tm_attrs = {"turbomind": {"session_len", "cache_block_seq_len", "enable_prefix_caching"}}
    # 0.12.0+: returned as is, the model is never read.
    for release in ("0.12.0", "0.18.0"):
        plan = plan_backend_config("pytorch", fields, backend=_never, target_attrs=_never, lmdeploy=release)
        assert (plan.backend, plan.reuse, dict(plan.assign)) == ("pytorch", True, {})
    # 0.11.1: a TurboMind model turns it into a TurbomindEngineConfig.
    plan = plan_backend_config(
        "pytorch", fields, backend="turbomind", target_attrs=tm_attrs, lmdeploy="0.11.1"
    )
    assert (plan.backend, plan.reuse) == ("turbomind", False)
    assert dict(plan.assign) == {"session_len": 2048, "cache_block_seq_len": 64}
    # ...and a PyTorch model keeps it.
    plan = plan_backend_config("pytorch", fields, backend="pytorch", target_attrs=_never, lmdeploy="0.11.1")
    assert (plan.backend, plan.reuse) == ("pytorch", True)


def test_plan_same_class_or_none() -> None:
    plan = plan_backend_config(
        "turbomind", TM_FIELDS, backend="turbomind", target_attrs=_never, lmdeploy="0.7.3"
    )
    assert (plan.backend, plan.reuse, dict(plan.assign)) == ("turbomind", True, {})
    plan = plan_backend_config(None, backend=lambda: "pytorch", target_attrs=_never, lmdeploy="0.18.0")
    assert (plan.backend, plan.reuse, dict(plan.assign)) == ("pytorch", False, {})
    with pytest.raises(ValueError, match="given must be"):
        plan_backend_config("vllm", backend="pytorch", target_attrs=PT_ATTRS)  # type: ignore[arg-type]


FROM_0_12 = KNOWN_RELEASES[KNOWN_RELEASES.index("0.12.0") :]
USER_FIELDS = st.dictionaries(
    st.sampled_from(["session_len", "block_size", "enable_prefix_caching", "tp", "dtype", "max_batch_size"]),
    st.one_of(st.none(), st.booleans(), st.integers(-1, 1 << 20), st.text(max_size=8)),
)


@settings(max_examples=200)
@given(
    cfg=st.one_of(hf_configs(), hf_configs(valid=False)),
    release=st.sampled_from(FROM_0_12),
    fields=USER_FIELDS,
)
def test_a_pytorch_engine_config_always_wins(
    cfg: dict[str, Any], release: str, fields: dict[str, Any]
) -> None:
    """For 0.12.0+, a PytorchEngineConfig comes back as is with backend pytorch, whatever the model:
    one TurboMind takes, one it does not, or one whose config LMDeploy would fail on."""
    asked: list[str] = []

    def backend() -> Any:
        try:
            asked.append(autoget_backend(cfg, lmdeploy=release))
        except ConfigError as exc:
            asked.append(type(exc).__name__)
        return asked[-1]

    plan = plan_backend_config("pytorch", fields, backend=backend, target_attrs=_never, lmdeploy=release)
    assert (plan.backend, plan.reuse, dict(plan.assign), dict(plan.dropped)) == ("pytorch", True, {}, {})
    assert asked == []  # the model is not read at all


# -- autoget_backend_config: building LMDeploy's classes


def test_importing_the_module_does_not_import_lmdeploy() -> None:
    code = (
        "import sys, pytest_lmbackend.lmdeploy_api; "
        "print(sorted(m for m in sys.modules if m.startswith('lmdeploy')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_lmdeploy_a_typed_error_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmdeploy", None)
    monkeypatch.setitem(sys.modules, "lmdeploy.messages", None)
    with pytest.raises(LMDeployNotInstalledError) as info:
        autoget_backend_config(MODELS / "qwen2-vl", lmdeploy="0.18.0")
    assert isinstance(info.value, ImportError)
    assert info.value.missing is not None and info.value.missing.startswith("lmdeploy")
    assert "lmdeploy.messages cannot be imported" in str(info.value)
    assert "plan_backend_config" in str(info.value)


@dataclasses.dataclass
class FakeTurbomindEngineConfig:
    session_len: int | None = None
    enable_metrics: bool = True
    cache_block_seq_len: int = 64
    rope_scaling_factor: float = 0.0


@dataclasses.dataclass
class FakePytorchEngineConfig:
    session_len: int | None = None
    enable_metrics: bool = True
    block_size: int = 64


@pytest.fixture
def fake_lmdeploy(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Two dataclasses in LMDeploy's place, to check the building half alone (the real classes are
    compared in test_autoget_backend_config_matches_real_lmdeploy)."""
    messages = ModuleType("lmdeploy.messages")
    messages.TurbomindEngineConfig = FakeTurbomindEngineConfig  # type: ignore[attr-defined]
    messages.PytorchEngineConfig = FakePytorchEngineConfig  # type: ignore[attr-defined]
    package = ModuleType("lmdeploy")
    package.messages = messages  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lmdeploy", package)
    monkeypatch.setitem(sys.modules, "lmdeploy.messages", messages)
    return messages


def test_builds_the_backend_class_with_lmdeploys_copy_rule(fake_lmdeploy: ModuleType) -> None:
    pt_model, tm_model = MODELS / "llama-head80", MODELS / "llama-head128"  # 0.10.2: PyTorch, TurboMind
    user = FakeTurbomindEngineConfig(session_len=4096, enable_metrics=False, cache_block_seq_len=0)
    backend, config = autoget_backend_config(pt_model, user, lmdeploy="0.10.2")
    assert backend == "pytorch" and type(config) is FakePytorchEngineConfig
    # enable_metrics=False is dropped (PyTorch's True stays); block_size takes 0 unconditionally.
    assert dataclasses.asdict(config) == {"session_len": 4096, "enable_metrics": True, "block_size": 0}
    assert autoget_backend_config(tm_model, user, lmdeploy="0.10.2") == ("turbomind", user)
    assert autoget_backend_config(tm_model, user, lmdeploy="0.10.2")[1] is user
    backend, config = autoget_backend_config(tm_model, lmdeploy="0.10.2")
    assert backend == "turbomind" and config == FakeTurbomindEngineConfig()
    pt_user = FakePytorchEngineConfig(session_len=2048, block_size=128)
    assert autoget_backend_config(tm_model, pt_user, lmdeploy="0.18.0")[1] is pt_user
    backend, config = autoget_backend_config(tm_model, pt_user, lmdeploy="0.10.2")
    assert backend == "turbomind"
    assert config == FakeTurbomindEngineConfig(session_len=2048, cache_block_seq_len=128)
    with pytest.raises(TypeError, match="TurbomindEngineConfig, a PytorchEngineConfig or None"):
        autoget_backend_config(tm_model, {"session_len": 1}, lmdeploy="0.18.0")
    # A PytorchEngineConfig wins before the model is read: even a folder without config.json.
    assert autoget_backend_config(MODELS / "no-config", pt_user, lmdeploy="0.18.0") == ("pytorch", pt_user)
    with pytest.raises(ConfigNotFoundError):
        autoget_backend_config(MODELS / "no-config", pt_user, lmdeploy="0.11.1")


REAL_RELEASES = ("0.7.3", "0.10.2", "0.14.0", "0.18.0")
CLASS = {"turbomind": "TurbomindEngineConfig", "pytorch": "PytorchEngineConfig"}
USER_KWARGS = {
    "turbomind": {
        "session_len": 4096, "enable_metrics": False, "attn_tp_size": 0, "cache_block_seq_len": 128,
        "rope_scaling_factor": 2.0, "max_prefill_token_num": 0, "quant_policy": 8,
    },
    "pytorch": {"session_len": 2048, "block_size": 128, "enable_prefix_caching": True, "eager_mode": False},
}  # fmt: skip


@pytest.mark.parametrize("release", REAL_RELEASES)
def test_autoget_backend_config_matches_real_lmdeploy(release: str) -> None:
    """The decision, applied to the real classes' fields, gives what the real LMDeploy gives (its
    own autoget_backend_config, run in that release's environment if one is built here)."""
    from pytest_lmbackend.oracle import OracleError, VenvError, find_python, shared_oracle

    if os.environ.get("LMBACKEND_DIFF_RELEASES", "").strip().lower() == "none":
        pytest.skip("LMBACKEND_DIFF_RELEASES=none: runs against real LMDeploy switched off")
    try:
        python = find_python(release)
    except VenvError as exc:
        pytest.skip(f"no environment for LMDeploy {release}: {exc}")
    if python is None:
        pytest.skip(f"no LMDeploy {release} environment: python -m pytest_lmbackend.oracle setup {release}")
    try:
        oracle = shared_oracle(release, build_env=False)
        known = {k: {f["name"] for f in v} for k, v in oracle.engine_fields().items()}
    except (OracleError, OSError) as exc:
        pytest.fail(f"cannot run real LMDeploy {release}: {exc}", pytrace=False)

    def full(engine: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        # the same class as the model's backend: LMDeploy hands back the object itself, all fields
        result = oracle.convert([kwargs], engine=engine, model=engine)[0]
        assert result["same_object"], result
        fields: dict[str, Any] = result["result"]
        return fields

    checked = 0
    for engine, kwargs in USER_KWARGS.items():
        kwargs = {k: v for k, v in kwargs.items() if k in known[engine]}
        for user in ({}, kwargs):
            for model in ("turbomind", "pytorch"):
                real = oracle.convert([user], engine=engine, model=model)[0]
                assert real["input_error"] is None and real["error"] is None, real
                fresh = {b: full(b, {}) for b in ("turbomind", "pytorch")}
                plan = plan_backend_config(
                    engine, full(engine, user), backend=model, target_attrs=fresh, lmdeploy=release  # type: ignore[arg-type]
                )
                assert real["backend"] in (None, plan.backend)
                assert real["result_class"] == CLASS[plan.backend]
                assert real["same_object"] == plan.reuse
                expected = full(engine, user) if plan.reuse else {**fresh[plan.backend], **plan.assign}
                assert real["result"] == expected, (engine, user, model)
                checked += 1
    assert checked == 8
