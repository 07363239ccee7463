"""--lm-verify-rules and the newer-release note: the rules checked against a real LMDeploy per bound model."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

from pytest_lmbackend.oracle import Answer, find_python
from pytest_lmbackend.rules import NewerReleaseWarning, detect
from pytest_lmbackend.verify import compare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"

SUITE = """
import pytest

@pytest.mark.lm_model("qwen2-vl")
def test_first(lm_detection):
    assert lm_detection.task == "vlm"

@pytest.mark.lm_model("qwen2-vl")
def test_same_model(lm_detection):
    pass

@pytest.mark.lm_model("mistral")
def test_other_model(lm_detection):
    pass

def test_unbound():
    pass
"""


def suite(pytester: pytest.Pytester) -> None:
    shutil.copytree(FIXTURES / "qwen2-vl", pytester.path / "qwen2-vl")
    (pytester.path / "mistral").mkdir()
    (pytester.path / "mistral" / "config.json").write_text(json.dumps(
        {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
         "num_attention_heads": 32}))
    pytester.makepyfile(test_suite=SUITE)


def fake_lmdeploy(pytester: pytest.Pytester, answers: dict[str, tuple[str, str]],
                  version: str = "9.9.9") -> Path:
    """An interpreter that speaks the bridge's protocol and answers (backend, task) per architecture,
    logging each request it gets (to count how often LMDeploy is asked)."""
    log = pytester.path / "requests.log"
    script = pytester.path / "fake-python"
    script.write_text(f"""#!{sys.executable}
