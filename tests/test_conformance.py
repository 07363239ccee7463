"""Conformance with the real LMDeploy on real-world configs (../shared/corpus/real, read in place)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.rules import LMDeployCrashError, detect

# The transformers each release was answered with: the newest that met the release's requirement on the
# day it was published. Rows made with another transformers describe that pairing, not the release.
RELEASE_TRANSFORMERS = {"0.7.3": "4.51.3", "0.10.2": "4.57.1", "0.14.0": "5.12.1", "0.18.0": "5.17.0"}

def shared_dir() -> Path:
    override = os.environ.get("LMBACKEND_SHARED_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1].parent / "shared"


def real_corpus() -> Path:
    corpus = shared_dir() / "corpus" / "real"
    if not (corpus / "expected-lmdeploy.jsonl").is_file():
        pytest.skip(
            f"no real-config corpus at {corpus} (expected-lmdeploy.jsonl): put the shared folder beside "
            "the repository or set LMBACKEND_SHARED_DIR"
        )
    return corpus


def expected_rows() -> list[dict[str, Any]]:
    corpus = real_corpus()
    rows = []
    with open(corpus / "expected-lmdeploy.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if RELEASE_TRANSFORMERS.get(row["lmdeploy"]) == row["transformers"]:
                rows.append(row)
    return rows


def _ours(corpus: Path, row: dict[str, Any]) -> tuple[str, str] | ConfigError:
    try:
        found = detect(corpus / row["dir"], lmdeploy=row["lmdeploy"])
    except ConfigError as exc:
        return exc
    return (found.backend, found.task)


def test_every_answered_row_agrees() -> None:
    corpus = real_corpus()
    rows = [r for r in expected_rows() if r["error"] is None]
    assert len(rows) > 300, "the corpus should hold ~95 configs x 4 releases"
    wrong = []
    for row in rows:
        ours = _ours(corpus, row)
        if ours != (row["backend"], row["task"]):
            theirs = f"{row['backend']}/{row['task']}"
            wrong.append(f"{row['lmdeploy']} {row['dir']}: LMDeploy {theirs}, here {ours}")
    assert not wrong, "\n".join(wrong)


def test_per_release_agreement_is_complete() -> None:
    corpus = real_corpus()
    per_release: dict[str, list[int]] = {}
    for row in expected_rows():
        if row["error"] is None:
            tally = per_release.setdefault(row["lmdeploy"], [0, 0])
            tally[1] += 1
            tally[0] += _ours(corpus, row) == (row["backend"], row["task"])
    assert set(per_release) == set(RELEASE_TRANSFORMERS)
    assert {rel: ok == total for rel, (ok, total) in per_release.items()} == dict.fromkeys(per_release, True)


def _predicted(ours: tuple[str, str] | ConfigError, error: str) -> bool:
    """Where LMDeploy raised ``error`` ("Type: message"): a typed error here, and where it is an
    LMDeployCrashError, naming the same exception type."""
    if not isinstance(ours, ConfigError):
        return False
    return not isinstance(ours, LMDeployCrashError) or ours.raises == error.split(":", 1)[0]


def test_every_crash_of_lmdeploy_is_predicted() -> None:
    """Each row where the real LMDeploy raised (config-only InternVLChatModel folders before 0.13,
    whose remote code is not in the folder; RoPE-scaled remote-code configs that transformers 5 loads
    bare) gets an LMDeployCrashError naming the exception LMDeploy raised."""
    corpus = real_corpus()
    failed = [r for r in expected_rows() if r["error"] is not None]
    assert len(failed) >= 10, "the corpus records LMDeploy's failures too"
    missed = [f"{r['lmdeploy']} {r['dir']}: LMDeploy raised {r['error']!r}, here {_ours(corpus, r)}"
              for r in failed if not _predicted(_ours(corpus, r), r["error"])]
    assert not missed, "\n".join(missed)


def conformance_figures(corpus: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per release: answered rows, how many agree; crash rows, how many are predicted."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        tally = out.setdefault(row["lmdeploy"],
                               dict.fromkeys(("answered", "agree", "crashed", "predicted"), 0))
        ours = _ours(corpus, row)
        if row["error"] is None:
            tally["answered"] += 1
            tally["agree"] += ours == (row["backend"], row["task"])
        else:
            tally["crashed"] += 1
            tally["predicted"] += _predicted(ours, row["error"])
    return out


def test_conformance_figures() -> None:
    """The figures docs/DETECTION.md reports: all answered rows agree, every crash is predicted."""
    figures = conformance_figures(real_corpus(), expected_rows())
    assert set(figures) == set(RELEASE_TRANSFORMERS)
    for release, tally in figures.items():
        assert tally["agree"] == tally["answered"] > 85, (release, tally)
        assert tally["predicted"] == tally["crashed"], (release, tally)


# The releases the corpus file lacks, run by us through the real LMDeploy on the same folders (0.5.3,
# 0.6.2, 0.7.1 with transformers 4.44.2, 4.45.2, 4.48.3, current when they were published; the others
# with 5.24.0, the newest their metadata allows). TM = turbomind, PT = pytorch; a "*" marks a case where
# LMDeploy raised (InternVLChatModel config-only before 0.13, transformers 5 failing on remote-code model
# types), and what a checkpoint with its remote code gets: a typed error is required here where the rules
# predict the crash from the folder and the release's own transformers; where that LMDeploy ran with a
# transformers other than the one the rules model for it (5.24.0 for 0.6.3 and 0.9.2), the answer is
# accepted too.
EXTRA_BEFORE_0_12 = """
folder                              0.5.3    0.6.2    0.6.3    0.7.1    0.9.2
baichuan-13b-chat                  PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
baichuan2-13b-chat                 PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
baichuan2-7b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
c4ai-command-r-v01                 PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm2-6b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm2-6b-int4                   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm3-6b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm3-6b-32k                    PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
codefuse-devops-7b-chat            TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
cogvlm2-llama3-caption             PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
deepseek-r1                        PT/llm   PT/llm  PT/llm*   PT/llm  PT/llm*
deepseek-r1-distill-qwen-32b       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
deepseek-v3                        PT/llm   PT/llm  PT/llm*   PT/llm  PT/llm*
deepseek-v3.2                      PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
gemma-3-4b-it                      PT/llm   PT/llm   PT/llm   PT/llm   PT/vlm
glm-4-9b-chat                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
glm-4.1v-9b-thinking               PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
glm-4.5                            PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
glm-4v-9b                          PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
gpt-oss-120b                       PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
gpt-oss-20b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
internlm-20b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm-20b-llama-rev             TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm-xcomposer-7b              PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
internlm-xcomposer-7b-4bit         PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
internlm2-chat-7b                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm2-chat-7b-rev-2024-01-11   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internvl2-2b                      TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*
internvl2-4b                      PT/vlm*  PT/vlm*  PT/vlm*  PT/vlm*  PT/vlm*
internvl2_5-8b-mpo                TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*
internvl3-2b                      TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*  TM/vlm*
kimi-k2-instruct                   PT/llm   PT/llm  PT/llm*   PT/llm  PT/llm*
llama2-13b-chat-gptq               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-13b-chat-hf                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-70b-hf                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-7b-chat-hf                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3-8b-instruct                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-405b                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-70b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-70b-instruct-fp8-nvidia   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-8b                        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-8b-instruct               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.2-11b-vision-instruct       PT/llm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
llama3.2-1b-instruct               TM/llm   PT/llm   TM/llm   TM/llm   TM/llm
llama3.2-3b-instruct               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.3-70b-instruct              TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.3-nemotron-super-49b-v1     PT/llm   PT/llm  PT/llm*   PT/llm  PT/llm*
llama4-maverick-17b-128e-instruct   PT/llm   PT/llm   PT/llm   PT/llm   PT/vlm
llama4-scout-17b-16e-instruct      PT/llm   PT/llm   PT/llm   PT/llm   PT/vlm
lmdeploy-turbomind-hf-repo-template   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
megrez-3b-instruct                 TM/llm   PT/llm   TM/llm   TM/llm   TM/llm
minicpm-v-2                        TM/vlm   TM/vlm   TM/vlm   TM/vlm   TM/vlm
minicpm-v-2_6                      TM/vlm   TM/vlm   TM/vlm   TM/vlm   TM/vlm
minicpm-v-4                        TM/vlm   TM/vlm  TM/vlm*   TM/vlm  TM/vlm*
minicpm3-4b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
mistral-7b-instruct-v0.2           TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
mixtral-8x22b-v0.1                 PT/llm   TM/llm   TM/llm   TM/llm   TM/llm
mixtral-8x7b-v0.1                  PT/llm   TM/llm   TM/llm   TM/llm   TM/llm
molmo-7b-d-0924                    PT/llm   PT/llm   TM/vlm   TM/vlm   TM/vlm
phi-3-mini-4k-instruct             PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
phi-3-vision-128k-instruct         PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
qwen-72b-chat                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen-7b-chat                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen-vl-chat                       TM/vlm   TM/vlm   TM/vlm   TM/vlm   TM/vlm
qwen-vl-chat-int4                  TM/vlm   TM/vlm   TM/vlm   TM/vlm   TM/vlm
qwen1.5-0.5b-chat                  PT/llm   PT/llm   TM/llm   TM/llm   TM/llm
qwen1.5-7b-chat                    TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-72b-instruct                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-7b-instruct                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-audio-7b                     PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
qwen2-vl-2b-instruct               PT/llm   PT/vlm   PT/vlm   PT/vlm   TM/vlm
qwen2-vl-2b-instruct-awq-local     PT/llm   PT/vlm   PT/vlm   PT/vlm   TM/vlm
qwen2-vl-7b-instruct               PT/llm   PT/vlm   PT/vlm   PT/vlm   TM/vlm
qwen2.5-1.5b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-3b-instruct                TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-72b                        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-7b-instruct                TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-vl-3b-instruct             PT/llm   PT/llm   PT/llm   PT/llm   TM/vlm
qwen2.5-vl-7b-instruct             PT/llm   PT/llm   PT/llm   PT/llm   TM/vlm
qwen3-0.6b                         PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-0.6b-gptqmodel-w4g128        PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-235b-a22b                    PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-235b-a22b-nvfp4-nvidia       PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-30b-a3b                      PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-30b-a3b-fp8                  PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-32b                          PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-32b-fp8                      PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-4b                           PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-8b                           PT/llm   PT/llm   PT/llm   PT/llm   TM/llm
qwen3-vl-32b-instruct              PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
qwen3-vl-4b-instruct               PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
qwq-32b                            TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
vila1.5-3b                         PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
wizardcoder-15b-v1.0               PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
yi-6b-chat                         TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
"""
EXTRA_FROM_0_12 = """
folder                             0.12.2   0.12.3   0.13.0   0.15.0   0.16.0   0.17.0
baichuan-13b-chat                  PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
baichuan2-13b-chat                 PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
baichuan2-7b                       TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
c4ai-command-r-v01                 PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm2-6b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm2-6b-int4                   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm3-6b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
chatglm3-6b-32k                    PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
codefuse-devops-7b-chat            TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
cogvlm2-llama3-caption             PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
deepseek-r1                       PT/llm*  PT/llm*   PT/llm   PT/llm   PT/llm   PT/llm
deepseek-r1-distill-qwen-32b       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
deepseek-v3                       PT/llm*  PT/llm*   PT/llm   PT/llm   PT/llm   PT/llm
deepseek-v3.2                      PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
gemma-3-4b-it                      PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
glm-4-9b-chat                      TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
glm-4.1v-9b-thinking               PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
glm-4.5                            PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
glm-4v-9b                          PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
gpt-oss-120b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
gpt-oss-20b                        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm-20b                       TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
internlm-20b-llama-rev             TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm-xcomposer-7b              PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
internlm-xcomposer-7b-4bit         PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
internlm2-chat-7b                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internlm2-chat-7b-rev-2024-01-11   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
internvl2-2b                      TM/vlm*  TM/vlm*  TM/vlm*   TM/vlm   TM/vlm   TM/vlm
internvl2-4b                      PT/vlm*  PT/vlm*  PT/vlm*   TM/vlm   TM/vlm   TM/vlm
internvl2_5-8b-mpo                TM/vlm*  TM/vlm*  TM/vlm*   TM/vlm   TM/vlm   TM/vlm
internvl3-2b                      TM/vlm*  TM/vlm*  TM/vlm*   TM/vlm   TM/vlm   TM/vlm
kimi-k2-instruct                  PT/llm*  PT/llm*  PT/llm*  PT/llm*  PT/llm*   PT/llm
llama2-13b-chat-gptq               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-13b-chat-hf                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-70b-hf                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama2-7b-chat-hf                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3-8b-instruct                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-405b                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-70b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-70b-instruct-fp8-nvidia   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-8b                        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.1-8b-instruct               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.2-11b-vision-instruct       PT/vlm   PT/vlm   PT/vlm   PT/llm   PT/llm   PT/llm
llama3.2-1b-instruct               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.2-3b-instruct               TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.3-70b-instruct              TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
llama3.3-nemotron-super-49b-v1    PT/llm*  PT/llm*  PT/llm*  PT/llm*  PT/llm*  PT/llm*
llama4-maverick-17b-128e-instruct   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
llama4-scout-17b-16e-instruct      PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
lmdeploy-turbomind-hf-repo-template   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
megrez-3b-instruct                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
minicpm-v-2                        TM/vlm   TM/vlm   TM/vlm   PT/vlm   PT/vlm   PT/vlm
minicpm-v-2_6                      TM/vlm   TM/vlm   TM/vlm   PT/vlm   PT/vlm   PT/vlm
minicpm-v-4                       TM/vlm*  TM/vlm*  TM/vlm*  PT/vlm*  PT/vlm*  PT/vlm*
minicpm3-4b                        PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
mistral-7b-instruct-v0.2           TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
mixtral-8x22b-v0.1                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
mixtral-8x7b-v0.1                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
molmo-7b-d-0924                    TM/vlm   TM/vlm   TM/vlm   PT/vlm   PT/vlm   PT/vlm
phi-3-mini-4k-instruct             PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
phi-3-vision-128k-instruct         PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
qwen-72b-chat                      TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
qwen-7b-chat                       TM/llm   TM/llm   TM/llm   PT/llm   PT/llm   PT/llm
qwen-vl-chat                       TM/vlm   TM/vlm   TM/vlm   PT/llm   PT/llm   PT/llm
qwen-vl-chat-int4                  TM/vlm   TM/vlm   TM/vlm   PT/llm   PT/llm   PT/llm
qwen1.5-0.5b-chat                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen1.5-7b-chat                    TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-72b-instruct                 TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-7b-instruct                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2-audio-7b                     PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
qwen2-vl-2b-instruct               TM/vlm   TM/vlm   TM/vlm   PT/vlm   TM/vlm   TM/vlm
qwen2-vl-2b-instruct-awq-local     TM/vlm   TM/vlm   TM/vlm   PT/vlm   TM/vlm   TM/vlm
qwen2-vl-7b-instruct               TM/vlm   TM/vlm   TM/vlm   PT/vlm   TM/vlm   TM/vlm
qwen2.5-1.5b                       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-3b-instruct                TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-72b                        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-7b-instruct                TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen2.5-vl-3b-instruct             TM/vlm   TM/vlm   TM/vlm   PT/vlm   TM/vlm   TM/vlm
qwen2.5-vl-7b-instruct             TM/vlm   TM/vlm   TM/vlm   PT/vlm   TM/vlm   TM/vlm
qwen3-0.6b                         TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-0.6b-gptqmodel-w4g128        TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-235b-a22b                    TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-235b-a22b-nvfp4-nvidia       TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-30b-a3b                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-30b-a3b-fp8                  TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-32b                          TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-32b-fp8                      TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-4b                           TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-8b                           TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
qwen3-vl-32b-instruct              PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
qwen3-vl-4b-instruct               PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm   PT/vlm
qwq-32b                            TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
vila1.5-3b                         PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
wizardcoder-15b-v1.0               PT/llm   PT/llm   PT/llm   PT/llm   PT/llm   PT/llm
yi-6b-chat                         TM/llm   TM/llm   TM/llm   TM/llm   TM/llm   TM/llm
"""


def test_releases_beyond_the_corpus_file() -> None:
    corpus = real_corpus()
    wrong = []
    for table in (EXTRA_BEFORE_0_12, EXTRA_FROM_0_12):
        header, *rows = (line.split() for line in table.strip().splitlines())
        wrong += _disagreements(corpus, header[1:], rows)
    assert not wrong, "\n".join(wrong)
    assert len(rows) >= 90


def _disagreements(corpus: Path, releases: list[str], rows: list[list[str]]) -> list[str]:
    wrong = []
    for folder, *cells in rows:
        if not (corpus / folder).is_dir():
            continue
        for release, cell in zip(releases, cells, strict=True):
            backend, task = cell.rstrip("*").replace("TM", "turbomind").replace("PT", "pytorch").split("/")
            ours = _ours(corpus, {"dir": folder, "lmdeploy": release})
            if cell.endswith("*"):
                other_transformers = release in ("0.6.3", "0.9.2")
                if isinstance(ours, ConfigError) or (ours == (backend, task) and other_transformers):
                    continue
                wrong.append(f"{release} {folder}: LMDeploy raised, here {ours}")
            elif ours != (backend, task):
                wrong.append(f"{release} {folder}: expected {cell}, here {ours}")
    return wrong
