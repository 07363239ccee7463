"""Engine configs per backend and hardware requirements of model families (VL, quantized, TP)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.lm_model("models/tiny-mistral")
@pytest.mark.lm_engine(session_len=256)
def test_engine_config_takes_marker_and_ini_options(lm_backend: str, lm_backend_config: Any) -> None:
    if lm_backend in ("turbomind", "pytorch"):
        assert type(lm_backend_config).__name__ == {"turbomind": "TurbomindEngineConfig",
                                                    "pytorch": "PytorchEngineConfig"}[lm_backend]
        assert lm_backend_config.session_len == 256  # marker over ini
        assert lm_backend_config.cache_max_entry_count == 0.1  # from the ini lines
    else:
        assert lm_backend_config.options["session_len"] == 256


@pytest.mark.lm_model("models/tiny-qwen2-vl")
@pytest.mark.lm_backend("turbomind", "pytorch")
@pytest.mark.lm_requires(gpus=1, dtype="bf16", vram="16GiB")
def test_vl_model_gets_an_engine_config(lm_backend: str, lm_backend_config: Any, lm_detection: Any) -> None:
    assert lm_detection.is_vl
    assert type(lm_backend_config).__name__ == {"turbomind": "TurbomindEngineConfig",
                                                "pytorch": "PytorchEngineConfig"}[lm_backend]


@pytest.mark.lm_model("models/tiny-llama-awq")
@pytest.mark.not_pytorch
@pytest.mark.lm_requires(capability=">=7.5", turbomind_kernels=True)
@pytest.mark.lm_engine(model_format="awq")
def test_awq_model_format_reaches_the_engine(lm_backend: str, lm_backend_config: Any) -> None:
    # TurboMind runs AWQ natively; other backends get the option as given
    if lm_backend == "turbomind":
        assert lm_backend_config.model_format == "awq"
    else:
        assert lm_backend_config.options["model_format"] == "awq"


@pytest.mark.lm_model("models/tiny-llama-smoothquant")
@pytest.mark.pytorch
@pytest.mark.lm_requires(capability=">=8.0")
def test_smooth_quant_is_pytorch_only(lm_backend: str, lm_backend_config: Any) -> None:
    assert lm_backend == "pytorch"


@pytest.mark.lm_model("models/tiny-chatglm")
@pytest.mark.not_turbomind
@pytest.mark.gpu_num_1
def test_chatglm_on_pytorch(lm_backend: str, lm_backend_config: Any) -> None:
    assert lm_backend != "turbomind"


@pytest.mark.lm_model("models/tiny-llama")
@pytest.mark.lm_backend("turbomind", "pytorch")
@pytest.mark.gpu_num_2
@pytest.mark.lm_engine(tp=2)
def test_tensor_parallel_two_gpus(lm_backend: str, lm_backend_config: Any) -> None:
    assert lm_backend_config.tp == 2


@pytest.mark.lm_requires(packages=["flash_attn"], capability=">=9.0")
def test_needs_flash_attention_on_hopper(lm_hardware: Any) -> None:
    assert any(gpu.capability >= (9, 0) for gpu in lm_hardware.gpus)


def test_hardware_fixture_is_the_session_probe(lm_hardware: Any) -> None:
    assert lm_hardware.source in ("profile", "nvml", "nvidia-smi", "none")
    assert all(gpu.capability >= (0, 0) for gpu in lm_hardware.gpus)
