"""Properties of backend detection that must hold for every config, in every LMDeploy release."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_lmbackend import lmdeploy_api
from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.rules import KNOWN_RELEASES, Detection, detect
from pytest_lmbackend.strategies import (
    MalformedConfig,
    hf_configs,
    irrelevant_keys,
    malformed_configs,
    model_dirs,
    write_model_dir,
)


def key(release: str) -> tuple[int, ...]:
    return tuple(int(p) for p in release.split(".")[:3] if p.isdigit())


releases = st.sampled_from(KNOWN_RELEASES)
# smooth_quant goes to PyTorch from 0.7.0 (#2953); 0.15.0 added language_model_only (#4716)
SMOOTH_QUANT_RELEASES = [r for r in KNOWN_RELEASES if key(r) >= (0, 7, 0)]
LLM_ONLY_RELEASES = [r for r in KNOWN_RELEASES if key(r) >= (0, 15, 0)]
UNTABLED = ("unknown", "pytorch_only", "unknown_vl")
# a `triton_models/` folder means TurboMind in every release but 0.13.0, which lost the check
WORKSPACE_TM_RELEASES = [r for r in KNOWN_RELEASES if r != "0.13.0"]

FOLDERS = settings(suppress_health_check=[HealthCheck.too_slow])

Outcome = tuple[Any, ...]


def outcome(source: Any, release: str, **kwargs: bool) -> Outcome:
    """The answer, or the typed error's type and field; any other exception fails the test."""
    try:
        found = detect(source, lmdeploy=release, **kwargs)
    except ConfigError as exc:
        return ("error", type(exc).__name__, exc.field)
    except Exception as exc:  # totality: only typed errors may leave detect()
        pytest.fail(
            f"detect() raised an untyped {type(exc).__name__}: {exc}\nsource: {source!r}", pytrace=False
        )
    return ("ok", found.arch, found.backend, found.task, found.is_vl)


def shuffled(node: Any, rnd: random.Random) -> Any:
    if isinstance(node, dict):
        items = [(k, shuffled(v, rnd)) for k, v in node.items()]
        rnd.shuffle(items)
        return dict(items)
    if isinstance(node, list):
        return [shuffled(v, rnd) for v in node]
    return node


@given(cfg=hf_configs(valid=False) | hf_configs(), release=releases)
def test_only_typed_errors_for_config_dicts(cfg: dict[str, Any], release: str) -> None:
    try:
        found = detect(cfg, lmdeploy=release)
    except ConfigError as exc:
        assert exc.field is None or exc.field in str(exc) or exc.field.split(".")[0] in str(exc)
        return
    assert isinstance(found, Detection) and found.release == release
    assert found.backend in ("turbomind", "pytorch") and found.task in ("llm", "vlm")


@FOLDERS
@given(bad=malformed_configs(), release=releases)
def test_only_typed_errors_for_hostile_files(
    tmp_path_factory: pytest.TempPathFactory, bad: MalformedConfig, release: str
) -> None:
    folder = write_model_dir(tmp_path_factory.mktemp("hostile"), bad)
    kind = outcome(folder, release)
    if kind[0] == "error":
        return
    # answered: only files that really are JSON objects may be answered
    assert bad.data is not None and isinstance(json.loads(bad.data), dict), (bad, kind)


@given(cfg=hf_configs(), release=releases)
def test_valid_configs_never_fail_untyped(cfg: dict[str, Any], release: str) -> None:
    outcome(cfg, release)


@given(cfg=hf_configs(valid=False) | hf_configs(), release=releases)
def test_detection_is_deterministic(cfg: dict[str, Any], release: str) -> None:
    assert outcome(cfg, release) == outcome(json.loads(json.dumps(cfg)), release)


@FOLDERS
@given(data=st.data(), release=releases)
def test_a_folder_answers_like_its_config(data: st.DataObject, release: str) -> None:
    cfg = data.draw(hf_configs())
    folder = data.draw(model_dirs(st.just(cfg)))
    mine, theirs = outcome(folder, release), outcome(cfg, release)
    assert mine[0] == theirs[0] and (mine[0] == "error" or mine == theirs)


@given(cfg=hf_configs(valid=False) | hf_configs(), seed=st.integers(0, 2**32 - 1), release=releases)
def test_key_order_never_changes_the_answer(cfg: dict[str, Any], seed: int, release: str) -> None:
    assert outcome(shuffled(cfg, random.Random(seed)), release) == outcome(cfg, release)


@given(cfg=hf_configs(), extra=irrelevant_keys(), release=releases)
def test_irrelevant_keys_never_change_the_answer(
    cfg: dict[str, Any], extra: dict[str, Any], release: str
) -> None:
    padded = {**{k: v for k, v in extra.items() if k not in cfg}, **cfg}
    assert outcome(padded, release) == outcome(cfg, release)


@given(cfg=hf_configs(quantization="smooth_quant"), release=st.sampled_from(SMOOTH_QUANT_RELEASES))
def test_smooth_quant_always_means_pytorch(cfg: dict[str, Any], release: str) -> None:
    found = outcome(cfg, release)
    assert found[0] == "error" or found[2] == "pytorch", found


@given(cfg=hf_configs(family=UNTABLED))
def test_an_arch_no_table_names_is_pytorch_in_every_release(cfg: dict[str, Any]) -> None:
    for release in KNOWN_RELEASES:
        found = outcome(cfg, release)
        assert found[0] == "error" or found[2] == "pytorch", (release, found)


@FOLDERS
@given(folder=model_dirs(workspace=True), release=st.sampled_from(WORKSPACE_TM_RELEASES))
def test_a_turbomind_workspace_is_turbomind(folder: Path, release: str) -> None:
    found = outcome(folder, release)
    assert found[0] == "error" or found[2] == "turbomind", found


@given(cfg=hf_configs(), release=st.sampled_from(LLM_ONLY_RELEASES))
def test_language_model_only_forces_llm(cfg: dict[str, Any], release: str) -> None:
    found = outcome(cfg, release, language_model_only=True)
    plain = outcome(cfg, release)
    assert found[0] == "error" or found[3] == "llm", found
    if plain[0] == "ok" and found[0] == "ok":
        assert found[1:3] == plain[1:3], "language_model_only changed the arch or backend"


@FOLDERS
@given(folder=model_dirs(), release=releases, backend=st.sampled_from(["turbomind", "pytorch"]))
def test_check_vl_llm_and_get_task_agree(folder: Path, release: str, backend: str) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    try:
        is_vl = lmdeploy_api.check_vl_llm(backend, cfg, lmdeploy=release)
    except ConfigError:
        with pytest.raises(ConfigError):
            lmdeploy_api.get_task(backend, folder, lmdeploy=release)
        return
    assert lmdeploy_api.get_task(backend, folder, lmdeploy=release) == ("vlm" if is_vl else "llm")


@given(cfg=hf_configs(), release=releases)
def test_is_vl_matches_the_task(cfg: dict[str, Any], release: str) -> None:
    found = outcome(cfg, release)
    if found[0] == "ok":
        assert found[4] == (found[3] == "vlm")
