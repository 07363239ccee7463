"""Differential runs: Hypothesis configs through pytest_lmbackend's rules and through real LMDeploy.

Each release named in ``LMBACKEND_DIFF_RELEASES`` (default 0.7.3, 0.10.2, 0.14.0, 0.18.0; "none"
skips) is asked through its environment (see `pytest_lmbackend.oracle`): 0.18.0's is built on first
use, the others skip with the command that builds them. Every drawn config (valid, broken, hostile,
or with one field the rules read given a value of another type) must get the same arch, backend and
task from both, or, where LMDeploy raises, an ``LMDeployCrashError`` naming the same exception (or
another typed ``ConfigError``). Config dicts are detected here from a folder holding only their
config.json, the folder LMDeploy is given too. ``LMBACKEND_DIFF_EXAMPLES`` sets the examples per test
(default 40; under the ``lmbackend-deep`` profile, the profile's).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.oracle import Answer, Oracle, OracleError, VenvError, find_python, shared_oracle
from pytest_lmbackend.rules import Detection, LMDeployCrashError, detect
from pytest_lmbackend.strategies import (
    MalformedConfig,
    hf_configs,
    malformed_configs,
    type_swapped,
    write_model_dir,
)
from pytest_lmbackend.strategies.profiles import DEEP

ORACLE_RELEASES = ("0.7.3", "0.10.2", "0.14.0", "0.18.0")
BUILT_ON_DEMAND = "0.18.0"  # the others are built by hand: python -m pytest_lmbackend.oracle setup RELEASE
_RAW = os.environ.get("LMBACKEND_DIFF_RELEASES", ",".join(ORACLE_RELEASES))
RELEASES = [] if _RAW.strip().lower() in ("", "none") else [r.strip() for r in _RAW.split(",") if r.strip()]
_DEEP = settings.get_profile(DEEP).max_examples == settings.default.max_examples
_EXAMPLES_ENV = os.environ.get("LMBACKEND_DIFF_EXAMPLES")
EXAMPLES = int(_EXAMPLES_ENV) if _EXAMPLES_ENV else settings.default.max_examples if _DEEP else 40


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
    if release != BUILT_ON_DEMAND and find_python(release) is None:
        pytest.skip(f"no LMDeploy {release} environment: python -m pytest_lmbackend.oracle setup {release}")
    try:
        return shared_oracle(release)
    except (VenvError, OracleError, OSError) as exc:
        pytest.fail(f"cannot run real LMDeploy {release}: {exc}", pytrace=False)


Ours = Detection | ConfigError


def _model_types() -> set[str]:
    from pytest_lmbackend.rules.model_types import VERSIONS, facts

    return {t for version in VERSIONS for t in facts(version).known}


def _scratch() -> Path:
    """A folder whose path names no model type: transformers 4 guesses a config class from the path of a
    config without ``model_type``, and LMDeploy's scratch folder is chosen the same way."""
    names = _model_types()
    for _ in range(100):
        root = tempfile.mkdtemp(prefix="q")
        if not any(name and name in root for name in names):
            return Path(root)
        os.rmdir(root)
    raise RuntimeError("no scratch folder free of model-type names")


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    folder = _scratch()
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def ours_for(source: Any, release: str, **kwargs: bool) -> Ours:
    try:
        return detect(source, lmdeploy=release, **kwargs)
    except ConfigError as exc:
        return exc


def ours_for_config(cfg: dict[str, Any], release: str, root: Path, **kwargs: bool) -> Ours:
    """Detection of ``cfg`` as LMDeploy gets it: a folder holding only its config.json."""
    folder = fresh(root, "plain")
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return ours_for(folder, release, **kwargs)


