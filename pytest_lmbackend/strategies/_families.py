"""Model families that config generation draws from: architecture names, config shapes, releases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: How the language part of a config is laid out.
Shape = Literal[
    "text",  # a plain decoder: body fields at the top level
    "chatglm",  # ChatGLM/GLM-4: num_layers, kv_channels, multi_query_group_num
    "qwen",  # QWen-1: kv_channels, seq_length, optional `visual`
    "llm_config",  # InternVLChatModel: nested `llm_config`
    "text_config",  # HF multimodal: nested `text_config`
    "language_config",  # DeepSeek-VL: nested `language_config`
    "vision_top",  # body at the top level beside a `vision_config`
]


@dataclass(frozen=True)
class Family:
    """One kind of model config: its architecture names and how its config is shaped.

    ``vision`` is True when every config of the family has a vision part, False when none has,
    and None when the vision part is optional (ChatGLM/GLM-4V, QWen/QWen-VL, DeepseekV2, ...).
    ``tabled`` is False for families whose architectures no LMDeploy detection table names
    (which releases name the others is read from `pytest_lmbackend.rules`).
    """

    name: str
    archs: tuple[str, ...]
    model_type: str | None
    shape: Shape
    vision: bool | None = False
    moe: bool = False
    auto_map: str | None = None
    explicit_head_dim: bool | None = None
    tabled: bool = True


def _f(*args: object, **kwargs: object) -> Family:
    return Family(*args, **kwargs)  # type: ignore[arg-type]


FAMILY_TABLE: tuple[Family, ...] = (
    # Listed simplest first: Hypothesis shrinks a `sampled_from` towards the first entry.
    _f("llama", ("LlamaForCausalLM",), "llama", "text"),
    _f("qwen2", ("Qwen2ForCausalLM",), "qwen2", "text"),
    _f("qwen3", ("Qwen3ForCausalLM",), "qwen3", "text", explicit_head_dim=True),
    _f("mistral", ("MistralForCausalLM",), "mistral", "text"),
    _f("internlm", ("InternLMForCausalLM",), "internlm", "text", auto_map="modeling_internlm"),
    _f("internlm2", ("InternLM2ForCausalLM",), "internlm2", "text", auto_map="modeling_internlm2"),
    _f(
        "internlm3",
        ("InternLM3ForCausalLM",),
        "internlm3",
        "text",
        auto_map="modeling_internlm3",
        explicit_head_dim=True,
    ),
    _f(
        "baichuan",
        ("BaichuanForCausalLM", "BaiChuanForCausalLM"),
        "baichuan",
        "text",
        auto_map="modeling_baichuan",
    ),
    _f("qwen2_moe", ("Qwen2MoeForCausalLM",), "qwen2_moe", "text", moe=True),
    _f(
        "qwen3_moe",
        ("Qwen3MoeForCausalLM",),
        "qwen3_moe",
        "text",
        moe=True,
        explicit_head_dim=True,
    ),
    _f("mixtral", ("MixtralForCausalLM",), "mixtral", "text", moe=True),
    _f(
        "deepseek_v2",
        ("DeepseekV2ForCausalLM",),
        "deepseek_v2",
        "text",
        vision=None,
        moe=True,
        auto_map="modeling_deepseek",
    ),
    _f(
        "glm4_moe_lite",
        ("Glm4MoeLiteForCausalLM",),
        "glm4_moe_lite",
        "text",
        vision=None,
        moe=True,
    ),
    _f("gpt_oss", ("GptOssForCausalLM",), "gpt_oss", "text", moe=True, explicit_head_dim=True),
    _f(
        "chatglm",
        ("ChatGLMModel", "ChatGLMForConditionalGeneration"),
        "chatglm",
        "chatglm",
        vision=None,
        auto_map="modeling_chatglm",
    ),
    _f("qwen", ("QWenLMHeadModel",), "qwen", "qwen", vision=None, auto_map="modeling_qwen"),
    _f(
        "internvl",
        ("InternVLChatModel",),
        "internvl_chat",
        "llm_config",
        vision=True,
        auto_map="modeling_internvl_chat",
    ),
    _f(
        "internvl_hf",
        ("InternVLForConditionalGeneration", "InternS1ForConditionalGeneration"),
        "internvl",
        "text_config",
        vision=True,
    ),
    _f(
        "llava_hf",
        ("LlavaForConditionalGeneration", "LlavaNextForConditionalGeneration"),
        "llava",
        "text_config",
        vision=True,
    ),
    _f(
        "llava",
        (
            "LlavaLlamaForCausalLM",
            "LlavaMistralForCausalLM",
            "MGMLlamaForCausalLM",
            "MiniGeminiLlamaForCausalLM",
        ),
        "llava_llama",
        "vision_top",
        vision=True,
    ),
    _f(
        "qwen2_vl",
        ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
        "qwen2_vl",
        "vision_top",
        vision=True,
    ),
    _f(
        "qwen3_vl",
        (
            "Qwen3VLForConditionalGeneration",
            "Qwen3VLMoeForConditionalGeneration",
            "Qwen3OmniMoeForConditionalGeneration",
        ),
        "qwen3_vl",
        "text_config",
        vision=True,
    ),
    _f(
        "qwen3_5",
        ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration"),
        "qwen3_5",
        "text_config",
        vision=True,
    ),
    _f(
        "minicpmv",
        ("MiniCPMV",),
        "minicpmv",
        "vision_top",
        vision=True,
        auto_map="modeling_minicpmv",
    ),
    _f("molmo", ("MolmoForCausalLM",), "molmo", "text", vision=True, auto_map="modeling_molmo"),
    _f(
        "xcomposer2",
        ("InternLMXComposer2ForCausalLM",),
        "internlmxcomposer2",
        "text",
        vision=True,
        auto_map="modeling_internlm_xcomposer2",
    ),
    _f(
        "deepseek_vl",
        ("MultiModalityCausalLM", "DeepseekVLV2ForCausalLM"),
        "multi_modality",
        "language_config",
        vision=True,
    ),
    _f("gemma3", ("Gemma3ForConditionalGeneration",), "gemma3", "text_config", vision=True),
    _f(
        "llama4",
        ("Llama4ForConditionalGeneration",),
        "llama4",
        "text_config",
        vision=True,
        moe=True,
    ),
    _f(
        "mllama",
        ("MllamaForConditionalGeneration",),
        "mllama",
        "text_config",
        vision=True,
    ),
    _f("glm4v", ("Glm4vForConditionalGeneration",), "glm4v", "vision_top", vision=True),
    _f(
        "phi3v",
        ("Phi3VForCausalLM",),
        "phi3_v",
        "text",
        vision=True,
        auto_map="modeling_phi3_v",
    ),
    _f(
        "cogvlm",
        ("CogVLMForCausalLM",),
        "cogvlm",
        "text",
        vision=True,
        auto_map="modeling_cogvlm",
    ),
    _f(
        "interns",
        (
            "InternS1ProForConditionalGeneration",
            "InternS1_1_ForConditionalGeneration",
            "InternS2MobiusForConditionalGeneration",
            "InternS2PreviewForConditionalGeneration",
            "InternS2MobiusForCausalLM",
            "InternS2PreviewForCausalLM",
        ),
        "interns2",
        "text_config",
        vision=True,
    ),
    _f(
        "kimi_vl",
        ("KimiK25ForConditionalGeneration", "Kimi_K25ForConditionalGeneration"),
        "kimi_k25",
        "text_config",
        vision=True,
        moe=True,
    ),
    _f(
        "xcomposer",
        ("InternLMXComposerForCausalLM",),
        "InternLMXComposer",
        "text",
        auto_map="modeling_InternLM_XComposer",
    ),
    # Architectures no detection table names: every release must send them to PyTorch.
    _f(
        "pytorch_only",
        (
            "DeepseekV3ForCausalLM",
            "Phi3ForCausalLM",
            "CohereForCausalLM",
            "GPTBigCodeForCausalLM",
            "Gemma2ForCausalLM",
            "MiniCPM3ForCausalLM",
            "DeciLMForCausalLM",
            "Glm4MoeForCausalLM",
        ),
        None,
        "text",
        moe=False,
        tabled=False,
    ),
    _f("unknown", (), None, "text", tabled=False),
    _f("unknown_vl", (), None, "vision_top", vision=True, tabled=False),
)

FAMILIES: dict[str, Family] = {f.name: f for f in FAMILY_TABLE}

#: Architectures (by name) that some LMDeploy detection table names, from the families above.
KNOWN_ARCHS: frozenset[str] = frozenset(a for f in FAMILY_TABLE if f.tabled for a in f.archs)


def named_by(family: Family, release: str) -> bool:
    """Whether `release`'s detection tables (TurboMind's or the vision-language set) name the family."""
    from ..rules import resolve_release, rule_set

    rules = rule_set(resolve_release(release))
    return any(a in rules.tm_archs or a in rules.vl_archs for a in family.archs)
