"""Outside text reaches the terminal as written, never as control sequences or extra lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend.display import printable, printable_block

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "NVIDIA\x00 H100\x1b[2J\x1b[H\r\nlmbackend: FORGED\x07\x9b31m\u202eevil\u2028x\ud800"
# what a terminal acts on: C0 and C1 controls, DEL, bidi overrides, line and paragraph separators
ACTS = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]] + ["\u202e", "\u2028", "\u2029", "\u200b"]


def _safe(text: str) -> bool:
    return not any(c in text for c in ACTS)


def test_every_control_and_format_character_becomes_its_escape() -> None:
    shown = printable(HOSTILE)
    assert shown == ("NVIDIA\\x00 H100\\x1b[2J\\x1b[H\\r\\nlmbackend: FORGED\\x07\\x9b31m\\u202eevil\\u2028x"
                     "\\ud800")
    assert _safe(shown) and "\n" not in shown
    assert all(_safe(printable(c)) for c in ACTS)


def test_ordinary_text_is_kept_as_it_is() -> None:
    for text in ("NVIDIA H100 80GB HBM3", "Qwen2VLForConditionalGeneration", "模型 é ü", "a\u00a0b", "x\\y"):
        assert printable(text) == text
    assert printable(3) == "3"


def test_a_block_keeps_its_lines_indented_and_each_escaped() -> None:
    assert printable_block("oracle: exited (1)\nImportError: \x1b[2Jx\r\nlmbackend: FORGED") == (
        "oracle: exited (1)\n    ImportError: \\x1b[2Jx\n    lmbackend: FORGED")
    assert printable_block("one line") == "one line"


def test_an_oracle_error_carrying_a_workers_output_is_shown_escaped(tmp_path: Path) -> None:
    worker = tmp_path / "python"
    worker.write_text("#!/bin/sh\nprintf 'boom\\033[2J\\nlmbackend: FORGED\\n' >&2\nexit 1\n")
    worker.chmod(0o755)
    from pytest_lmbackend.oracle.bridge import Oracle, OracleError

    with pytest.raises(OracleError) as info:
        Oracle("0.18.0", python=worker, timeout=5)
    shown = printable_block(f"oracle: {info.value}")
    assert "\x1b" not in shown and "boom\\x1b[2J" in shown
    assert not any(line.startswith("lmbackend: FORGED") for line in shown.splitlines())


def _hostile_profile(folder: Path) -> Path:
    profile = folder / "evil.toml"
    profile.write_text('driver = "570.1"\ncuda = "12.8"\n\n[[gpus]]\n'
                       f'name = {json.dumps(HOSTILE.replace(chr(0xd800), ""))}\n'
                       'capability = "9.0"\nmemory_total = "80GiB"\ncount = 2\n', encoding="utf-8")
    return profile


def test_gpu_names_of_a_profile_reach_the_pytest_header_skips_summary_and_plan_escaped(
        pytester: pytest.Pytester) -> None:
    profile = _hostile_profile(pytester.path)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lm_requires(capability=">=10.0")
        def test_cap():
            pass

        @pytest.mark.lm_requires(gpus=4)
        def test_gpus():
            pass
    """)
    run = pytester.runpytest_subprocess("-p", "no:xdist", f"--lm-hardware={profile}", "-rs")
    run.assert_outcomes(skipped=2)
    plan = pytester.runpytest_subprocess("-p", "no:xdist", f"--lm-hardware={profile},h100", "--lm-plan")
    for result in (run, plan):
        out = result.stdout.str()
        assert _safe(out.replace("\n", "")), out
        assert not any(line.startswith("lmbackend: FORGED") for line in out.splitlines())
        assert "NVIDIA\\x00 H100\\x1b[2J" in out
    assert run.stdout.str().count("NVIDIA\\x00 H100") >= 5  # header (2 GPUs), summary, skip lines


def test_a_model_folders_name_in_a_fixtures_failure_and_a_usage_error_is_escaped(
        pytester: pytest.Pytester) -> None:
    """A fixture's failure (lm_detection on a folder without config.json) and a usage error (a bad
    profile) quote paths from outside: they printed ESC and newlines raw."""
    name = "m\x1b[2J\x1b[H\nlmbackend: FORGED"
    (pytester.path / name).mkdir()
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.lm_model({name!r})
        def test_detect(lm_detection):
            pass
    """)
    failed = pytester.runpytest_subprocess("-p", "no:xdist", "--lm-hardware=cpu")
    failed.assert_outcomes(errors=1)
    bad = pytester.path / "bad\x1b[31m.toml"
    bad.write_text("gpus = 3\n")
    usage = pytester.runpytest_subprocess("-p", "no:xdist", f"--lm-hardware={bad}")
    assert usage.ret == pytest.ExitCode.USAGE_ERROR
    for result, shown in ((failed, "m\\x1b[2J\\x1b[H\\nlmbackend: FORGED"), (usage, "bad\\x1b[31m.toml")):
        out = result.stdout.str() + result.stderr.str()
        assert _safe(out.replace("\n", "")), out
        assert not any(line.startswith("lmbackend: FORGED") for line in out.splitlines())
        assert shown in out, out


def test_env_escapes_a_profiles_gpu_names_and_its_json_keeps_them(tmp_path: Path) -> None:
    profile = _hostile_profile(tmp_path)
    text = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "env", "--hardware", str(profile)],
                          capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert _safe(text.stdout.replace("\n", "")) and "FORGED" in text.stdout
    assert not any(line.startswith("lmbackend: FORGED") for line in text.stdout.splitlines())
    raw = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "env", "--json", "--hardware",
                          str(profile)], capture_output=True, text=True, timeout=60)
    assert json.loads(raw.stdout)["gpus"][0]["name"] == HOSTILE.replace("\ud800", "")


@pytest.mark.parametrize("releases", [["--lmdeploy", "0.18.0"], ["--lmdeploy", "all"]])
def test_detect_escapes_an_architecture_that_would_clear_the_screen_and_forge_rows(
        tmp_path: Path, releases: list[str]) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    arch = "\x1b[2J\x1b[HLlamaForCausalLM\nfake/path  Forged  turbomind  llm  forged-rule"
    (folder / "config.json").write_text(json.dumps({"architectures": [arch], "model_type": "llama"}))
    result = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "detect", *releases, str(folder)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert _safe(result.stdout.replace("\n", ""))
    assert not any(line.startswith("fake/path") for line in result.stdout.splitlines())
    assert "\\x1b[2J\\x1b[HLlamaForCausalLM\\nfake/path" in result.stdout
    records = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "detect", "--json", *releases,
                              str(folder)], capture_output=True, text=True, timeout=60).stdout
    assert json.loads(records.splitlines()[0])["arch"] == arch  # JSON keeps the text as it is


def test_xdist_reasons_and_labels_escape_a_profiles_uuids_and_names() -> None:
    from pytest_lmbackend.hardware.model import GPU
    from pytest_lmbackend.xdist.slicing import device_label, too_wide

    reason = too_wide(4, "GPU-a\x1b[2J,GPU-b", "gw1", "2")
    assert reason is not None and _safe(reason) and "GPU-a\\x1b[2J" in reason
    isolated = too_wide(4, "GPU-a\n", None, "2")
    assert isolated is not None and _safe(isolated)
    gpu = GPU(index=0, physical_index=0, uuid="GPU-1", name="H100\x00\n", capability=(9, 0),
              memory_total=1, memory_free=1, pci_bus_id=None)
    assert device_label(gpu) == "GPU 0 (H100\\x00\\n)"
