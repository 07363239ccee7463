"""Differential runs: Hypothesis configs through pytest_lmbackend's rules and through real LMDeploy.

Each release named in ``LMBACKEND_DIFF_RELEASES`` (default 0.18.0; "none" skips) gets an
environment with that LMDeploy (built on first use, see `pytest_lmbackend.oracle`), and every
drawn config must get the same arch, backend and task from both. Where LMDeploy itself raises,
the answer here must be a typed ConfigError; the documented exceptions are below
(`documented_divergence`). ``LMBACKEND_DIFF_EXAMPLES`` sets the examples per test (default 40).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pytest_lmbackend.config import ConfigError, ConfigTypeError
from pytest_lmbackend.oracle import Answer, Oracle, OracleError, VenvError, shared_oracle
from pytest_lmbackend.rules import Detection, LMDeployCrashError, detect
from pytest_lmbackend.strategies import (
    MalformedConfig,
    hf_configs,
    malformed_configs,
    write_model_dir,
)

_RAW = os.environ.get("LMBACKEND_DIFF_RELEASES", "0.18.0")
RELEASES = [] if _RAW.strip().lower() in ("", "none") else [r.strip() for r in _RAW.split(",") if r.strip()]
EXAMPLES = int(os.environ.get("LMBACKEND_DIFF_EXAMPLES", "40"))


def release_key(release: str) -> tuple[int, ...]:
    return tuple(int(p) for p in release.split(".")[:2])


DIFF = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

if not RELEASES:
    pytestmark = pytest.mark.skip(reason="LMBACKEND_DIFF_RELEASES=none: differential runs switched off")


@pytest.fixture(scope="module", params=RELEASES or ["-"])
def oracle(request: pytest.FixtureRequest) -> Oracle:
    release = str(request.param)
    try:
        return shared_oracle(release)
    except (VenvError, OracleError, OSError) as exc:
        pytest.fail(f"cannot run real LMDeploy {release}: {exc}", pytrace=False)


Ours = Detection | ConfigError


def ours_for(source: Any, release: str, **kwargs: bool) -> Ours:
    try:
        return detect(source, lmdeploy=release, **kwargs)
    except ConfigError as exc:
        return exc


def has_non_finite(node: Any) -> bool:
    if isinstance(node, float):
        return not math.isfinite(node)
    if isinstance(node, dict):
        return any(has_non_finite(v) for v in node.values())
    if isinstance(node, list):
        return any(has_non_finite(v) for v in node)
    return False


def field_value(cfg: Any, field: str) -> Any:
    """The value at a dotted field name (``llm_config.hidden_size``), or None."""
    node = cfg
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def documented_divergence(cfg: Any, release: str, ours: Ours, theirs: Answer) -> bool:
    """Where this project deliberately does not mirror LMDeploy (docs/FINDINGS.md)."""
    # Releases before 0.13 force trust_remote_code: a config-only InternVLChatModel folder crashes
    # (its llm_config stays a dict); a real snapshot ships the code, and gets the answer given here.
    # The same happens to any nested config whose model_type transformers cannot build there.
    # (Whatever the snapshot then hits, e.g. an auto_map-only config's check_vl_llm TypeError,
    # is what the answer here mirrors.)
    if release_key(release) < (0, 13) and (theirs.error or "").startswith(
        "AttributeError: 'dict' object has no attribute"
    ):
        return True
    # NaN or Infinity where a rule reads a size: LMDeploy computes with it (NaN // inf is never
    # 64 or 128) and answers; a ConfigTypeError naming the field is given instead.
    if isinstance(ours, ConfigTypeError) and theirs.error is None and has_non_finite(cfg):
        return True
    # A float or a boolean where a rule reads an integer size ("hidden_size": 1.5): LMDeploy does
    # Python arithmetic with it and answers; a ConfigTypeError naming the field is given instead.
    if isinstance(ours, ConfigTypeError) and theirs.error is None and ours.field:
        value = field_value(cfg, ours.field)
        if isinstance(value, (float, bool)):
            return True
    # `architectures` that is not a list of strings: transformers 4.x makes a string into its first
    # letter ("L"), and entries of other types flow through as archs; a typed error is given instead.
    return (
        malformed_architectures(cfg)
        and isinstance(ours, ConfigTypeError)
        and ours.field == "architectures"
        and theirs.error is None
    )


def malformed_architectures(cfg: Any) -> bool:
    """`architectures` is a string, or a list holding something other than strings (null and []
    are not malformed: both mean "no architectures", and the answers must agree there)."""
    if not isinstance(cfg, dict):
        return False
    archs = cfg.get("architectures")
    if isinstance(archs, str):
        return True
    return isinstance(archs, list) and any(not isinstance(a, str) for a in archs)


def disagreement(cfg: Any, release: str, ours: Ours, theirs: Answer) -> str | None:
    """Why the two answers differ, or None when they agree."""
    if documented_divergence(cfg, release, ours, theirs):
        return None
    if theirs.error is not None:
        if not isinstance(ours, ConfigError):
            return f"LMDeploy raises {theirs.error!r}, but an answer was given: {ours}"
        if isinstance(ours, LMDeployCrashError) and ours.raises != theirs.error_type():
            return f"LMDeploy raises {theirs.error_type()}, the typed error says it raises {ours.raises}"
        return None
    if isinstance(ours, ConfigError):
        return f"LMDeploy answers, but a {type(ours).__name__} was raised: {ours}"
    mine = (ours.arch, ours.backend, ours.task)
    real = (theirs.arch, theirs.backend, theirs.task)
    if mine != real:
        return f"(arch, backend, task): ours {mine}, LMDeploy's {real}"
    if theirs.is_vl is not None and ours.is_vl != theirs.is_vl:
        return f"is_vl: ours {ours.is_vl}, LMDeploy's check_vl_llm {theirs.is_vl}"
    return None


def check(cfg: Any, release: str, ours: Ours, theirs: Answer) -> None:
    why = disagreement(cfg, release, ours, theirs)
    if why is not None:
        shown = cfg if isinstance(cfg, MalformedConfig) else json.dumps(cfg, indent=1, sort_keys=False)
        pytest.fail(
            f"pytest_lmbackend and LMDeploy {release} disagree: {why}\n"
            f"config:\n{shown}\nours:     {ours!r}\nLMDeploy: {theirs}",
            pytrace=False,
        )


@DIFF
@given(cfg=hf_configs())
def test_valid_configs_agree(oracle: Oracle, cfg: dict[str, Any]) -> None:
    check(cfg, oracle.release, ours_for(cfg, oracle.release), oracle.detect_one(cfg))


@DIFF
@given(cfg=hf_configs(valid=False))
def test_broken_configs_agree(oracle: Oracle, cfg: dict[str, Any]) -> None:
    check(cfg, oracle.release, ours_for(cfg, oracle.release), oracle.detect_one(cfg))


@DIFF
@given(cfg=hf_configs())
def test_language_model_only_agrees(oracle: Oracle, cfg: dict[str, Any]) -> None:
    if release_key(oracle.release) < (0, 15):
        pytest.skip(f"lmdeploy {oracle.release} has no language_model_only")
    theirs = oracle.detect([cfg], language_model_only=True)[0]
    check(cfg, oracle.release, ours_for(cfg, oracle.release, language_model_only=True), theirs)


@DIFF
@given(cfg=hf_configs())
def test_turbomind_workspaces_agree(oracle: Oracle, cfg: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="d") as root:
        folder = write_model_dir(Path(root), cfg, workspace=True)
        ours = ours_for(folder, oracle.release)
    check(cfg, oracle.release, ours, oracle.detect([cfg], workspace=True)[0])


@DIFF
@given(bad=malformed_configs())
def test_hostile_files_agree(oracle: Oracle, bad: MalformedConfig) -> None:
    with tempfile.TemporaryDirectory(prefix="d") as root:
        folder = write_model_dir(Path(root), bad)
        ours = ours_for(folder, oracle.release)
        # file payloads travel as bytes; broken layouts are asked about in place
        theirs = oracle.detect_one(bad.data if bad.layout == "file" and bad.data is not None else folder)
    parsed: Any = None
    if bad.data is not None:
        try:
            parsed = json.loads(bad.data)
        except (ValueError, RecursionError):
            parsed = None
    check(parsed if isinstance(parsed, dict) else bad, oracle.release, ours, theirs)


def recorded_corpus() -> tuple[Path, list[dict[str, Any]]]:
    shared = os.environ.get("LMBACKEND_SHARED_DIR")
    corpus = (
        (Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared")
        / "corpus"
        / "real"
    )
    recorded = corpus / "expected-lmdeploy.jsonl"
    if not recorded.is_file():
        pytest.skip(f"no real-config corpus with recorded LMDeploy answers at {corpus}")
    with open(recorded, encoding="utf-8") as fh:
        return corpus, [json.loads(line) for line in fh if line.strip()]


def test_the_bridge_reproduces_recorded_answers_for_real_configs(oracle: Oracle) -> None:
    """The bridge itself: LMDeploy's answers for the real-config corpus, as recorded for this release."""
    corpus, rows = recorded_corpus()
    rows = [
        r
        for r in rows
        if r["lmdeploy"] == oracle.release and r["transformers"] == oracle.info["transformers"]
    ]
    if not rows:
        found = f"lmdeploy {oracle.release} with transformers {oracle.info['transformers']}"
        pytest.skip(f"no recorded answers for {found}")
    configs = [json.loads((corpus / r["dir"] / "config.json").read_text(encoding="utf-8")) for r in rows]
    wrong = []
    for row, answer in zip(rows, oracle.detect(configs), strict=True):
        got = (answer.arch, answer.backend, answer.task, answer.is_vl, answer.error is None)
        want = (row["arch"], row["backend"], row["task"], row["is_vl"], row["error"] is None)
        if got != want:
            wrong.append(f"{row['dir']}: bridge {got}, recorded {want}")
    assert not wrong, "\n".join(wrong)


