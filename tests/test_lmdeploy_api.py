"""The drop-ins with LMDeploy's names: autoget_backend, check_vl_llm, get_task, get_model_arch, ..."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_lmbackend import lmdeploy_api
from pytest_lmbackend.config import ConfigNotFoundError, MissingArchitectureError, read_config
from pytest_lmbackend.lmdeploy_api import (
    autoget_backend,
    check_vl_llm,
    get_model_arch,
    get_task,
    is_supported,
)
from pytest_lmbackend.rules import LMDeployCrashError

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
