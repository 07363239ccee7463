"""The rules per release: answers checked against the real LMDeploy, typed errors, release resolution."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_lmbackend.config import (
    ConfigEncodingError,
    ConfigError,
    ConfigJSONError,
    ConfigNotFoundError,
    ConfigTypeError,
    ConfigValueError,
    MissingArchitectureError,
    MissingFieldError,
    read_config,
)
from pytest_lmbackend.rules import (
    KNOWN_RELEASES,
    Detection,
    LMDeployCrashError,
    UnknownReleaseError,
    default_release,
    detect,
    detect_all,
    resolve_release,
    rule_set,
)
from pytest_lmbackend.rules import releases as releases_mod
from pytest_lmbackend.rules.tables import CHANGES

MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"

# What the real LMDeploy answered (TM = turbomind, PT = pytorch / task) for the folders in
# fixtures/models, release by release, with the transformers each release shipped against (0.7.3:
# 4.51.3, 0.10.2: 4.57.1, 0.14.0: 5.12.1, 0.18.0: 5.17.0; 0.5.3: 4.44.2, 0.6.2: 4.45.2, 0.7.1: 4.48.3,
# current when they were published; 0.6.3, 0.9.2, 0.12.x, 0.13.0, 0.15.0, 0.16.0, 0.17.0: 5.24.0, the
# newest their metadata allows). "-": LMDeploy raised (see test_lmdeploy_raises); architectures-string
# is left out (answered by some transformers only).
LMDEPLOY_ANSWERS_BEFORE_0_12 = """
fixture                          0.5.3  0.6.2  0.6.3  0.7.1  0.7.3  0.9.2 0.10.2
baichuan-40-heads               PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
chatglm-28-layers               PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
chatglm-40-layers               TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
chatglm-vision                  PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
deepseek-v2-vision-arch         PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
deepseek-vl2-language-auto-map       -      -      - PT/vlm PT/vlm PT/vlm PT/vlm
glm4-moe-lite-vision            PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
glm4v                           PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/vlm
gpt-oss-like                    PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm TM/llm
heads-not-integer               TM/llm      -      -      -      -      -      -
heads-zero                      TM/llm      -      -      -      -      -      -
interns2-mobius                 PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
internvl-chat-internlm2              -      -      -      -      -      -      -
internvl-chat-phi3                   -      -      -      -      -      -      -
kimi-k25                        PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
llama-explicit-head-dim-256     TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm PT/llm
llama-head128                   TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-head64                    TM/llm PT/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-head80                    TM/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
llama-smooth-quant              TM/llm TM/llm TM/llm PT/llm PT/llm PT/llm PT/llm
llava-hf-mistral                PT/vlm PT/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
llava-hf-qwen2-head64           PT/vlm PT/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
mllama                          PT/llm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
molmo-kv-heads                  PT/llm PT/llm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
molmo-no-kv-heads               PT/llm PT/llm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
qwen-vl-visual                  TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
qwen2-head128                   TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
qwen2-head64                    PT/llm PT/llm TM/llm TM/llm TM/llm TM/llm TM/llm
qwen2-vl                        PT/llm PT/vlm PT/vlm PT/vlm PT/vlm TM/vlm TM/vlm
qwen3-5-vl                      PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
tm-workspace                    TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
tm-workspace-with-config        TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
xcomposer2-auto-map             TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
"""
LMDEPLOY_ANSWERS_FROM_0_12 = """
fixture                         0.12.2 0.12.3 0.13.0 0.14.0 0.15.0 0.16.0 0.17.0 0.18.0
baichuan-40-heads               PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
chatglm-28-layers               PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
chatglm-40-layers               TM/llm TM/llm TM/llm PT/llm PT/llm PT/llm PT/llm PT/llm
chatglm-vision                  PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
deepseek-v2-vision-arch         PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
deepseek-vl2-language-auto-map  PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
glm4-moe-lite-vision            PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
glm4v                           PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
gpt-oss-like                    TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
heads-not-integer                    -      -      - TM/llm TM/llm TM/llm TM/llm TM/llm
heads-zero                           -      -      - TM/llm TM/llm TM/llm TM/llm TM/llm
interns2-mobius                 PT/llm PT/llm PT/llm PT/llm PT/llm TM/vlm TM/vlm TM/vlm
internvl-chat-internlm2              -      -      - TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
internvl-chat-phi3                   -      -      - TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
kimi-k25                        PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/vlm PT/vlm
llama-explicit-head-dim-256     PT/llm PT/llm PT/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-head128                   TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-head64                    TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-head80                    PT/llm PT/llm PT/llm TM/llm TM/llm TM/llm TM/llm TM/llm
llama-smooth-quant              PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm PT/llm
llava-hf-mistral                TM/vlm TM/vlm TM/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
llava-hf-qwen2-head64           TM/vlm TM/vlm TM/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
mllama                          PT/vlm PT/vlm PT/vlm PT/vlm PT/llm PT/llm PT/llm PT/llm
molmo-kv-heads                  TM/vlm TM/vlm TM/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
molmo-no-kv-heads               PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm PT/vlm
qwen-vl-visual                  TM/vlm TM/vlm TM/vlm PT/vlm PT/llm PT/llm PT/llm PT/llm
qwen2-head128                   TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
qwen2-head64                    TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm TM/llm
qwen2-vl                        TM/vlm TM/vlm TM/vlm PT/vlm PT/vlm TM/vlm TM/vlm TM/vlm
qwen3-5-vl                      TM/llm TM/llm TM/llm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
tm-workspace                    TM/llm TM/llm      -      -      -      -      -      -
tm-workspace-with-config        TM/llm TM/llm TM/llm TM/vlm TM/vlm TM/vlm TM/vlm TM/vlm
xcomposer2-auto-map             TM/vlm TM/vlm TM/vlm PT/vlm TM/llm TM/llm TM/llm TM/llm
"""


def _answers(table: str) -> list[tuple[str, str, str]]:
    header, *rows = (line.split() for line in table.strip().splitlines())
    return [
        (row[0], release, cell.replace("TM/", "turbomind ").replace("PT/", "pytorch "))
        for row in rows
        for release, cell in zip(header[1:], row[1:], strict=True)
        if cell != "-"
    ]

ANSWERED = _answers(LMDEPLOY_ANSWERS_BEFORE_0_12) + _answers(LMDEPLOY_ANSWERS_FROM_0_12)


@pytest.mark.parametrize(("fixture", "release", "answer"), ANSWERED)
def test_agrees_with_lmdeploy(fixture: str, release: str, answer: str) -> None:
    found = detect(MODELS / fixture, lmdeploy=release)
    assert f"{found.backend} {found.task}" == answer, found.rule
    assert found.release == release
    assert found.is_vl == (found.task == "vlm")


# Cases where that LMDeploy release raised (the exception it raised, as the oracle reported it), and
# the typed error given here instead.
CHECKED = (
    "0.5.3", "0.6.2", "0.6.3", "0.7.1", "0.7.3", "0.9.2", "0.10.2", "0.12.2", "0.12.3", "0.13.0",
    "0.14.0", "0.15.0", "0.16.0", "0.17.0", "0.18.0",
)  # fmt: skip
BEFORE_0_14 = CHECKED[1:10]  # the Llama head_dim rule exists from 0.6.2 to 0.13
LMDEPLOY_RAISES = [
    ("auto-map-only", CHECKED, LMDeployCrashError),  # TypeError (KeyError in 0.5.3)
    ("no-architectures", CHECKED, MissingArchitectureError),  # RuntimeError
    ("empty-architectures", CHECKED, MissingArchitectureError),  # RuntimeError
    ("deepseek-vl2-language-auto-map", CHECKED[:3], MissingArchitectureError),  # RuntimeError
    ("heads-not-integer", BEFORE_0_14, ConfigTypeError),  # TypeError
    ("heads-zero", BEFORE_0_14, ConfigValueError),  # ZeroDivisionError
    ("malformed-json", CHECKED, ConfigJSONError),  # OSError
    ("not-utf8", CHECKED, ConfigEncodingError),  # OSError
    ("no-config", CHECKED, ConfigNotFoundError),  # RuntimeError
    ("tm-workspace", CHECKED[9:], LMDeployCrashError),  # RuntimeError
    ("architectures-string", ("0.14.0", "0.18.0"), ConfigTypeError),  # StrictDataclassFieldValidationError
    ("internvl-chat-internlm2", CHECKED[:10], LMDeployCrashError),  # AttributeError: loaded bare
    ("internvl-chat-phi3", CHECKED[:10], LMDeployCrashError),  # AttributeError
]


@pytest.mark.parametrize(
    ("fixture", "release", "error"),
    [(name, rel, err) for name, rels, err in LMDEPLOY_RAISES for rel in rels],
)
def test_lmdeploy_raises(fixture: str, release: str, error: type[ConfigError]) -> None:
    with pytest.raises(error) as info:
        detect(MODELS / fixture, lmdeploy=release)
    assert fixture in info.value.path


def test_crash_error_names_the_release_and_exception() -> None:
    with pytest.raises(LMDeployCrashError) as info:
        detect(MODELS / "auto-map-only", lmdeploy="0.18.0")
    assert info.value.release == "0.18.0"
    assert info.value.raises == "TypeError"
    assert "LMDeploy 0.18.0 raises TypeError" in str(info.value)
    with pytest.raises(LMDeployCrashError) as info:
        detect(MODELS / "auto-map-only", lmdeploy="0.5.3")
    assert info.value.raises == "KeyError"  # 0.5.3 read config.json itself in get_task


def test_config_only_remote_code_folders_crash_where_lmdeploy_does(tmp_path: Path) -> None:
    # LMDeploy < 0.13 loads InternVLChatModel with its remote code; a folder without it (or a file that
    # names none) loads bare, and is_supported fails on llm_config, a dict (AttributeError).
    for fixture in ("internvl-chat-internlm2", "internvl-chat-phi3"):
        with pytest.raises(LMDeployCrashError) as info:
            detect(MODELS / fixture, lmdeploy="0.10.2")
        assert (info.value.raises, info.value.field) == ("AttributeError", "llm_config.architectures")
    config = json.loads((MODELS / "internvl-chat-phi3" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LMDeployCrashError, match=r"configuration_internvl_chat\.py is not in the folder"):
        detect(folder, lmdeploy="0.10.2")
    # the real snapshot ships the code: llm_config decides, as a checkpoint that has it gets
    (folder / "configuration_internvl_chat.py").write_text("# remote code, read as data only\n")
    phi3 = detect(folder, lmdeploy="0.10.2")
    assert phi3.backend == "pytorch" and "Phi3ForCausalLM is not in TurboMind's table" in phi3.rule
    # a mapping has no folder: answered as the snapshot, with a note saying what cannot be known
    found = detect(config, lmdeploy="0.10.2")
    assert found.backend == "pytorch" and any("a mapping has no folder" in n for n in found.notes)
    # 0.13+ loads without remote code and has no InternVLChatModel rule left to fail
    assert detect(folder, lmdeploy="0.14.0").backend == "turbomind"


def test_a_string_architectures_follows_the_release() -> None:
    # transformers 4.x takes its first letter for the arch ("L"); 5.12-5.17 reject it.
    found = detect(MODELS / "architectures-string", lmdeploy="0.7.3")
    assert (found.arch, found.backend, found.task) == ("L", "pytorch", "llm")
    assert any("'architectures' is a str" in note for note in found.notes)
    with pytest.raises(ConfigTypeError, match="list of strings") as info:
        detect(MODELS / "architectures-string", lmdeploy="0.18.0")
    assert isinstance(info.value, LMDeployCrashError)
    assert info.value.raises == "StrictDataclassFieldValidationError"


def test_rule_sentence_names_the_release_range() -> None:
    found = detect(MODELS / "qwen2-vl", lmdeploy="0.18.0")
    assert found.rule.startswith("Qwen2VLForConditionalGeneration is in TurboMind's table since 0.16.0")
    assert "left TurboMind's table in 0.14.0" in detect(MODELS / "qwen2-vl", lmdeploy="0.14.0").rule
    assert "since 0.9.2" in detect(MODELS / "qwen2-vl", lmdeploy="0.10.2").rule
    assert "head_dim 80" in detect(MODELS / "llama-head80", lmdeploy="0.7.3").rule
    assert "smooth_quant" in detect(MODELS / "llama-smooth-quant", lmdeploy="0.7.3").rule


def test_language_model_only() -> None:
    qwen2_vl = MODELS / "qwen2-vl"
    forced = detect(qwen2_vl, lmdeploy="0.18.0", language_model_only=True)
    assert (forced.task, forced.is_vl) == ("llm", True)
    assert "language_model_only" in forced.rule
    assert "disable_vision_encoder" in detect(qwen2_vl, lmdeploy="0.14.0", language_model_only=True).rule
    # Before 0.14 LMDeploy has no such switch.
    unforced = detect(qwen2_vl, lmdeploy="0.13.0", language_model_only=True)
    assert unforced.task == "vlm" and "does not exist in 0.13.0" in unforced.rule
    # get_task returns before check_vl_llm, so a config it would fail on still answers.
    assert detect(MODELS / "auto-map-only", lmdeploy="0.18.0", language_model_only=True).task == "llm"


def test_mapping_and_folder_agree() -> None:
    cfg = read_config(MODELS / "llava-hf-qwen2-head64")
    assert cfg.data is not None
    for release in KNOWN_RELEASES:
        by_folder = detect(MODELS / "llava-hf-qwen2-head64", lmdeploy=release)
        assert detect(dict(cfg.data), lmdeploy=release) == by_folder


def test_missing_field_without_default() -> None:
    with pytest.raises(MissingFieldError) as info:
        detect({"architectures": ["ChatGLMModel"]}, lmdeploy="0.10.2")
    assert info.value.field == "num_layers"
    with pytest.raises(MissingFieldError) as info:
        internvl = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
                    "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"},
                    "llm_config": {"architectures": [QWEN2]}}
        detect(internvl, lmdeploy="0.7.3")
    assert info.value.field == "llm_config.num_attention_heads"


QWEN2 = "Qwen2ForCausalLM"


def test_transformers_defaults_fill_known_model_types() -> None:
    # transformers' Qwen2Config defaults: hidden_size 4096, 32 heads -> head_dim 128.
    assert detect({"architectures": [QWEN2], "model_type": "qwen2"}, lmdeploy="0.7.3").backend == "turbomind"


def test_nested_architecture_missing_is_lmdeploy_crash() -> None:
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "text_config": {"hidden_size": 4096}}
    with pytest.raises(LMDeployCrashError) as info:
        detect(cfg, lmdeploy="0.10.2")
    assert info.value.field == "text_config.architectures"
    assert detect(cfg, lmdeploy="0.18.0").backend == "pytorch"  # 0.14+ has no Llava rule


def test_detect_all_reads_once_and_covers_every_release() -> None:
    results = detect_all(MODELS / "qwen2-vl")
    assert list(results) == list(KNOWN_RELEASES)
    assert all(isinstance(r, Detection) for r in results.values())
    backends = {r.backend for r in results.values() if isinstance(r, Detection)}
    assert backends == {"turbomind", "pytorch"}


# -- the release tables


def test_known_releases_span_0_4_to_0_18_in_order() -> None:
    assert KNOWN_RELEASES[0] == "0.4.0" and KNOWN_RELEASES[-1] == "0.18.0"
    keys = [releases_mod._key(r) for r in KNOWN_RELEASES]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {c.release for c in CHANGES} <= set(KNOWN_RELEASES)


def test_turbomind_table_of_0_14_was_cut_down() -> None:
    assert rule_set("0.14.0").tm_archs == {
        "Qwen2ForCausalLM", "Qwen2MoeForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM",
        "Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration",
        "InternS2PreviewForConditionalGeneration", "InternVLChatModel", "InternVLForConditionalGeneration",
        "InternS1ForConditionalGeneration", "LlamaForCausalLM", "InternLM2ForCausalLM",
        "InternLM3ForCausalLM", "Glm4MoeLiteForCausalLM", "GptOssForCausalLM", "MixtralForCausalLM",
    }  # fmt: skip
    assert rule_set("0.16.0").tm_archs - rule_set("0.15.0").tm_archs == {
        "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
        "InternS2MobiusForConditionalGeneration",
    }  # fmt: skip
    assert replace(rule_set("0.18.0"), release="0.17.0") == rule_set("0.17.0")


def test_workspace_rule_is_missing_in_0_13_only() -> None:
    assert [r for r in KNOWN_RELEASES if not rule_set(r).workspace_is_tm] == ["0.13.0"]
    with pytest.raises(LMDeployCrashError):
        detect(MODELS / "tm-workspace", lmdeploy="0.13.0")
    found = detect(MODELS / "tm-workspace-with-config", lmdeploy="0.13.0")
    assert found.rule.startswith("MiniCPMV is in TurboMind's table")  # config.json decides, not the folder
    assert found.task == "llm"  # get_task of 0.13 still short-cuts triton_models/weights


@pytest.mark.parametrize(
    ("spec", "release"),
    [
        ("0.7.3", "0.7.3"), ("v0.10.2", "0.10.2"), ("0.7.4", "0.7.3"), ("0.10", "0.10.0"),
        ("0.7.0.post2", "0.7.0.post2"), ("0.7.2post1", "0.7.2.post1"), ("0.14.0a1", "0.13.0"),
        ("0.7.3+cu118", "0.7.3"), ("0.10.0rc1", "0.9.2.post1"), ("1.2.0", "0.18.0"),
        ("0.18.0-rc1", "0.17.0"), ("0.18.0_rc1", "0.17.0"), ("0.18.0dev0", "0.17.0"),
    ],
)  # fmt: skip
def test_resolve_release(spec: str, release: str) -> None:
    assert resolve_release(spec) == release


@pytest.mark.parametrize("spec", ["0.3.0", "latest", "", "0.x", "1", "0.١٨.0", "٠.18.0", "0.18.0rc١"])
def test_unknown_release_is_typed_and_lists_releases(spec: str) -> None:
    with pytest.raises(UnknownReleaseError) as info:
        resolve_release(spec)
    assert isinstance(info.value, ValueError)
    assert "0.4.0, 0.4.1" in str(info.value) and "0.18.0" in str(info.value)
    with pytest.raises(UnknownReleaseError):
        detect(MODELS / "llama-head128", lmdeploy=spec)


def test_default_release_reads_installed_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    for installed, expected in (("0.10.1", "0.10.1"), ("0.12.9", "0.12.3"), (None, KNOWN_RELEASES[-1])):
        monkeypatch.setattr(releases_mod, "installed_lmdeploy", lambda v=installed: v)
        releases_mod.default_release.cache_clear()
        releases_mod.resolve_release.cache_clear()
        try:
            assert default_release() == expected
            assert detect(MODELS / "llama-head128").release == expected
        finally:
            releases_mod.default_release.cache_clear()
            releases_mod.resolve_release.cache_clear()


# -- transformers-filled fields, as the real LMDeploy 0.10.2 (transformers 4.57.1) and 0.7.3 (4.51.3)
# saw them: LlamaForCausalLM, hidden_size 4096, 32 heads, head_dim absent or null, by model_type.
HEAD_DIM_UNSET = """
model_type  head_dim  0.7.3      0.10.2
llama       absent    turbomind  turbomind
llama       null      turbomind  turbomind
qwen2       absent    turbomind  turbomind
qwen2       null      turbomind  pytorch
qwen3       absent    turbomind  turbomind
qwen3       null      turbomind  pytorch
mistral     absent    turbomind  pytorch
mistral     null      turbomind  pytorch
mixtral     absent    turbomind  pytorch
mixtral     null      turbomind  pytorch
internlm2   absent    turbomind  turbomind
internlm2   null      turbomind  pytorch
"""


def _llama_like(model_type: str | None, **fields: object) -> dict[str, object]:
    config: dict[str, object] = {"architectures": ["LlamaForCausalLM"], **fields}
    if model_type is not None:
        config["model_type"] = model_type
    return config


@pytest.mark.parametrize(
    ("model_type", "head_dim", "release", "backend"),
    [
        (row[0], row[1], release, backend)
        for row in (line.split() for line in HEAD_DIM_UNSET.strip().splitlines()[1:])
        for release, backend in zip(("0.7.3", "0.10.2"), row[2:], strict=True)
    ],
)
def test_head_dim_left_to_transformers(model_type: str, head_dim: str, release: str, backend: str) -> None:
    fields: dict[str, object] = {"hidden_size": 4096, "num_attention_heads": 32}
    if head_dim == "null":
        fields["head_dim"] = None
    assert detect(_llama_like(model_type, **fields), lmdeploy=release).backend == backend


def test_fields_left_to_transformers_defaults() -> None:
    # No hidden_size / heads at all: transformers' defaults (4096, 32) for the classes it ships.
    for model_type, at_0_10 in (("llama", "turbomind"), ("qwen3", "turbomind"), ("mistral", "pytorch")):
        assert detect(_llama_like(model_type), lmdeploy="0.7.3").backend == "turbomind"
        assert detect(_llama_like(model_type), lmdeploy="0.10.2").backend == at_0_10
    # A remote-code model type gets a bare config: LMDeploy raised AttributeError.
    with pytest.raises(MissingFieldError):
        detect(_llama_like("internlm2"), lmdeploy="0.10.2")


def test_null_heads() -> None:
    # LMDeploy divided by None (TypeError) except where transformers kept a head_dim (0.10.2: mistral
    # None -> pytorch, qwen3 128 -> turbomind).
    for model_type in ("llama", "qwen2"):
        with pytest.raises(ConfigTypeError):
            detect(_llama_like(model_type, hidden_size=4096, num_attention_heads=None), lmdeploy="0.10.2")
    assert detect(_llama_like("mistral", num_attention_heads=None), lmdeploy="0.10.2").backend == "pytorch"
    assert detect(_llama_like("qwen3", num_attention_heads=None), lmdeploy="0.10.2").backend == "turbomind"
    with pytest.raises(ConfigTypeError):
        detect(_llama_like("qwen3", num_attention_heads=None), lmdeploy="0.7.3")


@pytest.mark.parametrize(
    ("model_type", "backend"), [("qwen2", "pytorch"), ("llama", "turbomind"), (None, "turbomind")]
)
def test_llava_text_config_head_dim_null(model_type: str | None, backend: str) -> None:
    # LMDeploy 0.10.2: a text_config without model_type is built as a llama config (head_dim computed).
    text: dict[str, object] = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896}
    text.update(num_attention_heads=7, head_dim=None)
    if model_type is not None:
        text["model_type"] = model_type
    config = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": text}
    assert detect(config, lmdeploy="0.10.2").backend == backend
    assert detect(config, lmdeploy="0.7.3").backend == "turbomind"


@pytest.mark.parametrize("value", [[{"quant_method": "awq"}], "smooth_quant", [], 5])
def test_quantization_config_must_be_an_object(value: object) -> None:
    # Every release failed on these (AttributeError: ... has no attribute 'to_dict').
    config = _llama_like("llama", hidden_size=4096, num_attention_heads=32, quantization_config=value)
    with pytest.raises(ConfigTypeError) as info:
        detect(config, lmdeploy="0.18.0")
    assert info.value.field == "quantization_config"
    assert isinstance(info.value, LMDeployCrashError) and info.value.raises == "AttributeError"


def test_installed_version_of_a_development_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "lmdeploy.egg-info"
    info.mkdir()
    pkg_info = "Metadata-Version: 2.1\nName: lmdeploy\nVersion: 0.9.1\n"
    (info / "PKG-INFO").write_text(pkg_info, encoding="utf-8")
    monkeypatch.setattr("sys.path", [str(tmp_path / "missing"), str(tmp_path)])
    assert releases_mod.installed_lmdeploy() == "0.9.1"
    monkeypatch.setattr("sys.path", [str(tmp_path / "missing")])
    assert releases_mod.installed_lmdeploy() is None


# -- "quantization_config": null: what the real LMDeploy answered (transformers 4.x before 0.12.2:
# 0.6.2 4.45.2, 0.7.1 4.48.3, 0.7.3 4.51.3, 0.10.2 4.57.1; 5.24.0 for 0.12.2-0.13.0 and 0.15-0.17,
# 5.12.1 for 0.14.0, 5.17.0 for 0.18.0). "AttributeError": 'NoneType' object has no attribute 'to_dict'.
NULL_QUANT_ANSWERS = """
release  llama                    auto_map_only
0.6.2    AttributeError           AttributeError
0.7.1    AttributeError           AttributeError
0.7.3    AttributeError           AttributeError
0.10.2   AttributeError           AttributeError
0.12.2   turbomind                TypeError
0.12.3   turbomind                TypeError
0.13.0   turbomind                TypeError
0.14.0   turbomind                TypeError
0.15.0   turbomind                TypeError
0.18.0   turbomind                TypeError
"""
NULL_QUANT_CONFIGS: dict[str, dict[str, object]] = {
    "llama": _llama_like("llama", hidden_size=4096, num_attention_heads=32, quantization_config=None),
    "auto_map_only": {
        "model_type": "internlm2", "hidden_size": 4096, "num_attention_heads": 32,
        "auto_map": {"AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
        "quantization_config": None,
    },
}  # fmt: skip


@pytest.mark.parametrize(
    ("release", "name", "answer"),
    [
        (row[0], name, answer)
        for row in (line.split() for line in NULL_QUANT_ANSWERS.strip().splitlines()[1:])
        for name, answer in zip(("llama", "auto_map_only"), row[1:], strict=True)
    ],
)
def test_null_quantization_config(release: str, name: str, answer: str) -> None:
    config = NULL_QUANT_CONFIGS[name]
    if answer == "turbomind":
        assert detect(config, lmdeploy=release).backend == "turbomind"
        return
    with pytest.raises(LMDeployCrashError) as info:
        detect(config, lmdeploy=release)
    assert info.value.raises == answer
    if answer == "AttributeError":
        assert info.value.field == "quantization_config"
        assert f"LMDeploy {release} raises AttributeError" in str(info.value)


def test_null_quantization_config_release_range() -> None:
    # Releases before 0.12.2 run only with transformers 4.x (0.12.0 and 0.12.1 pin <5).
    crashing = [r for r in KNOWN_RELEASES if rule_set(r).null_quant_raises]
    assert crashing == list(KNOWN_RELEASES[: KNOWN_RELEASES.index("0.12.2")])


def test_null_quantization_config_spares_a_workspace_that_reads_its_own_arch(tmp_path: Path) -> None:
    # 0.5-0.11 take the arch from the workspace and get_task answers "llm" without loading config.json.
    folder = _workspace(tmp_path, NULL_QUANT_CONFIGS["llama"])
    found = detect(folder, lmdeploy="0.10.2")
    assert (found.arch, found.backend, found.task) == ("LlamaForCausalLM", "turbomind", "llm")
    found = detect(folder, lmdeploy="0.12.1")  # the arch now comes from config.json, which fails
    assert (found.arch, found.backend, found.task) == (None, "turbomind", "llm")


# -- TurboMind workspaces (triton_models/weights/config.yaml naming LlamaForCausalLM) whose config.json
# has no usable architectures: what the real LMDeploy answered (arch backend task, or the exception).
# 0.6.2-0.10.2 read the workspace's own arch; 0.12+ resolve it from config.json (architectures, auto_map,
# language_config.auto_map); 0.14+ also read config.json in get_task.
_AUTO_MAP = "AutoModelForCausalLM"
XC2, IL2 = "InternLMXComposer2ForCausalLM", "InternLM2ForCausalLM"
WORKSPACE_CONFIGS: dict[str, dict[str, object]] = {
    "xcomposer2": {"model_type": "internlm2", "auto_map": {_AUTO_MAP: f"m.{XC2}"}},
    "internlm2": {"model_type": "internlm2", "auto_map": {_AUTO_MAP: f"m.{IL2}"}},
    "empty": {"architectures": [], "model_type": "internlm2", "auto_map": {_AUTO_MAP: f"m.{IL2}"}},
    "language": {
        "model_type": "deepseek_vl_v2",
        "language_config": {"auto_map": {_AUTO_MAP: "m.DeepseekV2ForCausalLM"}},
    },
    "none": {"model_type": "internlm2"},
    "arch": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
}  # fmt: skip
# Archs shortened: XC2, IL2 above; DSV2 DeepseekV2ForCausalLM; Llama, Qwen2 ...ForCausalLM; None: unknown.
# TypeErr etc.: LMDeploy raised TypeError etc.
WORKSPACE_ANSWERS = """
config      0.7.3         0.10.2        0.12.2        0.12.3        0.14.0        0.15.0        0.18.0
xcomposer2  Llama/TM/llm  Llama/TM/llm  XC2/TM/llm    XC2/TM/llm    XC2/TM/vlm    TypeErr       TypeErr
internlm2   Llama/TM/llm  Llama/TM/llm  IL2/TM/llm    IL2/TM/llm    TypeErr       TypeErr       TypeErr
empty       Llama/TM/llm  Llama/TM/llm  IL2/TM/llm    IL2/TM/llm    IndexErr      IndexErr      IndexErr
language    Llama/TM/llm  Llama/TM/llm  DSV2/TM/llm   DSV2/TM/llm   TypeErr       TypeErr       TypeErr
none        Llama/TM/llm  Llama/TM/llm  None/TM/llm   None/TM/llm   RuntimeErr    RuntimeErr    RuntimeErr
arch        Llama/TM/llm  Llama/TM/llm  Qwen2/TM/llm  Qwen2/TM/llm  Qwen2/TM/llm  Qwen2/TM/llm  Qwen2/TM/llm
"""
SHORT = {"XC2": XC2, "IL2": IL2, "DSV2": "DeepseekV2ForCausalLM", "None": "None"}


def _workspace(root: Path, config: dict[str, object]) -> Path:
    folder = root / "workspace"
    weights = folder / "triton_models" / "weights"
    weights.mkdir(parents=True)
    (weights / "config.yaml").write_text("model_config:\n  model_arch: LlamaForCausalLM\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("name", "release", "answer"),
    [
        (row[0], release, answer)
        for lines in [WORKSPACE_ANSWERS.strip().splitlines()]
        for row in (line.split() for line in lines[1:])
        for release, answer in zip(lines[0].split()[1:], row[1:], strict=True)
    ],
)
def test_workspace_arch_from_config(tmp_path: Path, name: str, release: str, answer: str) -> None:
    folder = _workspace(tmp_path, WORKSPACE_CONFIGS[name])
    if "/" not in answer:
        answer += "or"  # TypeErr -> TypeError
        error = MissingArchitectureError if answer == "RuntimeError" else LMDeployCrashError
        with pytest.raises(error) as info:
            detect(folder, lmdeploy=release)
        if isinstance(info.value, LMDeployCrashError):
            assert info.value.raises == answer
        return
    arch, backend, task = answer.split("/")
    arch = SHORT.get(arch, f"{arch}ForCausalLM")
    found = detect(folder, lmdeploy=release)
    assert (str(found.arch), found.backend, found.task) == (arch, backend.replace("TM", "turbomind"), task)


def test_workspace_language_model_only_returns_before_reading_config(tmp_path: Path) -> None:
    # 0.15+ get_task returns "llm" for language_model_only before get_model_arch, even without an arch.
    folder = _workspace(tmp_path, WORKSPACE_CONFIGS["none"])
    found = detect(folder, lmdeploy="0.18.0", language_model_only=True)
    assert (found.arch, found.backend, found.task) == (None, "turbomind", "llm")


# Two quant_method values in one config: which one LMDeploy meets first depends on the order in which
# the release's transformers sets a composite config's keys (pytest_lmbackend.rules.subconfigs).
# Answers of the real LMDeploy 0.10.2 (transformers 4.57.1) and 0.18.0 (transformers 5.17.0).
_QWEN2_VL_TEXT = {"model_type": "qwen2_vl_text", "hidden_size": 1536, "num_attention_heads": 12,
                  "num_key_value_heads": 2, "num_hidden_layers": 2}
_TWO_QUANTS = {
    "smooth-quant-in-text-config": {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
        "quantization_config": {"quant_method": "awq", "bits": 4},
        "text_config": {**_QWEN2_VL_TEXT, "quantization_config": {"quant_method": "smooth_quant", "bits": 8}},
        "vision_config": {"depth": 2},
    },
    "awq-in-text-config": {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
        "quantization_config": {"quant_method": "smooth_quant", "bits": 8},
        "text_config": {**_QWEN2_VL_TEXT, "quantization_config": {"quant_method": "awq", "bits": 4}},
        "vision_config": {"depth": 2},
    },
    # a class whose sub-configs transformers 4 sets after the file's keys, 5 before them
    "sub-configs-last-then-first": {
        "architectures": ["LlamaForCausalLM"], "model_type": "clip",
        "text_config": {"quantization_config": {"quant_method": "smooth_quant", "bits": 8}},
        "quantization_config": {"quant_method": "awq", "bits": 4},
        "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 2,
    },
}


@pytest.mark.parametrize(("name", "release", "backend"), [
    ("smooth-quant-in-text-config", "0.10.2", "pytorch"),
    ("smooth-quant-in-text-config", "0.18.0", "pytorch"),
    ("awq-in-text-config", "0.10.2", "turbomind"),
    ("awq-in-text-config", "0.18.0", "turbomind"),
    ("sub-configs-last-then-first", "0.10.2", "turbomind"),
    ("sub-configs-last-then-first", "0.18.0", "pytorch"),
])
def test_the_quant_method_met_first_follows_transformers_key_order(name: str, release: str,
                                                                   backend: str) -> None:
    assert detect(_TWO_QUANTS[name], lmdeploy=release).backend == backend

