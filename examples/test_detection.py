"""Detection-level tests: which backend and task LMDeploy 0.18.0 picks per model; no GPU needed."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(
    ("backend", "task"),
    [
        pytest.param("turbomind", "llm", marks=pytest.mark.lm_model("models/tiny-llama"), id="llama"),
        pytest.param("pytorch", "llm", marks=pytest.mark.lm_model("models/tiny-mistral"), id="mistral"),
        pytest.param("pytorch", "llm", marks=pytest.mark.lm_model("models/tiny-chatglm"), id="chatglm"),
        pytest.param("turbomind", "vlm", marks=pytest.mark.lm_model("models/tiny-qwen2-vl"), id="qwen2-vl"),
        pytest.param("turbomind", "llm", marks=pytest.mark.lm_model("models/tiny-llama-awq"), id="llama-awq"),
        pytest.param("pytorch", "llm", marks=pytest.mark.lm_model("models/tiny-llama-smoothquant"),
                     id="llama-smoothquant"),
    ],
)
def test_backend_and_task(lm_detection: Any, backend: str, task: str) -> None:
    assert (lm_detection.backend, lm_detection.task) == (backend, task)
    assert lm_detection.release == "0.18.0"


@pytest.mark.lm_model("models/tiny-qwen2-vl")
def test_qwen2_vl_is_vision_language(lm_detection: Any) -> None:
    assert lm_detection.is_vl
    assert lm_detection.arch == "Qwen2VLForConditionalGeneration"


@pytest.mark.lm_isolated
def test_written_model_dir_detects_like_its_config(lm_model_dir: Any) -> None:
    from pytest_lmbackend.rules import detect

    folder = lm_model_dir({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                           "hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
                           "vocab_size": 1024})
    assert (folder / "config.json").is_file()
    assert detect(folder, lmdeploy="0.18.0").backend == "pytorch"
    assert detect(folder, lmdeploy="0.10.2").backend == "turbomind"