import json, sys
answers = {answers!r}
print(json.dumps({{"ready": True, "lmdeploy": {version!r}, "transformers": "5.17.0"}}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    with open({str(log)!r}, "a") as fh:
        fh.write(json.dumps([item.get("path") or "mapping" for item in request["items"]]) + "\\n")
    results = []
    for item in request["items"]:
        config = item.get("config") or json.load(open(item["path"] + "/config.json"))
        backend, task = answers[config["architectures"][0]]
        results.append({{"arch": config["architectures"][0], "backend": backend, "task": task,
                         "is_vl": task == "vlm", "error": None, "errors": {{}}}})
    print(json.dumps({{"id": request["id"], "results": results}}), flush=True)
""")
    script.chmod(0o755)
    return script


# -- the comparison -------------------------------------------------------------------------------

def test_compare_agrees_on_the_same_answer_and_on_both_failing() -> None:
    ours = detect(FIXTURES / "qwen2-vl", lmdeploy="0.18.0")
    same = Answer("Qwen2VLForConditionalGeneration", True, "turbomind", True, "vlm", None)
    other = Answer("Qwen2VLForConditionalGeneration", False, "pytorch", True, "vlm", None)
    crashed = Answer(None, None, None, None, None, "TypeError: boom")
    assert compare(ours, same) is None
    assert compare(ours, other) == "the rules answer turbomind/vlm, LMDeploy answers pytorch/vlm"
    assert compare(ours, crashed) == "LMDeploy raises TypeError: boom, but the rules answer turbomind/vlm"
    try:
        detect({"model_type": "llama"}, lmdeploy="0.18.0")
    except ValueError as exc:
        assert compare(exc, crashed) is None  # type: ignore[arg-type]
        assert "but the rules raise MissingArchitectureError" in str(compare(exc, same))  # type: ignore[arg-type]


# -- the plugin, against an interpreter that speaks the protocol -----------------------------------

def test_a_model_whose_answer_differs_fails_naming_both_answers(pytester: pytest.Pytester) -> None:
    suite(pytester)
    python = fake_lmdeploy(pytester, {"Qwen2VLForConditionalGeneration": ("pytorch", "vlm"),
                                      "MistralForCausalLM": ("pytorch", "llm")})
    result = pytester.runpytest("--lm-lmdeploy=0.18.0", f"--lm-verify-rules={python}", "-p", "no:xdist")
    result.assert_outcomes(passed=2, errors=2)  # failed at setup: no engine is started for them
    result.stdout.fnmatch_lines([
        "*lmbackend: --lm-verify-rules: each bound model is checked against the real LMDeploy of *python",
        "rules drifted from the real LMDeploy: lm_model('qwen2-vl'): the rules of LMDeploy 0.18.0 answer "
        "turbomind/vlm; the real LMDeploy 9.9.9 answers pytorch/vlm; the backend chosen here follows the "
        "rules of 0.18.0",
        "*ERROR test_suite.py::test_same_model - Failed: rules drifted*",
    ])
    # once per model and session: one batch, holding each model once
    batches = (pytester.path / "requests.log").read_text().splitlines()
    assert len(batches) == 1 and len(json.loads(batches[0])) == 2


def test_agreeing_answers_pass_and_the_option_off_asks_nothing(pytester: pytest.Pytester) -> None:
    suite(pytester)
    python = fake_lmdeploy(pytester, {"Qwen2VLForConditionalGeneration": ("turbomind", "vlm"),
                                      "MistralForCausalLM": ("pytorch", "llm")})
    pytester.runpytest("--lm-lmdeploy=0.18.0", f"--lm-verify-rules={python}", "-p", "no:xdist"
                       ).assert_outcomes(passed=4)
    (pytester.path / "requests.log").unlink()
    result = pytester.runpytest("--lm-lmdeploy=0.14.0", "-p", "no:xdist")  # differs, but not asked
    result.assert_outcomes(passed=4)
    assert not (pytester.path / "requests.log").exists()
    assert "verify" not in result.stdout.str()


def test_the_ini_key_names_the_interpreter(pytester: pytest.Pytester) -> None:
    suite(pytester)
    python = fake_lmdeploy(pytester, {"Qwen2VLForConditionalGeneration": ("turbomind", "vlm"),
                                      "MistralForCausalLM": ("turbomind", "llm")})
    assert python.name == "fake-python"
    pytester.makeini("[pytest]\nlm_verify_rules = ./fake-python\n")
    result = pytester.runpytest("--lm-lmdeploy=0.18.0", "-p", "no:xdist")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["rules drifted*mistral*answer pytorch/llm*answers turbomind/llm*"])
    pytester.makeini("[pytest]\nlm_verify_rules = false\n")
    pytester.runpytest("--lm-lmdeploy=0.18.0", "-p", "no:xdist").assert_outcomes(passed=4)


def test_an_interpreter_that_cannot_answer_fails_the_bound_tests_only(pytester: pytest.Pytester) -> None:
    suite(pytester)
    broken = pytester.path / "broken-python"
    broken.write_text(f"#!{sys.executable}\nimport sys\n"
                      "sys.stderr.write('no lmdeploy here\\n')\nsys.exit(1)\n")
    broken.chmod(0o755)
    result = pytester.runpytest(f"--lm-verify-rules={broken}", "-p", "no:xdist")
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines(["--lm-verify-rules: could not ask the LMDeploy of *broken-python*exited (1)",
                                 "no lmdeploy here"])


@pytest.mark.parametrize(("args", "message"), [
    (["--lm-verify-rules", "."], "'.' is a folder, not a Python interpreter (write --lm-verify-rules=PYTHON"),
    (["--lm-verify-rules=nope/python"], "'nope/python' is not an executable file"),
])
def test_bad_interpreters_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_without_lmdeploy_here_the_bare_option_says_what_to_give(pytester: pytest.Pytester) -> None:
    import importlib.util

    if importlib.util.find_spec("lmdeploy") is not None:
        pytest.skip("lmdeploy is installed in this interpreter")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lm-verify-rules")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*lmdeploy is not installed in this interpreter*--lm-verify-rules=/path/to/python*"])
    pytester.makeini("[pytest]\nlm_verify_rules = true\n")
    assert pytester.runpytest().ret == pytest.ExitCode.USAGE_ERROR


# -- newer than the rules: the header and the Python API say so ------------------------------------

def test_the_header_notes_a_release_newer_than_the_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lm-lmdeploy=0.19.0")
    result.stdout.fnmatch_lines([
        "lmbackend: LMDeploy 0.19.0 (asked for) is newer than the newest rules known here (0.18.0): "
        "0.18.0's rules answer for it; check them against it with --lm-verify-rules",
    ])
    assert "newer than" not in pytester.runpytest("--lm-lmdeploy=0.18.0").stdout.str()


def test_the_header_notes_an_installed_lmdeploy_newer_than_the_rules(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "lmdeploy-0.19.0.dist-info").mkdir(parents=True)  # metadata only: nothing to import
    monkeypatch.syspath_prepend(str(site))
    pytester.makepyfile("def test_x(): pass")
    # a session that uses no lm_ option shows pytest's own header unless -v; -v notes it, probing nothing
    result = pytester.runpytest("-p", "no:xdist", "-v")
    result.stdout.fnmatch_lines([
        "lmbackend: LMDeploy 0.19.0 (installed) is newer than the newest rules known here (0.18.0): "
        "0.18.0's rules answer for it; check them against it with --lm-verify-rules",
    ])
    result.assert_outcomes(passed=1)


def test_the_python_api_warns_once_for_a_newer_release() -> None:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert detect(config, lmdeploy="0.19.7").release == "0.18.0"
        detect(config, lmdeploy="0.18.0")
    newer = [w for w in caught if issubclass(w.category, NewerReleaseWarning)]
    assert len(newer) == 1 and newer[0].filename == __file__
    assert "LMDeploy 0.19.7 (asked for) is newer than the newest release these rules know (0.18.0)" in str(
        newer[0].message)
    from pytest_lmbackend.lmdeploy_api import autoget_backend

    with pytest.warns(NewerReleaseWarning, match="0.20.0"):
        autoget_backend(config, lmdeploy="0.20.0")


# -- against the real LMDeploy (the oracle environments) --------------------------------------------

@pytest.fixture(scope="module")
def real_0_18() -> Path:
    # module-scoped: found before pytester points HOME at a temporary folder
    python = find_python("0.18.0")
    if python is None:
        pytest.skip("no LMDeploy 0.18.0 environment: python -m pytest_lmbackend.oracle setup 0.18.0")
    return python


def test_real_lmdeploy_catches_rules_of_another_release(real_0_18: Path, pytester: pytest.Pytester) -> None:
    """The rules of 0.14.0 put Qwen2-VL on PyTorch; the real 0.18.0 puts it on TurboMind."""
    python = real_0_18
    shutil.copytree(FIXTURES / "qwen2-vl", pytester.path / "qwen2-vl")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lm_model("qwen2-vl")
        def test_caption(lm_detection):
            pass
    """)
    result = pytester.runpytest("--lm-lmdeploy=0.14.0", f"--lm-verify-rules={python}", "-p", "no:xdist")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*rules drifted from the real LMDeploy: lm_model('qwen2-vl'): the rules of LMDeploy 0.14.0 answer "
        "pytorch/vlm; the real LMDeploy 0.18.0 answers turbomind/vlm*",
    ])
    result = pytester.runpytest("--lm-lmdeploy=0.18.0", f"--lm-verify-rules={python}", "-p", "no:xdist")
    result.assert_outcomes(passed=1)


def test_a_drift_message_is_one_safe_line() -> None:
    from pytest_lmbackend.verify import Check

    ours = detect(FIXTURES / "qwen2-vl", lmdeploy="0.18.0")
    theirs = Answer("X", False, None, None, None, "TypeError: bad \x1b[2J\nforged row")
    text = Check("lm_model('m\x1b[31m')", "0.18.0", "0.18.0", ours, theirs, compare(ours, theirs)).message()
    assert "\x1b" not in text and "\n" not in text and "\\x1b[2J\\nforged row" in text
