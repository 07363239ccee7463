"""Tests of the --lm-plan table and the grouping of skips by kind."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_lmbackend.hardware import load_profiles
from pytest_lmbackend.plan import PlanRow, format_plan, format_skip_summary, group_skips
from pytest_lmbackend.requirements import KINDS, evaluate, parse_requirement
from pytest_lmbackend.selection import ItemOutcome
from pytest_lmbackend.verdict import Verdict

CAP = Verdict("capability", "needs compute capability >= 9.0; GPU 0 (NVIDIA A100-SXM4-40GB) has 8.0")
GPUS = Verdict("gpu", "needs 2 GPUs; found 1: GPU 0 (NVIDIA A100-SXM4-40GB)")


def outcome(skip: Verdict | None = None, backend: str | None = None, *, error: bool = False) -> ItemOutcome:
    verdict = None if skip is None else dataclasses.replace(skip, error=error)
    return ItemOutcome(backend, None, verdict)


def row(nodeid: str, *cells: ItemOutcome, runner: str | None = None) -> PlanRow:
    return PlanRow(nodeid, cells, runner)


def test_plan_has_one_column_per_profile_and_reasons_per_column() -> None:
    lines = format_plan([row("t.py::a", outcome(), outcome(backend="pytorch")),
                         row("t.py::b", outcome(CAP), outcome()),
                         row("t.py::c", outcome(GPUS, "turbomind"), outcome(CAP))],
                        ["a100-40gb", "h100x8"])
    assert lines[0].split() == ["test", "a100-40gb", "h100x8"]
    assert lines[1].split() == ["t.py::a", "run", "run[pytorch]"]
    assert lines[2].split() == ["t.py::b", "skip:capability", "run"]
    assert lines[3].split() == ["t.py::c", "skip:gpu[turbomind]", "skip:capability"]
    # columns line up: every cell of the second column starts at the same offset
    offsets = {line.index(text) for line, text in zip(lines[1:4], ["run", "skip", "skip"], strict=True)}
    assert len(offsets) == 1
    assert lines[4:] == [
        "", "a100-40gb: 1 would run, 2 would skip, 0 would fail",
        "  capability: 1 skipped", f"    1 x {CAP.reason}", "  gpu: 1 skipped", f"    1 x {GPUS.reason}",
        "", "h100x8: 2 would run, 1 would skip, 0 would fail",
        "  capability: 1 skipped", f"    1 x {CAP.reason}",
    ]


def test_required_kinds_and_bad_input_show_as_failures() -> None:
    bad = Verdict("model", "lm_model('m'): m/config.json: not JSON")
    lines = format_plan([row("t.py::b", outcome(CAP)), row("t.py::c", outcome(GPUS)),
                         row("t.py::d", outcome(bad, error=True))], ["a100"], require={"gpu"})
    assert lines[1].split() == ["t.py::b", "skip:capability"]
    assert lines[2].split() == ["t.py::c", "FAIL:gpu"]
    assert lines[3].split() == ["t.py::d", "FAIL:model"]
    assert lines[5] == "a100: 0 would run, 1 would skip, 2 would fail"
    assert "  gpu: 1 would fail" in lines and "  model: 1 would fail" in lines


def test_a_required_gpu_fact_left_unchecked_fails_as_that_kind() -> None:
    unchecked = Verdict("gpu", "needs 1 GPU; profile 'cpu' has none", unchecked=frozenset({"capability"}))
    lines = format_plan([row("t.py::h", outcome(unchecked))], ["cpu"], require={"capability"})
    assert lines[1].split() == ["t.py::h", "FAIL:capability"]


def test_a_fleet_plan_has_a_runner_column() -> None:
    lines = format_plan([row("t.py::a", outcome(), outcome(), runner="cpu"),
                         row("t.py::b", outcome(GPUS), outcome(), runner="h100x8")], ["cpu", "h100x8"])
    assert lines[0].split() == ["test", "runner", "cpu", "h100x8"]
    assert lines[2].split() == ["t.py::b", "h100x8", "skip:gpu", "run"]


def test_plan_rejects_rows_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match=re.escape("t.py::a: 1 outcomes for 2 columns")):
        format_plan([row("t.py::a", outcome())], ["x", "y"])


def test_plan_from_real_evaluations() -> None:
    views = load_profiles("cpu,a100-40gb,h100x8", local_packages={})
    markers = {"t::any": {}, "t::hopper": {"capability": ">=9.0"}, "t::tp8": {"gpus": 8, "dtype": "bf16"}}
    rows = [row(node, *(outcome(evaluate(parse_requirement((), kw, where=node), hw)) for hw in views))
            for node, kw in markers.items()]
    lines = format_plan(rows, [hw.name for hw in views])
    assert lines[1].split() == ["t::any", "run", "run", "run"]
    assert lines[2].split()[1:] == ["skip:gpu", "skip:capability", "run"]
    assert lines[3].split()[1:] == ["skip:gpu", "skip:gpu", "run"]
    assert "    2 x needs 1 GPU; profile 'cpu' has none" not in lines
    assert "    1 x needs 1 GPU; profile 'cpu' has none" in lines


def test_group_skips_counts_by_kind_and_reason() -> None:
    skips = [CAP, CAP, GPUS, Verdict("capability", "other"), Verdict("backend", "no turbomind")]
    groups = group_skips(skips)
    assert [(g.kind, g.count) for g in groups] == [("capability", 3), ("backend", 1), ("gpu", 1)]
    assert groups[0].reasons == ((CAP.reason, 2), ("other", 1))
    assert format_skip_summary(skips, max_reasons=1) == [
        "capability: 3 skipped", f"  2 x {CAP.reason}", "  ... and 1 more reason",
        "backend: 1 skipped", "  1 x no turbomind",
        "gpu: 1 skipped", f"  1 x {GPUS.reason}",
    ]
    assert format_skip_summary([]) == []


@given(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["a", "b", "c"]))))
def test_grouping_keeps_every_skip(pairs: list[tuple[str, str]]) -> None:
    groups = group_skips(Verdict(k, r) for k, r in pairs)
    assert sum(g.count for g in groups) == len(pairs)
    assert all(g.count == sum(n for _, n in g.reasons) for g in groups)
    assert [g.count for g in groups] == sorted((g.count for g in groups), reverse=True)
