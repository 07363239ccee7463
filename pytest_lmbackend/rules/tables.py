"""LMDeploy's detection rules as data: every release from 0.4.0 on, and what each one changed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from typing import Any

# Every release published to PyPI from 0.4.0 on, oldest first. A new release is one entry here plus,
# where its rules changed, one ``Change`` below.
RELEASES: tuple[str, ...] = (
    "0.4.0", "0.4.1", "0.4.2",
    "0.5.0", "0.5.1", "0.5.2", "0.5.2.post1", "0.5.3",
    "0.6.0", "0.6.1", "0.6.2", "0.6.2.post1", "0.6.3", "0.6.4", "0.6.5",
    "0.7.0", "0.7.0.post1", "0.7.0.post2", "0.7.0.post3", "0.7.1", "0.7.2", "0.7.2.post1", "0.7.3",
    "0.8.0",
    "0.9.0", "0.9.1", "0.9.2", "0.9.2.post1",
    "0.10.0", "0.10.1", "0.10.2",
    "0.11.0", "0.11.1",
    "0.12.0", "0.12.1", "0.12.2", "0.12.3",
    "0.13.0", "0.14.0", "0.15.0", "0.16.0", "0.17.0", "0.18.0",
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    """What one release changed: TurboMind's arch table, the VL arch set, and rule switches."""

    release: str
    tm_add: tuple[str, ...] = ()
    tm_remove: tuple[str, ...] = ()
    vl_add: tuple[str, ...] = ()
    vl_remove: tuple[str, ...] = ()
    switches: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    why: str = ""


