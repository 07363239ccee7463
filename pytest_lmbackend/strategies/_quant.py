"""Quantization sections of HF configs, shaped like the ones real checkpoints ship."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

#: Quantization kinds `hf_configs(quantization=...)` accepts; "none" means no quantization section.
QUANTIZATIONS: tuple[str, ...] = (
    "none",
    "awq",
    "gptq",
    "smooth_quant",
    "fp8",
    "compressed-tensors",
    "mxfp4",
    "bitsandbytes",
    "quantization_bit",
)

_GROUP_SIZES = (128, 64, 32, -1)
_AWQ_GROUP = st.sampled_from(_GROUP_SIZES[:3])
_AWQ_VERSION = st.sampled_from(("gemm", "gemv"))
_BITS = st.sampled_from((4, 8))
_GROUP = st.sampled_from(_GROUP_SIZES)
_COIN = st.booleans()
_SQ_DTYPE = st.sampled_from(("int8", "fp8"))
_CT_FORMAT = st.sampled_from(("pack-quantized", "float-quantized", "nvfp4-pack-quantized"))


@st.composite
def _awq(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "quant_method": "awq",
        "bits": 4,
        "group_size": draw(_AWQ_GROUP),
        "zero_point": True,
        "version": draw(_AWQ_VERSION),
    }


@st.composite
def _gptq(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "quant_method": "gptq",
        "bits": draw(_BITS),
        "group_size": draw(_GROUP),
        "sym": draw(_COIN),
        "desc_act": draw(_COIN),
        "damp_percent": 0.01,
    }


@st.composite
def _smooth_quant(draw: st.DrawFn) -> dict[str, Any]:
    return {"quant_method": "smooth_quant", "bits": 8, "quant_dtype": draw(_SQ_DTYPE)}


@st.composite
def _fp8(draw: st.DrawFn) -> dict[str, Any]:
    q: dict[str, Any] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    if draw(_COIN):
        q["fmt"] = "e4m3"
        q["weight_block_size"] = [128, 128]
    return q


@st.composite
def _compressed_tensors(draw: st.DrawFn) -> dict[str, Any]:
    num_bits = draw(_BITS)
    return {
        "quant_method": "compressed-tensors",
        "format": draw(_CT_FORMAT),
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": num_bits, "type": "int", "symmetric": True},
            }
        },
        "ignore": ["lm_head"],
    }


def _mxfp4() -> st.SearchStrategy[dict[str, Any]]:
    return st.just(
        {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "lm_head"]}
    )


@st.composite
def _bitsandbytes(draw: st.DrawFn) -> dict[str, Any]:
    four = draw(_COIN)
    return {
        "quant_method": "bitsandbytes",
        "load_in_4bit": four,
        "load_in_8bit": not four,
        "bnb_4bit_quant_type": "nf4",
    }


QUANT_SECTIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "awq": _awq(),
    "gptq": _gptq(),
    "smooth_quant": _smooth_quant(),
    "fp8": _fp8(),
    "compressed-tensors": _compressed_tensors(),
    "mxfp4": _mxfp4(),
    "bitsandbytes": _bitsandbytes(),
}