def test_malformed_architectures_are_the_documented_divergence() -> None:
    """Without LMDeploy: a string or non-string entries are accepted as a typed-error divergence;
    null, [] and a real answer from LMDeploy are not."""
    answered = Answer.from_json({"arch": "L", "backend": "pytorch", "task": "llm", "is_vl": False})
    crashed = Answer.from_json({"error": "TypeError: boom"})
    base = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32}
    for archs in ("LlamaForCausalLM", [None], [123], ["LlamaForCausalLM", 7]):
        cfg = {**base, "architectures": archs}
        ours = ours_for(cfg, "0.7.3")
        assert isinstance(ours, ConfigTypeError) and ours.field == "architectures"
        assert documented_divergence(cfg, "0.7.3", ours, answered)
        assert disagreement(cfg, "0.7.3", ours, answered) is None
        assert disagreement(cfg, "0.18.0", ours, crashed) is None  # a typed error where LMDeploy raises
    for archs in (None, []):
        cfg = {**base, "architectures": archs}
        ours = ours_for(cfg, "0.7.3")
        assert not documented_divergence(cfg, "0.7.3", ours, answered)
        assert disagreement(cfg, "0.7.3", ours, answered) is not None


def test_non_integer_sizes_are_the_documented_divergence() -> None:
    """Without LMDeploy: a float or boolean size that a rule reads is a typed error here, where
    LMDeploy computes with it and answers (docs/DETECTION.md, "Not mirrored")."""
    answered = Answer.from_json({"arch": "LlamaForCausalLM", "backend": "pytorch", "task": "llm"})
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_attention_heads": 32}
    for size in (1.5, 4096.0, True):
        cfg = {**base, "hidden_size": size}
        ours = ours_for(cfg, "0.7.3")
        assert isinstance(ours, ConfigTypeError) and ours.field == "hidden_size"
        assert disagreement(cfg, "0.7.3", ours, answered) is None
    cfg = {**base, "hidden_size": "4096"}  # a string: LMDeploy raises TypeError, no divergence to excuse
    ours = ours_for(cfg, "0.7.3")
    assert isinstance(ours, ConfigTypeError)
    assert not documented_divergence(cfg, "0.7.3", ours, answered)
