"""Tests for pytest_lmbackend.strategies: shapes, filters, shrinking, folders, hostile files, profiles."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from pytest_lmbackend.rules import KNOWN_RELEASES, rule_set
from pytest_lmbackend.strategies import (
    FAMILIES,
    FAMILY_TABLE,
    KNOWN_ARCHS,
    MALFORMED_KINDS,
    QUANTIZATIONS,
    hf_configs,
    malformed_configs,
    model_dirs,
    write_model_dir,
)

NESTED = ("llm_config", "text_config", "language_config")
SEARCH = settings(
    max_examples=3000,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def quant_methods(node: Any) -> list[Any]:
    """Every quant_method value anywhere in a config."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "quant_method":
                found.append(value)
            found.extend(quant_methods(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(quant_methods(item))
    return found


def arch_of(cfg: dict[str, Any]) -> str:
    """The arch the way LMDeploy finds it: architectures[0], else the auto_map class name."""
    if cfg.get("architectures"):
        return str(cfg["architectures"][0])
    if "auto_map" in cfg:
        return str(cfg["auto_map"]["AutoModelForCausalLM"]).rsplit(".", 1)[-1]
    return str(cfg["language_config"]["auto_map"]["AutoModelForCausalLM"]).rsplit(".", 1)[-1]


def has_vision(cfg: dict[str, Any]) -> bool:
    return any(k in cfg for k in ("vision_config", "visual", "mm_vision_tower"))


def test_generation_imports_no_torch_transformers_or_lmdeploy() -> None:
    code = (
        "import sys\n"
        "from pytest_lmbackend.strategies import hf_configs, malformed_configs, model_dirs\n"
        "for _ in range(20):\n"
        "    hf_configs().example(); hf_configs(valid=False).example(); malformed_configs().example()\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'lmdeploy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"generation imported {proc.stdout.strip()}"


@settings(max_examples=300, database=None)
@given(hf_configs())
def test_valid_configs_are_json_objects_with_a_findable_arch(cfg: dict[str, Any]) -> None:
    assert json.loads(json.dumps(cfg)) == cfg
    arch = arch_of(cfg)
    assert isinstance(arch, str) and arch
    for key in NESTED:
        if key in cfg:
            assert isinstance(cfg[key], dict)
            assert "hidden_size" in cfg[key] and "num_attention_heads" in cfg[key]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_filter_draws_only_that_family(family: str) -> None:
    fam = FAMILIES[family]

    @settings(max_examples=25, database=None)
    @given(hf_configs(family=family))
    def check(cfg: dict[str, Any]) -> None:
        arch = arch_of(cfg)
        if fam.archs:
            assert arch in fam.archs
        else:
            assert arch not in KNOWN_ARCHS
        if fam.shape in NESTED:
            assert fam.shape in cfg
        if fam.vision is True:
            assert (
                has_vision(cfg)
                or fam.shape == "llm_config"
                or arch
                in (
                    "MolmoForCausalLM",
                    "InternLMXComposer2ForCausalLM",
                    "Phi3VForCausalLM",
                    "CogVLMForCausalLM",
                )
            )
        if fam.vision is False:
            assert not has_vision(cfg)

    check()


@pytest.mark.parametrize("vl", [True, False])
def test_vl_filter(vl: bool) -> None:
    allowed = {a for f in FAMILY_TABLE if f.vision is None or f.vision == vl for a in f.archs}

    @settings(max_examples=60, database=None)
    @given(hf_configs(vl=vl))
    def check(cfg: dict[str, Any]) -> None:
        arch = arch_of(cfg)
        assert arch in allowed or arch not in KNOWN_ARCHS
        if not vl:
            assert not has_vision(cfg)

    check()


@pytest.mark.parametrize("kind", QUANTIZATIONS)
def test_quantization_filter(kind: str) -> None:
    @settings(max_examples=25, database=None)
    @given(hf_configs(quantization=kind))
    def check(cfg: dict[str, Any]) -> None:
        methods = quant_methods(cfg)
        if kind == "none":
            assert methods == [] and "quantization_bit" not in cfg
        elif kind == "quantization_bit":
            assert cfg["quantization_bit"] in (4, 8) and methods == []
        else:
            assert methods == [kind]

    check()


def test_gptq_draws_both_sym_settings() -> None:
    for sym in (True, False):
        found = find(
            hf_configs(quantization="gptq"),
            lambda c, s=sym: any(
                isinstance(v, dict) and v.get("sym") is s
                for v in [
                    c.get("quantization_config"),
                    *(c.get(k, {}).get("quantization_config") for k in NESTED if k in c),
                ]
            ),
            settings=SEARCH,
        )
        assert "gptq" in quant_methods(found)


@pytest.mark.parametrize("release", ["0.7.3", "0.14.0", "0.18.0"])
def test_release_filter_keeps_tabled_archs_of_that_release(release: str) -> None:
    rules = rule_set(release)

    @settings(max_examples=80, database=None)
    @given(hf_configs(lmdeploy=release))
    def check(cfg: dict[str, Any]) -> None:
        arch = arch_of(cfg)
        assert (
            arch not in KNOWN_ARCHS
            or arch in rules.tm_archs | rules.vl_archs
            or any(
                arch in f.archs and any(a in rules.tm_archs | rules.vl_archs for a in f.archs)
                for f in FAMILY_TABLE
            )
        )

    check()


def test_every_arch_of_every_release_table_is_generated() -> None:
    tabled = set().union(*(rule_set(r).tm_archs | rule_set(r).vl_archs for r in KNOWN_RELEASES))
    assert tabled - KNOWN_ARCHS == set()


def test_bad_filter_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        hf_configs(family="nope")
    with pytest.raises(ValueError, match="unknown kind"):
        hf_configs(quantization="int3")
    with pytest.raises(ValueError, match="unknown kind"):
        malformed_configs(kinds=("nope",))


@pytest.mark.parametrize(
    "feature",
    [
        pytest.param(lambda c: "head_dim" in c, id="explicit-head_dim"),
        pytest.param(lambda c: "head_dim" not in c and c.get("hidden_size"), id="derived-head_dim"),
        pytest.param(lambda c: "num_experts" in c, id="moe"),
        pytest.param(
            lambda c: "architectures" not in c and "auto_map" in c, id="auto_map-without-architectures"
        ),
        pytest.param(lambda c: "architectures" in c and "auto_map" in c, id="auto_map-with-architectures"),
        pytest.param(
            lambda c: "architectures" not in c and "language_config" in c, id="language_config-auto_map"
        ),
        pytest.param(lambda c: "visual" in c, id="qwen-visual"),
        pytest.param(
            lambda c: "fp8" in quant_methods(c) and "weight_block_size" in c.get("quantization_config", {}),
            id="fp8-block",
        ),
        pytest.param(lambda c: any("quantization_config" in c.get(k, {}) for k in NESTED), id="nested-quant"),
        pytest.param(lambda c: "custom_note" in c, id="irrelevant-keys"),
    ],
)
def test_shapes_of_real_configs_are_reachable(feature: Any) -> None:
    assert feature(find(hf_configs(), feature, settings=SEARCH))


def test_shrinking_yields_a_minimal_config() -> None:
    minimal = find(hf_configs(), lambda c: True, settings=SEARCH)
    assert minimal["architectures"] == ["LlamaForCausalLM"]
    assert set(minimal) == {
        "architectures",
        "model_type",
        "hidden_size",
        "num_attention_heads",
        "num_hidden_layers",
        "intermediate_size",
        "vocab_size",
    }
    # a failure that needs one feature shrinks to a config with that feature and nothing else extra
    smooth = find(hf_configs(), lambda c: "smooth_quant" in quant_methods(c), settings=SEARCH)
    assert smooth["architectures"] == ["LlamaForCausalLM"]
    assert smooth["quantization_config"]["quant_method"] == "smooth_quant"
    assert "custom_note" not in smooth and "auto_map" not in smooth


@pytest.mark.parametrize(
    "feature",
    [
        pytest.param(lambda c: "architectures" not in c and "auto_map" not in c, id="no-architectures"),
        pytest.param(lambda c: c.get("architectures") == [], id="empty"),
        pytest.param(lambda c: isinstance(c.get("architectures"), str), id="string"),
        pytest.param(
            lambda c: (
                isinstance(c.get("architectures"), list)
                and c["architectures"]
                and not isinstance(c["architectures"][0], str)
            ),
            id="non-string-entry",
        ),
        pytest.param(lambda c: "architectures" in c and c["architectures"] is None, id="null"),
        pytest.param(lambda c: isinstance(c.get("hidden_size", 0), str), id="string-number"),
        pytest.param(
            lambda c: isinstance(c.get("quantization_config", {}), (str, list)), id="quant-not-object"
        ),
        pytest.param(lambda c: c.get("auto_map") == {} and "architectures" not in c, id="auto_map-empty"),
    ],
)
def test_invalid_configs_reach_each_breakage(feature: Any) -> None:
    found = find(hf_configs(valid=False), feature, settings=SEARCH)
    assert feature(found)
    assert json.loads(json.dumps(found)) == found


def test_model_dirs_are_fresh_per_example_and_removed_afterwards() -> None:
    seen: list[tuple[Path, dict[str, Any]]] = []

    @settings(max_examples=30, database=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        cfg = data.draw(hf_configs())
        folder = data.draw(model_dirs(st.just(cfg)))
        # nothing from an earlier example is left in this folder
        assert sorted(os.listdir(folder)) == ["config.json"]
        assert json.loads((folder / "config.json").read_text()) == cfg
        seen.append((folder, cfg))

    check()
    folders = [f for f, _ in seen]
    assert len(set(folders)) == len(folders) == 30
    assert not [f for f in folders if f.exists()], "folders outlived their example"


def test_model_dirs_with_workspace() -> None:
    @settings(max_examples=10, database=None)
    @given(model_dirs(workspace=True))
    def check(folder: Path) -> None:
        weights = folder / "triton_models" / "weights" / "config.yaml"
        cfg = json.loads((folder / "config.json").read_text())
        arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        assert weights.read_text() == f"model_config:\n  model_arch: {arch}\n"

    check()


def test_malformed_kinds_are_all_drawn_and_written(tmp_path: Path) -> None:
    for i, kind in enumerate(MALFORMED_KINDS):
        bad = find(malformed_configs(kinds=(kind,)), lambda m: True, settings=SEARCH)
        folder = tmp_path / str(i)
        folder.mkdir()
        write_model_dir(folder, bad)
        target = folder / "config.json"
        if bad.layout == "missing":
            assert not os.path.lexists(target)
        elif bad.layout == "directory":
            assert target.is_dir()
        elif bad.layout == "symlink_loop":
            with pytest.raises(OSError) as info:
                target.read_bytes()
            assert info.value.errno == errno.ELOOP
        elif bad.layout == "dangling_symlink":
            assert target.is_symlink() and not target.exists()
        else:
            assert target.read_bytes() == bad.data


def test_malformed_json_payloads_really_are_hostile() -> None:
    def parses_to_object(data: bytes) -> bool:
        try:
            return isinstance(json.loads(data), dict)
        except (ValueError, RecursionError):
            return False

    @settings(max_examples=60, database=None)
    @given(malformed_configs())
    def check(bad: Any) -> None:
        if bad.layout != "file" or bad.data is None:
            return
        obj_kinds = {
            "empty_object",
            "empty_architectures",
            "string_architectures",
            "null_architectures",
            "number_architecture",
            "wrong_type_sizes",
            "zero_heads",
            "section_not_object",
            "auto_map_not_object",
            "nan_and_infinity",
            "duplicate_keys",
            "utf8_bom",
            "utf16",
            "lone_surrogate",
            "wide_object",
            "huge_string",
        }
        assert parses_to_object(bad.data) == (bad.kind in obj_kinds), bad.kind

    check()


def test_profiles_are_registered() -> None:
    from pytest_lmbackend.strategies.profiles import DEEP, FAST

    fast, deep = settings.get_profile(FAST), settings.get_profile(DEEP)
    assert fast.derandomize and fast.database is None and fast.max_examples <= 100
    assert deep.max_examples >= 20 * fast.max_examples and not deep.derandomize


def test_the_documented_example_holds(pytester: pytest.Pytester) -> None:
    """docs/FUZZING.md's first example, as written there, passes under the default profile."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "FUZZING.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_doc=code)
    pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_readme_fuzzing_example_holds(pytester: pytest.Pytester) -> None:
    """README's fuzzing section shows answered_by= first, and its example passes as written."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## Fuzzing", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "hf_configs(answered_by=" in code
    pytester.makepyfile(test_readme=code)
    pytester.runpytest("-p", "no:xdist", "-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize("valid", [True, False])
def test_answered_by_draws_only_what_the_release_answers(valid: bool) -> None:
    """For every known release, valid and broken configs alike: no typed error of any kind."""
    from pytest_lmbackend.rules import KNOWN_RELEASES, detect

    @settings(max_examples=3 * len(KNOWN_RELEASES), database=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(st.data(), st.sampled_from(KNOWN_RELEASES))
    def check(data: st.DataObject, release: str) -> None:
        cfg = data.draw(hf_configs(valid=valid, answered_by=release))
        detect(cfg, lmdeploy=release)  # raises the typed error of a config that release fails on

    check()


@pytest.mark.parametrize("release", ["0.4.0", "0.6.5", "0.10.2"])
def test_answered_by_leaves_out_every_failure_a_release_has(release: str) -> None:
    """The releases a missing arch or field makes fail (MissingArchitectureError, MissingFieldError)."""
    from pytest_lmbackend.rules import detect

    @settings(max_examples=300, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(hf_configs(answered_by=release))
    def check(cfg: dict[str, Any]) -> None:
        detect(cfg, lmdeploy=release)

    check()


@pytest.mark.parametrize(("call", "message"), [
    (lambda: hf_configs(vl="yes"), "hf_configs(vl=...): True, False or None, not 'yes'"),
    (lambda: hf_configs(valid="no"), "hf_configs(valid=...): True or False, not 'no'"),
    (lambda: hf_configs(family=3), "hf_configs(family=...): a name or a list of names, not 3"),
    (lambda: model_dirs({"architectures": ["X"]}), "model_dirs(configs=...): a Hypothesis strategy"),
    (lambda: model_dirs(hf_configs), "model_dirs(configs=...): a Hypothesis strategy"),
    (lambda: model_dirs(workspace="x"), "model_dirs(workspace=...): True, False or None, not 'x'"),
    (lambda: malformed_configs(kinds=()), "malformed_configs(kinds=()): name at least one"),
    (lambda: malformed_configs(kinds=5), "malformed_configs(kinds=...): a name or a list of names, not 5"),
    (lambda: malformed_configs(kinds=b"missing"), "malformed_configs(kinds=...): a name or a list of names"),
    (lambda: malformed_configs(kinds={"missing": 1}), "malformed_configs(kinds=...): a name or a list"),
    (lambda: malformed_configs(kinds=[5]), "malformed_configs(kinds=...): a name or a list of names"),
])
def test_bad_strategy_arguments_are_said_at_once(call: Any, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    assert message in str(info.value)


def test_one_malformed_kind_may_be_named_alone() -> None:
    drawn = find(malformed_configs(kinds="missing"), lambda m: True, settings=SEARCH)
    assert drawn.layout == "missing"


def test_type_swapped_changes_one_rule_field_to_another_type() -> None:
    from pytest_lmbackend.strategies import rule_paths, swapped_value, type_swapped

    assert swapped_value(128, "str") == "128"
    assert swapped_value(["LlamaForCausalLM"], "str") == "LlamaForCausalLM"
    assert swapped_value(128, "float") == 128.0 and swapped_value(128, "frac") == 128.5
    assert swapped_value(32, "list") == [32] and swapped_value("llama", "int") == 7
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "text_config": {"head_dim": 128}}
    assert ("text_config", "head_dim") in rule_paths(base) and ("architectures", "0") in rule_paths(base)
    def swapped(cfg: dict[str, Any]) -> bool:
        text = cfg.get("text_config")
        return isinstance(text, dict) and text.get("head_dim") == "128"

    drawn = find(type_swapped(st.just(base)), swapped, settings=SEARCH)
    assert drawn["hidden_size"] == 4096 and base["text_config"]["head_dim"] == 128  # the input is untouched
    with pytest.raises(TypeError, match="type_swapped"):
        type_swapped(base)  # type: ignore[arg-type]
