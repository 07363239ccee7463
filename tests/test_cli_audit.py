"""``python -m pytest_lmbackend audit``: the rules against a real LMDeploy over folders, by rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend.__main__ import main
from pytest_lmbackend.oracle import find_python

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def fake_lmdeploy(tmp_path: Path, answers: dict[str, tuple[str, str] | str]) -> Path:
    """An interpreter speaking the bridge's protocol: (backend, task) per arch, or an error text."""
    script = tmp_path / "fake-python"
    script.write_text(f"""#!{sys.executable}
import json, sys
answers = {answers!r}
print(json.dumps({{"ready": True, "lmdeploy": "0.18.0", "transformers": "5.17.0"}}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    results = []
    for item in request["items"]:
        arch = json.load(open(item["path"] + "/config.json"))["architectures"][0]
        answer = answers[arch]
        if isinstance(answer, str):
            results.append({{"arch": None, "backend": None, "task": None, "error": answer, "errors": {{}}}})
        else:
            results.append({{"arch": arch, "backend": answer[0], "task": answer[1], "error": None,
                             "errors": {{}}}})
    print(json.dumps({{"id": request["id"], "results": results}}), flush=True)
""")
    script.chmod(0o755)
    return script


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    for name in ("qwen2-vl", "llama-head128", "qwen2-head64", "mllama"):
        shutil.copytree(FIXTURES / name, root / name)
    (root / "notes").mkdir()  # not a model folder: left out
    return root


def test_disagreements_are_tabled_by_rule(tmp_path: Path, models: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    python = fake_lmdeploy(tmp_path, {
        "Qwen2VLForConditionalGeneration": ("pytorch", "vlm"),   # rules 0.18.0: turbomind
        "LlamaForCausalLM": ("turbomind", "llm"),                # agrees
        "Qwen2ForCausalLM": "TypeError: boom",                   # rules answer turbomind
        "MllamaForConditionalGeneration": ("pytorch", "vlm"),    # rules 0.18.0: llm
    })
    assert main(["audit", "--python", str(python), str(models)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"LMDeploy 0.18.0 ({python}) against the rules of 0.18.0: 1 of 4 folders agree\n")
    assert "Qwen2VLForConditionalGeneration is in TurboMind's table since 0.16.0" in out
    assert f"{models / 'qwen2-vl'}: turbomind/vlm -> pytorch/vlm" in out
    assert f"{models / 'qwen2-head64'}: turbomind/llm -> TypeError: boom" in out
    assert "not a vision-language arch (llm)" in out  # the task's rule, not the backend's
    assert "llama-head128" not in out


def test_json_and_agreement(tmp_path: Path, models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    python = fake_lmdeploy(tmp_path, {
        "Qwen2VLForConditionalGeneration": ("turbomind", "vlm"), "LlamaForCausalLM": ("turbomind", "llm"),
        "Qwen2ForCausalLM": ("turbomind", "llm"), "MllamaForConditionalGeneration": ("pytorch", "llm"),
    })
    assert main(["audit", "--python", str(python), "--json", str(models)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(r["agree"] for r in rows)
    assert set(rows[0]) == {"path", "rules", "lmdeploy", "ours", "theirs", "agree", "unasked"}
    assert rows[0]["theirs"]["error"] is None
    one = str(models / "qwen2-vl")
    assert main(["audit", "--python", str(python), "--lmdeploy", "0.14.0", "--json", one]) == 1
    row = json.loads(capsys.readouterr().out)
    assert (row["rules"], row["ours"]["backend"], row["theirs"]["backend"]) == (
        "0.14.0", "pytorch", "turbomind")


@pytest.mark.parametrize(("args", "message"), [
    (["--python", "nope/python", "."], "audit: error: --python: 'nope/python' is not an executable file"),
    (["--python", sys.executable, "--lmdeploy", "0.1", str(FIXTURES / "qwen2-vl")],
     "older than the oldest known release"),
    (["--python", sys.executable, "."], ".: no config.json here or in its sub-folders"),
    (["--python", sys.executable, "/no/such/dir"], "/no/such/dir: No such file or directory"),
])
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "--lm-verify-rules" not in err  # the CLI's own spelling, not the pytest option's


def test_no_interpreter_given_and_none_here_says_how_to_name_one(
        models: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("pytest_lmbackend.rules.releases.installed_lmdeploy", lambda: None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert main(["audit", str(models)]) == 2
    err = capsys.readouterr().err
    assert "audit: lmdeploy is not installed in this interpreter" in err
    assert "--python /path/to/python" in err and "--lm-verify-rules" not in err


def test_an_interpreter_without_lmdeploy(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--python", sys.executable, str(models)]) == 3
    assert "could not ask the LMDeploy of" in capsys.readouterr().err


def test_runs_as_a_module_against_the_real_lmdeploy(models: Path) -> None:
    python = find_python("0.18.0")
    if python is None:
        pytest.skip("no LMDeploy 0.18.0 environment: python -m pytest_lmbackend.oracle setup 0.18.0")
    done = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "audit", "--python", str(python),
                           "--lmdeploy", "0.14.0", str(models)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert "against the rules of 0.14.0: 2 of 4 folders agree" in done.stdout
    assert "Qwen2VLForConditionalGeneration left TurboMind's table in 0.14.0" in done.stdout
    assert "MllamaForConditionalGeneration is a vision-language arch (vlm)" in done.stdout  # not VL from 0.15
    done = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "audit", "--python", str(python),
                           str(models)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "4 of 4 folders agree" in done.stdout, done.stdout + done.stderr
