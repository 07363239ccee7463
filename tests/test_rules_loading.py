"""How each release's transformers loads a config (rules/loading.py), and the crashes that follow.

The answers in ``RECORDED`` are the real LMDeploy's (0.7.3 with transformers 4.51.3, 0.10.2 with 4.57.1,
0.14.0 with 5.12.1, 0.18.0 with 5.17.0), asked through ``pytest_lmbackend.oracle`` with each config
alone in a folder. ``test_transformers_default_configs`` asks them again, for every model type's
default config, where the environments are built.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from pytest_lmbackend.config import ConfigError, ConfigTypeError
from pytest_lmbackend.oracle import Oracle, find_python
from pytest_lmbackend.rules import Detection, LMDeployCrashError, detect, rule_set
from pytest_lmbackend.rules.model_types import VERSIONS, facts
from pytest_lmbackend.strategies.profiles import DEEP

RELEASES = ("0.7.3", "0.10.2", "0.14.0", "0.18.0")
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
         "num_attention_heads": 32}
QWEN2 = {**LLAMA, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
LLAMA3_ROPE = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}

CASES: dict[str, dict[str, Any]] = {
    # Llama 4 with its text fields at the top level and no text_config: transformers 5's Llama4Config
    # has no rope_parameters, and standardises the llama3 rope_scaling before max_position_embeddings
    "llama4-text-fields-at-top": {
        "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "hidden_size": 5120,
        "num_attention_heads": 40, "rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0,
        "vision_config": {"model_type": "llama4_vision_model"},
    },
    # NVFP4 exports: an empty model_type inside vision_config; a bare config takes that sub-config
    # for the whole config, and the architecture is gone (transformers 4 does not know qwen3_5_moe)
    "nvfp4-empty-vision-model-type": {
        "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
        "text_config": {"model_type": "qwen3_5_moe_text", "hidden_size": 2048, "num_attention_heads": 16},
        "vision_config": {"model_type": "", "depth": 2},
        "quantization_config": {"quant_method": "modelopt", "quant_algo": "NVFP4"},
    },
    "rope-yarn-without-factor": {**LLAMA, "rope_scaling": {"rope_type": "yarn"}},
    "rope-parameters-linear-without-factor": {
        **QWEN2, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "rope_parameters": {"rope_type": "linear", "rope_theta": 1e6},
    },
    "rope-scaling-a-string": {**LLAMA, "rope_scaling": "linear"},
    "head-dim-a-string": {**QWEN2, "head_dim": "128"},
    "head-dim-a-float": {**QWEN2, "head_dim": 128.0},
    "torch-dtype-an-int": {**LLAMA, "torch_dtype": 16},
    "heads-null": {**LLAMA, "num_attention_heads": None},
    "architectures-a-string": {**LLAMA, "architectures": "LlamaForCausalLM"},
    "architectures-holding-null": {**LLAMA, "architectures": [None]},
    "auto-map-entry-a-dict": {**LLAMA, "auto_map": {"AutoModelForCausalLM": {}}},
    "text-config-quant-a-string": {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "text_config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                        "num_attention_heads": 32, "quantization_config": "awq"},
    },
    "model-type-a-list": {**LLAMA, "model_type": ["llama"]},
    "torch-dtype-no-dtype-name": {**LLAMA, "torch_dtype": "bfloat16x"},
    "dtype-a-list": {**LLAMA, "dtype": ["bfloat16"]},
    "text-config-hidden-size-a-string": {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "text_config": {"model_type": "llama", "hidden_size": "4096", "num_attention_heads": 32},
    },
    "vision-config-an-empty-list": {
        "architectures": ["InternVLForConditionalGeneration"], "model_type": "internvl",
        "text_config": {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32},
        "vision_config": [],
    },
    "text-config-empty-model-type": {
        "architectures": ["KimiK25ForConditionalGeneration"], "model_type": "kimi_k25",
        "text_config": {"model_type": "", "hidden_size": 4096, "num_attention_heads": 32},
        "vision_config": {"hidden_size": 1024},
    },
    "text-config-null": {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
                         "text_config": None, "vision_config": {"hidden_size": 1024}},
    "text-config-dtype-no-dtype-name": {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "text_config": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
                        "num_attention_heads": 32, "torch_dtype": "bfloat16x"},
    },
    "unknown-model-type": {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
                           "text_config": {"model_type": "gemma4_text"}},
}
# (backend/task) where that release answers, else the exception it raises (Strict: transformers 5's
# StrictDataclassFieldValidationError)
RECORDED = """
case                                   0.7.3            0.10.2           0.14.0           0.18.0
llama4-text-fields-at-top              pytorch/vlm      pytorch/vlm      AttributeError   AttributeError
nvfp4-empty-vision-model-type          RuntimeError     RuntimeError     turbomind/vlm    turbomind/vlm
rope-yarn-without-factor               turbomind/llm    turbomind/llm    KeyError         KeyError
rope-parameters-linear-without-factor  turbomind/llm    turbomind/llm    KeyError         KeyError
rope-scaling-a-string                  turbomind/llm    turbomind/llm    AttributeError   AttributeError
head-dim-a-string                      turbomind/llm    pytorch/llm      turbomind/llm    turbomind/llm
head-dim-a-float                       turbomind/llm    turbomind/llm    turbomind/llm    turbomind/llm
torch-dtype-an-int                     IndexError       turbomind/llm    turbomind/llm    turbomind/llm
heads-null                             TypeError        TypeError        turbomind/llm    turbomind/llm
architectures-a-string                 pytorch/llm      pytorch/llm      Strict           Strict
architectures-holding-null             pytorch/llm      pytorch/llm      Strict           Strict
auto-map-entry-a-dict                  turbomind/llm    turbomind/llm    turbomind/llm    turbomind/llm
text-config-quant-a-string             AttributeError   AttributeError   pytorch/vlm      pytorch/vlm
model-type-a-list                      turbomind/llm    turbomind/llm    turbomind/llm    TypeError
unknown-model-type                     pytorch/llm      pytorch/llm      pytorch/llm      pytorch/llm
torch-dtype-no-dtype-name              AttributeError   AttributeError   AttributeError   AttributeError
dtype-a-list                           turbomind/llm    IndexError       IndexError       IndexError
text-config-null                       TypeError        TypeError        pytorch/vlm      pytorch/vlm
text-config-hidden-size-a-string       AttributeError   AttributeError   pytorch/vlm      pytorch/vlm
vision-config-an-empty-list            pytorch/llm      TypeError        turbomind/vlm    turbomind/vlm
text-config-empty-model-type           RuntimeError     RuntimeError     RuntimeError     RuntimeError
text-config-dtype-no-dtype-name        AttributeError   AttributeError   pytorch/vlm      pytorch/vlm
"""


def _recorded() -> list[tuple[str, str, str]]:
    header, *rows = (line.split() for line in RECORDED.strip().splitlines())
    full = {"Strict": "StrictDataclassFieldValidationError"}
    return [(row[0], release, full.get(cell, cell))
            for row in rows for release, cell in zip(header[1:], row[1:], strict=True)]


def _outcome(found: Detection | ConfigError) -> str:
    if isinstance(found, LMDeployCrashError):
        return found.raises
    if isinstance(found, ConfigError):
        return {"MissingArchitectureError": "RuntimeError"}.get(type(found).__name__, type(found).__name__)
    return f"{found.backend}/{found.task}"


def _detect_folder(cfg: dict[str, Any], release: str, root: Path) -> Detection | ConfigError:
    folder = root / "m"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    try:
        return detect(folder, lmdeploy=release)
    except ConfigError as exc:
        return exc


@pytest.mark.parametrize(("case", "release", "expected"), _recorded())
def test_recorded_answers_and_crashes(case: str, release: str, expected: str, tmp_path: Path) -> None:
    assert _outcome(_detect_folder(CASES[case], release, tmp_path)) == expected


def test_an_answer_to_a_wrong_type_carries_a_note(tmp_path: Path) -> None:
    found = _detect_folder(CASES["head-dim-a-string"], "0.10.2", tmp_path)
    assert isinstance(found, Detection) and found.backend == "pytorch"
    assert any("'head_dim' is a str ('128'); LMDeploy 0.10.2 compares it with 64 or 128" in n
               for n in found.notes), found.notes
    crash = _detect_folder(CASES["heads-null"], "0.10.2", tmp_path)
    assert isinstance(crash, LMDeployCrashError) and isinstance(crash, ConfigTypeError)
    assert crash.field == "num_attention_heads" and "4096 // None" in str(crash)


def test_a_crash_names_the_field_and_the_exception(tmp_path: Path) -> None:
    crash = _detect_folder(CASES["nvfp4-empty-vision-model-type"], "0.10.2", tmp_path)
    assert isinstance(crash, ConfigError) and crash.field == "architectures"
    crash = _detect_folder(CASES["rope-yarn-without-factor"], "0.18.0", tmp_path)
    assert isinstance(crash, LMDeployCrashError)
    assert (crash.field, crash.raises) == ("rope_scaling", "KeyError") and "factor" in str(crash)


def test_every_release_names_transformers_facts_that_exist() -> None:
    from pytest_lmbackend.rules import KNOWN_RELEASES

    for release in KNOWN_RELEASES:
        assert rule_set(release).transformers in VERSIONS, release
        assert facts(rule_set(release).transformers).known


def test_the_generated_tables_are_current() -> None:
    """scripts/generate_rules_data.py --check (minutes: it asks every oracle environment)."""
    if os.environ.get("LMBACKEND_CHECK_GENERATED") != "1":
        pytest.skip("set LMBACKEND_CHECK_GENERATED=1 (and build the four oracle environments) to run it")
    script = Path(__file__).resolve().parents[1] / "scripts" / "generate_rules_data.py"
    done = subprocess.run([os.sys.executable, str(script), "--check"], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr


# -- every model type's default config, through each release -------------------------------------

_DEEP = settings.get_profile(DEEP).max_examples == settings.default.max_examples
SAMPLE = None if _DEEP or os.environ.get("LMBACKEND_DIFF_EXAMPLES") else 60


@pytest.fixture(scope="module")
def default_configs() -> Path:
    """transformers 5.17.0's default config of each model type, as save_pretrained writes it for the
    class it names (written by the 0.18.0 environment, once per session)."""
    python = find_python("0.18.0")
    if python is None:
        pytest.skip("no LMDeploy 0.18.0 environment: python -m pytest_lmbackend.oracle setup 0.18.0")
    root = Path(tempfile.mkdtemp(prefix="q"))
    script = Path(__file__).resolve().parents[1] / "scripts" / "transformers_facts.py"
    subprocess.run([str(python), "-I", str(script), "default-configs", str(root)], check=True,
                   capture_output=True, timeout=600)
    return root


@pytest.mark.parametrize("release", RELEASES)
def test_transformers_default_configs(release: str, default_configs: Path) -> None:
    """Every answered row agrees; at least 95% of LMDeploy's crashes are typed errors here (model types
    the release's transformers does not know load bare, and lose what get_task or the arch lookup
    reads). A sample of 60 model types by default; all of them under the deep profile."""
    if find_python(release) is None:
        pytest.skip(f"no LMDeploy {release} environment: python -m pytest_lmbackend.oracle setup {release}")
    folders = sorted(str(p.parent) for p in default_configs.glob("*/config.json"))
    if SAMPLE is not None:
        folders = random.Random(release).sample(folders, SAMPLE)
    with Oracle(release, timeout=300) as lmdeploy:
        answers = lmdeploy.detect(folders)
    wrong, crashed, predicted = [], 0, 0
    for folder, answer in zip(folders, answers, strict=True):
        try:
            ours: Detection | ConfigError = detect(folder, lmdeploy=release)
        except ConfigError as exc:
            ours = exc
        if answer.error is not None:
            crashed += 1
            predicted += isinstance(ours, ConfigError)
        elif isinstance(ours, ConfigError) or (ours.backend, ours.task) != (answer.backend, answer.task):
            theirs = f"{answer.backend}/{answer.task}"
            wrong.append(f"{Path(folder).name}: LMDeploy {theirs}, here {_outcome(ours)}")
    assert not wrong, "\n".join(wrong)
    assert predicted >= 0.95 * crashed, (predicted, crashed)
