"""Tests of the --lm-plan table and the grouping of skips by kind."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_lmbackend.hardware import load_profiles
from pytest_lmbackend.plan import format_plan, format_skip_summary, group_skips
from pytest_lmbackend.requirements import KINDS, Skip, evaluate, parse_requirement

CAP = Skip("capability", "needs compute capability >= 9.0; GPU 0 (NVIDIA A100-SXM4-40GB) has 8.0")
GPUS = Skip("gpu", "needs 2 GPUs; found 1: GPU 0 (NVIDIA A100-SXM4-40GB)")


def test_plan_has_one_column_per_profile_and_numbered_reasons() -> None:
    lines = format_plan([("t.py::a", [None, None]), ("t.py::b", [CAP, None]), ("t.py::c", [GPUS, CAP])],
                        ["a100-40gb", "h100x8"])
    assert lines[0].split() == ["test", "a100-40gb", "h100x8"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["t.py::a", "run", "run"]
    assert lines[3].split() == ["t.py::b", "skip", "[1]", "run"]
    assert lines[4].split() == ["t.py::c", "skip", "[2]", "skip", "[1]"]
    assert lines[5].startswith("total") and "1 run, 2 skip" in lines[5] and "2 run, 1 skip" in lines[5]
    assert lines[7:] == [f"[1] capability: {CAP.reason}", f"[2] gpu: {GPUS.reason}"]
    # columns line up: every cell of the second column starts at the same offset
    offsets = {line.index(cell) for line, cell in zip(lines[2:5], ["run", "skip", "skip"], strict=True)}
    assert len(offsets) == 1


def test_required_kinds_show_as_failures() -> None:
    lines = format_plan([("t.py::b", [CAP]), ("t.py::c", [GPUS])], ["a100"], required={"gpu"})
    assert lines[2].split() == ["t.py::b", "skip", "[1]"]
    assert lines[3].split() == ["t.py::c", "FAIL", "[2]"]
    assert "0 run, 1 skip, 1 fail" in lines[4]


def test_plan_rejects_rows_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match=re.escape("t.py::a: 1 outcomes for 2 columns")):
        format_plan([("t.py::a", [None])], ["x", "y"])


def test_plan_from_real_evaluations() -> None:
    views = load_profiles("cpu,a100-40gb,h100x8", local_packages={})
    markers = {"t::any": {}, "t::hopper": {"capability": ">=9.0"}, "t::tp8": {"gpus": 8, "dtype": "bf16"}}
    rows = [(node, [evaluate(parse_requirement((), kw, where=node), hw) for hw in views])
            for node, kw in markers.items()]
    lines = format_plan(rows, [hw.name for hw in views])
    assert lines[2].split() == ["t::any", "run", "run", "run"]
    assert lines[3].split()[1:] == ["skip", "[1]", "skip", "[2]", "run"]
    assert lines[4].split()[1:] == ["skip", "[3]", "skip", "[4]", "run"]
    assert "[1] gpu: needs 1 GPU; profile 'cpu' has none" in lines


def test_group_skips_counts_by_kind_and_reason() -> None:
    skips = [CAP, CAP, GPUS, Skip("capability", "other"), Skip("backend", "no turbomind")]
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
    groups = group_skips(Skip(k, r) for k, r in pairs)
    assert sum(g.count for g in groups) == len(pairs)
    assert all(g.count == sum(n for _, n in g.reasons) for g in groups)
    assert [g.count for g in groups] == sorted((g.count for g in groups), reverse=True)
