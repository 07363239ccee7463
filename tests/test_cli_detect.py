"""``python -m pytest_lmbackend detect``: table, ``--lmdeploy all``, ``--json`` records, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend.rules import KNOWN_RELEASES

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "fixtures" / "models"
KEYS = ["path", "lmdeploy", "arch", "backend", "task", "rule", "error"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_lmbackend", "detect", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_json_records_have_exactly_the_documented_keys() -> None:
    paths = [str(MODELS / "qwen2-vl"), str(MODELS / "malformed-json"), str(MODELS / "auto-map-only")]
    result = cli("--lmdeploy", "0.18.0", "--json", *paths)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(r) for r in records] == [KEYS] * 3
    ok, malformed, crash = records
    assert ok == {
        "path": paths[0], "lmdeploy": "0.18.0", "arch": "Qwen2VLForConditionalGeneration",
        "backend": "turbomind", "task": "vlm", "rule": ok["rule"], "error": None,
    }  # fmt: skip
    assert "since 0.16.0" in ok["rule"]
    assert malformed["error"]["type"] == "ConfigJSONError"
    assert "malformed JSON" in malformed["error"]["message"]
    assert malformed["backend"] is None and malformed["task"] is None and malformed["rule"] is None
    assert crash["error"]["type"] == "LMDeployCrashError"


def test_version_between_releases_resolves_to_the_one_below() -> None:
    result = cli("--lmdeploy", "0.10.3", "--json", str(MODELS / "qwen2-vl"))
    assert json.loads(result.stdout)["lmdeploy"] == "0.10.2"


def test_a_version_past_the_newest_known_says_whose_rules_answer() -> None:
    newest = KNOWN_RELEASES[-1]
    result = cli("--lmdeploy", "99.0", "--json", str(MODELS / "qwen2-vl"))
    assert json.loads(result.stdout)["lmdeploy"] == newest
    assert f"LMDeploy 99.0 is not a known release; answering with the rules of {newest}" in result.stderr
    assert cli("--lmdeploy", newest, "--json", str(MODELS / "qwen2-vl")).stderr == ""


def test_all_gives_one_record_per_release() -> None:
    result = cli("--lmdeploy", "all", "--json", str(MODELS / "qwen2-vl"))
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["lmdeploy"] for r in records] == list(KNOWN_RELEASES)
    backends = {r["lmdeploy"]: r["backend"] for r in records}
    assert (backends["0.9.1"], backends["0.9.2"], backends["0.14.0"], backends["0.16.0"]) == (
        "pytorch", "turbomind", "pytorch", "turbomind",
    )  # fmt: skip


def test_table_for_one_release() -> None:
    result = cli("--lmdeploy", "0.14.0", str(MODELS / "llama-head80"), str(MODELS / "no-config"))
    assert result.returncode == 0
    header, first, second = result.stdout.splitlines()
    assert header.split()[:4] == ["PATH", "ARCH", "BACKEND", "TASK"] and "0.14.0" in header
    assert first.split()[1:4] == ["LlamaForCausalLM", "turbomind", "llm"]
    assert "ConfigNotFoundError" in second


def test_table_for_all_releases_has_a_row_each() -> None:
    """43 releases as columns were unreadable: one row per release, one column per path."""
    paths = [str(MODELS / "qwen2-vl"), str(MODELS / "llama-head80")]
    result = cli("--lmdeploy", "all", *paths)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"[1] {paths[0]}: Qwen2VLForConditionalGeneration",
                         f"[2] {paths[1]}: LlamaForCausalLM", ""]
    header, *rows = lines[3:]
    assert header.split() == ["LMDEPLOY", "[1]", "[2]"]
    assert [row.split()[0] for row in rows] == list(KNOWN_RELEASES)
    by_release = {row.split()[0]: tuple(row.split()[1:3]) for row in rows}
    assert by_release["0.4.0"] == ("PT", "llm")  # not yet a VL arch
    assert by_release["0.14.0"] == ("PT", "vlm")
    assert by_release["0.18.0"] == ("TM", "vlm")
    assert max(len(line) for line in lines[3:]) < 40


def test_strict_exits_3_when_a_path_got_an_error() -> None:
    good, bad = str(MODELS / "qwen2-vl"), str(MODELS / "no-config")
    assert cli("--strict", good).returncode == 0
    assert cli(bad).returncode == 0  # a typed error is an answer
    strict = cli("--strict", good, bad)
    assert strict.returncode == 3 and "ConfigNotFoundError" in strict.stdout
    assert cli("--strict", "--json", "--lmdeploy", "all", bad).returncode == 3
    assert cli("--strict", "--jsn", good).returncode == 2  # usage errors stay 2


@pytest.mark.parametrize(
    "args",
    [
        ["--lmdeploy", "0.3.0", "x"],
        ["--lmdeploy", "latest", "x"],
        [],
        ["--bogus", "x"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "usage: python -m pytest_lmbackend detect " in result.stderr  # the subcommand's usage
    assert "python -m pytest_lmbackend detect: error: " in result.stderr
    if "--lmdeploy" in args:
        assert "known releases: 0.4.0" in result.stderr
    if "--bogus" in args:
        assert "unrecognized arguments: --bogus" in result.stderr


def test_typed_errors_still_exit_0() -> None:
    paths = [str(MODELS / name) for name in ("not-utf8", "no-config", "empty-architectures")]
    result = cli("--json", *paths)
    assert result.returncode == 0
    types = [json.loads(line)["error"]["type"] for line in result.stdout.splitlines()]
    assert types == ["ConfigEncodingError", "ConfigNotFoundError", "MissingArchitectureError"]


def test_language_model_only_flag() -> None:
    result = cli("--lmdeploy", "0.18.0", "--json", "--language-model-only", str(MODELS / "qwen2-vl"))
    assert json.loads(result.stdout)["task"] == "llm"


def test_hub_id_not_cached(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest_lmbackend", "detect", "--json", "nobody/nothing"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": "", "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "HubModelNotCachedError"
    assert "not in the local Hugging Face cache" in error["message"]


def test_a_reader_that_stops_early_and_an_ascii_terminal(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM\\u00e9"]}', encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    shown = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "detect", str(folder)],
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and "LlamaForCausalLM\\xe9" in shown.stdout, shown.stderr
    many = " ".join(f"'{folder}'" for _ in range(400))
    command = f"{sys.executable} -m pytest_lmbackend detect --lmdeploy all --json {many} | head -1"
    piped = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    assert piped.stdout.count("\n") == 1 and "Traceback" not in piped.stderr, piped.stderr


def test_notes_for_a_pre_release_and_an_option_a_release_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_lmbackend.__main__ import main

    models = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    assert main(["detect", "--lmdeploy", "0.14.0a1", str(models / "llama-head128")]) == 0
    err = capsys.readouterr().err
    assert ("python -m pytest_lmbackend detect: note: LMDeploy 0.14.0a1 is not a known release; answering "
            "with the rules of 0.13.0") in err
    assert main(["detect", "--lmdeploy", "0.10.2", "--language-model-only", str(models / "qwen2-vl")]) == 0
    assert "--language-model-only has no effect for LMDeploy 0.10.2" in capsys.readouterr().err
    assert main(["detect", "--lmdeploy", "0.18.0", "--language-model-only", str(models / "qwen2-vl")]) == 0
    assert "no effect" not in capsys.readouterr().err
