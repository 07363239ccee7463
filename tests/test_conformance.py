"""Conformance with the real LMDeploy on real-world configs (../shared/corpus/real, read in place)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.config import ConfigError
from pytest_lmbackend.rules import detect

# The transformers each release was answered with: the newest that met the release's requirement on the
# day it was published. Rows made with another transformers describe that pairing, not the release.
RELEASE_TRANSFORMERS = {"0.7.3": "4.51.3", "0.10.2": "4.57.1", "0.14.0": "5.12.1", "0.18.0": "5.17.0"}

# Where that LMDeploy raised on a real config, the answer given here instead (documented in
# docs/DETECTION.md, "Where LMDeploy raises"): (folder, release) -> (backend, task).
DOCUMENTED: dict[tuple[str, str], tuple[str, str]] = {
    # < 0.13 loads InternVLChatModel with its remote code; a config-only folder lacks it (AttributeError).
    ("internvl2-2b", "0.7.3"): ("turbomind", "vlm"),
    ("internvl2-4b", "0.7.3"): ("pytorch", "vlm"),  # Phi-3 language model: not in TurboMind's table
    ("internvl2_5-8b-mpo", "0.7.3"): ("turbomind", "vlm"),
    ("internvl3-2b", "0.7.3"): ("turbomind", "vlm"),
    ("internvl2-2b", "0.10.2"): ("turbomind", "vlm"),
    ("internvl2-4b", "0.10.2"): ("pytorch", "vlm"),
    ("internvl2_5-8b-mpo", "0.10.2"): ("turbomind", "vlm"),
    ("internvl3-2b", "0.10.2"): ("turbomind", "vlm"),
    # transformers 5 fails to build a bare config for these remote-code model types (AttributeError on
    # max_position_embeddings); the rules themselves answer as for any arch outside the table.
    ("kimi-k2-instruct", "0.14.0"): ("pytorch", "llm"),
    ("llama3.3-nemotron-super-49b-v1", "0.14.0"): ("pytorch", "llm"),
    ("minicpm-v-4", "0.14.0"): ("pytorch", "vlm"),
    ("llama3.3-nemotron-super-49b-v1", "0.18.0"): ("pytorch", "llm"),
    ("minicpm-v-4", "0.18.0"): ("pytorch", "vlm"),
}


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


def test_rows_where_lmdeploy_raised_get_the_documented_answer() -> None:
    corpus = real_corpus()
    failed = [r for r in expected_rows() if r["error"] is not None]
    assert failed, "the corpus records LMDeploy's failures too"
    for row in failed:
        key = (row["dir"], row["lmdeploy"])
        assert key in DOCUMENTED, f"LMDeploy {row['lmdeploy']} raised on {row['dir']}: {row['error']}"
        assert _ours(corpus, row) == DOCUMENTED[key], key


def test_documented_answers_are_still_needed() -> None:
    # A documented answer whose row LMDeploy now answers (or that left the corpus) is stale.
    recorded = {(r["dir"], r["lmdeploy"]) for r in expected_rows() if r["error"] is not None}
    assert set(DOCUMENTED) <= recorded