def disagreement(cfg: Any, release: str, ours: Ours, theirs: Answer) -> str | None:
    """Why the two answers differ, or None when they agree."""
    if theirs.error is not None:
        if not isinstance(ours, ConfigError):
            return f"LMDeploy raises {theirs.error!r}, but an answer was given: {ours}"
        if isinstance(ours, LMDeployCrashError) and ours.raises != theirs.error_type():
            return f"LMDeploy raises {theirs.error_type()}, the typed error says it raises {ours.raises}"
        return None
    if isinstance(ours, ConfigError):
        return f"LMDeploy answers, but a {type(ours).__name__} was raised: {ours}"
    real_arch = theirs.arch if isinstance(theirs.arch, str) else None  # a non-name arch shows as None here
    mine = (ours.arch, ours.backend, ours.task)
    real = (real_arch, theirs.backend, theirs.task)
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
def test_valid_configs_agree(oracle: Oracle, scratch: Path, cfg: dict[str, Any]) -> None:
    check(cfg, oracle.release, ours_for_config(cfg, oracle.release, scratch), oracle.detect_one(cfg))


@DIFF
@given(cfg=hf_configs(valid=False))
def test_broken_configs_agree(oracle: Oracle, scratch: Path, cfg: dict[str, Any]) -> None:
    check(cfg, oracle.release, ours_for_config(cfg, oracle.release, scratch), oracle.detect_one(cfg))


@DIFF
@given(cfg=type_swapped())
def test_type_swapped_configs_agree(oracle: Oracle, scratch: Path, cfg: dict[str, Any]) -> None:
    """One field a rule reads, at the top level or in a nested config, given a string, a float, a
    boolean, null, a list, ...: the answer LMDeploy gives, or its crash, typed."""
    check(cfg, oracle.release, ours_for_config(cfg, oracle.release, scratch), oracle.detect_one(cfg))


@DIFF
@given(cfg=hf_configs())
def test_language_model_only_agrees(oracle: Oracle, scratch: Path, cfg: dict[str, Any]) -> None:
    if release_key(oracle.release) < (0, 15):
        pytest.skip(f"lmdeploy {oracle.release} has no language_model_only")
    theirs = oracle.detect([cfg], language_model_only=True)[0]
    ours = ours_for_config(cfg, oracle.release, scratch, language_model_only=True)
    check(cfg, oracle.release, ours, theirs)


def fresh(root: Path, name: str) -> Path:
    import shutil

    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


@DIFF
@given(cfg=hf_configs())
def test_turbomind_workspaces_agree(oracle: Oracle, scratch: Path, cfg: dict[str, Any]) -> None:
    folder = write_model_dir(fresh(scratch, "workspace"), cfg, workspace=True)
    check(cfg, oracle.release, ours_for(folder, oracle.release), oracle.detect([cfg], workspace=True)[0])


@DIFF
@given(bad=malformed_configs())
def test_hostile_files_agree(oracle: Oracle, scratch: Path, bad: MalformedConfig) -> None:
    folder = write_model_dir(fresh(scratch, "hostile"), bad)
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


def test_wrong_types_are_answered_as_lmdeploy_answers_them() -> None:
    """Without LMDeploy: what used to be a typed error here by choice now follows the release (the
    real answers, recorded from the oracle environments)."""
    base = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32}
    answered = Answer.from_json({"arch": "L", "backend": "pytorch", "task": "llm", "is_vl": False})
    # a string architectures: transformers 4 takes its first letter; transformers 5 rejects it
    cfg = {**base, "architectures": "LlamaForCausalLM"}
    assert disagreement(cfg, "0.7.3", ours_for(cfg, "0.7.3"), answered) is None
    ours = ours_for(cfg, "0.18.0")
    assert isinstance(ours, LMDeployCrashError) and ours.raises == "StrictDataclassFieldValidationError"
    # a float size: Python arithmetic, 4096.0 // 32 == 128.0, which is 128
    cfg = {**base, "architectures": ["LlamaForCausalLM"], "hidden_size": 4096.0}
    found = ours_for(cfg, "0.10.2")
    assert isinstance(found, Detection) and found.backend == "turbomind" and found.notes