def _sw(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


QWEN2 = "Qwen2ForCausalLM"
LLAMA = "LlamaForCausalLM"
CHATGLM = "ChatGLMModel"
CHATGLM_CG = "ChatGLMForConditionalGeneration"

# Switch names and their meaning (the values before 0.4.0's entry are the defaults of ``RuleSet``):
#   workspace_is_tm        a ``triton_models`` folder makes TurboMind's is_supported say yes
#   workspace_task_llm     get_task answers "llm" when ``triton_models/weights`` exists
#   workspace_arch         get_model_arch reads the arch from the workspace's own config
#   smooth_quant_pt        quant_method "smooth_quant" anywhere in the config means PyTorch
#   baichuan_40_heads_pt   BaichuanForCausalLM with 40 attention heads is not TurboMind's
#   head_dim_archs         archs whose own head_dim must be in ``head_dims``
#   head_dims              the head_dim values TurboMind takes
#   explicit_head_dim      an explicit ``head_dim`` wins over hidden_size // num_attention_heads
#   chatglm_archs          archs that need ``num_layers == 40``
#   chatglm_vision_pt      ...and no ``vision_config``
#   internvl_head_dim      InternVLChatModel's ``llm_config`` must have a supported head_dim
#   internvl_llm_in_table  ...and its architecture must be in the table
#   llava_archs            archs whose ``text_config`` (Qwen2/Llama) must have a supported head_dim
#   molmo_kv_heads         MolmoForCausalLM needs ``num_key_value_heads``
#   vision_pt_archs        archs that go to PyTorch when they carry a ``vision_config``
#   xcomposer2_auto_map    an auto_map naming InternLMXComposer2ForCausalLM makes that the arch, and VL
#   language_config_auto_map  the arch may come from ``language_config.auto_map``
#   deepseek_vl            language_config (DeepseekV2) + vision_config is VL
#   qwen_visual_vl         QWenLMHeadModel with a ``visual`` key is VL
#   chatglm_vl_archs       ChatGLM archs that are VL with a ``vision_config``
#   not_vl_archs           archs check_vl_llm answers False for ...
#   not_vl_tm_only         ... only when the backend is TurboMind
#   llm_only_switch        the engine-config field that forces task "llm"
#   trust_remote_code      the value LMDeploy loads configs with
#   task_reads_raw_json    get_task reads config.json itself (a missing key is a KeyError there)
#   pytorch_config_wins    autoget_backend_config returns a PytorchEngineConfig as is, without reading
#                          the model, and returns (backend, config) instead of the config alone
#   null_quant_raises      ``"quantization_config": null`` makes loading the config raise AttributeError:
#                          transformers 4.x calls ``.to_dict()`` on it, 5.x accepts it. Releases before
#                          0.12.2 run with transformers 4.x only (0.12.0 and 0.12.1 pin ``<5``);
#                          0.12.2 is the first that allows 5.x, and answers with it
#   transformers_major     the transformers major a release answers with (4 before 0.12.2, then 5)
#   transformers           the transformers release whose facts stand for the one this release runs with
#                          (``rules/transformers/``, ``subconfigs.py``, generated from the oracle envs):
#                          4.51.3 up to 0.7.3, 4.57.1 up to 0.12.1, 5.12.1 up to 0.14.0, then 5.17.0; the
#                          releases between the four pinned ones are checked against their neighbours only
#   registered_types       model types LMDeploy registers a config class for itself when transformers
#                          has none (``lmdeploy/hf_configs``)
CHANGES: tuple[Change, ...] = (
    Change(
        "0.4.0",
        tm_add=(
            "BaiChuanForCausalLM", "BaichuanForCausalLM", "InternLMForCausalLM", "InternLM2ForCausalLM",
            "InternLMXComposerForCausalLM", LLAMA, "QWenLMHeadModel", QWEN2, "LlavaLlamaForCausalLM",
            "InternLMXComposer2ForCausalLM", "InternVLChatModel", "MultiModalityCausalLM",
            "MiniGeminiLlamaForCausalLM",
        ),
        vl_add=(
            "LlavaLlamaForCausalLM", "InternLMXComposer2ForCausalLM", "InternVLChatModel",
            "MiniGeminiLlamaForCausalLM",
        ),
        switches=_sw(
            workspace_is_tm=True, workspace_task_llm=True, baichuan_40_heads_pt=True,
            head_dim_archs=frozenset({QWEN2}), head_dims=frozenset({128}), xcomposer2_auto_map=True,
            qwen_visual_vl=True, trust_remote_code=True, task_reads_raw_json=True, null_quant_raises=True,
            transformers="4.51.3",
        ),
        why="#1406",
    ),
    Change("0.4.1", tm_add=("MGMLlamaForCausalLM",), vl_add=("MGMLlamaForCausalLM",)),
    Change(
        "0.5.0",
        tm_add=("MistralForCausalLM", "LlavaMistralForCausalLM", "MiniCPMV", CHATGLM),
        vl_add=(
            "LlavaMistralForCausalLM", "CogVLMForCausalLM", "MiniCPMV", "LlavaForConditionalGeneration",
            "LlavaNextForConditionalGeneration",
        ),
        switches=_sw(chatglm_archs=frozenset({CHATGLM}), workspace_arch=True),
        why="#1724",
    ),
    Change(
        "0.5.1",
        tm_remove=("InternLMXComposerForCausalLM",),
        vl_add=("Phi3VForCausalLM",),
        switches=_sw(
            chatglm_vision_pt=True, internvl_head_dim=True, chatglm_vl_archs=frozenset({CHATGLM})
        ),
        why="#1983, #1947",
    ),
    Change("0.5.2", tm_add=(CHATGLM_CG,), switches=_sw(chatglm_archs=frozenset({CHATGLM, CHATGLM_CG}))),
    Change("0.6.0", switches=_sw(task_reads_raw_json=False)),
    Change("0.6.1", vl_add=("Qwen2VLForConditionalGeneration",)),
    Change(
        "0.6.2",
        tm_add=("MixtralForCausalLM",),
        vl_add=("MllamaForConditionalGeneration",),
        switches=_sw(head_dim_archs=frozenset({QWEN2, LLAMA})),
        why="#2596, #2621",
    ),
    Change(
        "0.6.3",
        tm_add=("Qwen2MoeForCausalLM", "LlavaForConditionalGeneration", "MolmoForCausalLM"),
        vl_add=("MolmoForCausalLM",),
        switches=_sw(
            head_dims=frozenset({64, 128}), internvl_llm_in_table=True,
            llava_archs=frozenset({"LlavaForConditionalGeneration"}), molmo_kv_heads=True,
        ),
        why="#2715, #2710, #2744, #2716",
    ),
    Change("0.6.4", tm_add=("DeepseekV2ForCausalLM",)),
    Change(
        "0.6.5",
        switches=_sw(smooth_quant_pt=True, chatglm_vl_archs=frozenset({CHATGLM, CHATGLM_CG})),
        why="#2953",
    ),
    Change("0.7.0", tm_add=("InternLM3ForCausalLM",)),
    Change(
        "0.7.1",
        switches=_sw(
            vision_pt_archs=frozenset({"DeepseekV2ForCausalLM"}), language_config_auto_map=True,
            deepseek_vl=True,
        ),
        why="#3149",
    ),
    Change("0.7.2", vl_add=("Qwen2_5_VLForConditionalGeneration", "Gemma3ForConditionalGeneration")),
    Change(
        "0.7.3",
        tm_add=("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"),
        vl_add=("Llama4ForConditionalGeneration",),
        why="#3305",
    ),
    Change(
        "0.8.0",
        tm_remove=("MiniGeminiLlamaForCausalLM",),
        vl_remove=("MiniGeminiLlamaForCausalLM", "MGMLlamaForCausalLM"),
        switches=_sw(transformers="4.57.1"),
    ),
    Change(
        "0.9.0",
        tm_add=("InternVLForConditionalGeneration",),
        vl_add=("InternVLForConditionalGeneration",),
        switches=_sw(
            llava_archs=frozenset({"LlavaForConditionalGeneration", "InternVLForConditionalGeneration"})
        ),
        why="#3633",
    ),
    Change(
        "0.9.2",
        tm_add=(
            "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
            "InternS1ForConditionalGeneration",
        ),
        tm_remove=("MGMLlamaForCausalLM",),
        vl_add=("InternS1ForConditionalGeneration",),
        why="#3744",
    ),
    Change(
        "0.10.0",
        tm_add=("GptOssForCausalLM",),
        vl_add=("Glm4vForConditionalGeneration",),
        switches=_sw(explicit_head_dim=True),
        why="#3839, #3886",
    ),
    Change("0.11.0", vl_add=("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")),
    Change(
        "0.12.0",
        vl_add=("InternS1ProForConditionalGeneration",),
        switches=_sw(workspace_arch=False, pytorch_config_wins=True),
        why="#4253",
    ),
    Change("0.12.1", vl_add=("InternS1_1_ForConditionalGeneration",)),
    Change(
        "0.12.2",
        tm_add=(
            "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration", "Glm4MoeLiteForCausalLM",
        ),
        vl_add=("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration"),
        switches=_sw(
            vision_pt_archs=frozenset({"DeepseekV2ForCausalLM", "Glm4MoeLiteForCausalLM"}),
            not_vl_archs=frozenset({"Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration"}),
            null_quant_raises=False, transformers_major=5, transformers="5.12.1",
        ),
        why="#4362, #4389; requirements: transformers>=4.52.0 (no longer <5.0.0)",
    ),
    Change("0.12.3", switches=_sw(not_vl_tm_only=True), why="#4430"),
    Change(
        "0.13.0",
        vl_add=("InternS2PreviewForConditionalGeneration", "InternS2PreviewForCausalLM"),
        switches=_sw(
            workspace_is_tm=False, trust_remote_code=False,
            not_vl_archs=frozenset({
                "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration",
                "InternS2PreviewForConditionalGeneration", "InternS2PreviewForCausalLM",
            }),
        ),
        why="#4511",
    ),
    Change(
        "0.14.0",
        tm_add=("InternS2PreviewForConditionalGeneration",),
        tm_remove=(
            "BaiChuanForCausalLM", "BaichuanForCausalLM", "InternLMForCausalLM", "QWenLMHeadModel",
            "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "MistralForCausalLM",
            "LlavaLlamaForCausalLM", "LlavaMistralForCausalLM", "LlavaForConditionalGeneration",
            "InternLMXComposer2ForCausalLM", "MultiModalityCausalLM", "DeepseekV2ForCausalLM", "MiniCPMV",
            CHATGLM, CHATGLM_CG, "MolmoForCausalLM",
        ),
        vl_add=("Qwen3OmniMoeForConditionalGeneration",),
        switches=_sw(
            workspace_is_tm=True, workspace_task_llm=False, baichuan_40_heads_pt=False,
            head_dim_archs=frozenset(), chatglm_archs=frozenset(), chatglm_vision_pt=False,
            internvl_head_dim=False, internvl_llm_in_table=False, llava_archs=frozenset(),
            molmo_kv_heads=False, vision_pt_archs=frozenset({"Glm4MoeLiteForCausalLM"}),
            not_vl_archs=frozenset(), llm_only_switch="disable_vision_encoder",
        ),
        why="#4557, #4623",
    ),
    Change(
        "0.15.0",
        vl_remove=("InternLMXComposer2ForCausalLM", "MllamaForConditionalGeneration"),
        switches=_sw(xcomposer2_auto_map=False, qwen_visual_vl=False, llm_only_switch="language_model_only",
                     transformers="5.17.0"),
        why="#4716, #4693",
    ),
    Change(
        "0.16.0",
        tm_add=(
            "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
            "InternS2MobiusForConditionalGeneration",
        ),
        vl_add=("InternS2MobiusForConditionalGeneration", "InternS2MobiusForCausalLM"),
        why="#4719, #4816",
    ),
    Change(
        "0.17.0",
        vl_add=("KimiK25ForConditionalGeneration", "Kimi_K25ForConditionalGeneration"),
        switches=_sw(registered_types=frozenset({"kimi_k2"})),
    ),
)  # fmt: skip

# transformers fills these in when config.json leaves them out, for the model types whose config
# class it ships (others load as a bare config, and LMDeploy fails on the missing attribute).
_LLM_DEFAULTS = MappingProxyType({"hidden_size": 4096, "num_attention_heads": 32})
TRANSFORMERS_DEFAULTS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    dict.fromkeys(("llama", "qwen2", "qwen3", "mistral", "mixtral"), _LLM_DEFAULTS)
)

# What transformers 4.x leaves in ``head_dim`` when config.json has none, or null, per model_type, as
# the explicit-head_dim rule (0.10-0.13) reads it: "computed" = hidden_size // num_attention_heads,
# None = no usable head_dim (TurboMind says no). Model types not listed: absent means computed (no
# attribute), null means None. Checked on LMDeploy 0.10.2 with transformers 4.57.1.
COMPUTED = "computed"
HEAD_DIM_WHEN_UNSET: Mapping[str, tuple[int | str | None, int | str | None]] = MappingProxyType({
    "llama": (COMPUTED, COMPUTED),
    "mistral": (None, None),
    "mixtral": (None, None),
    "qwen3": (128, None),
})  # fmt: skip
