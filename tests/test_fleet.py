"""Fleet mode's decisions: the assignment rule, the plan's JSON, costs, the runner check; and the
property that the runners' selections partition any suite."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_lmbackend.backends import build_registry, facts_from_hardware
from pytest_lmbackend.fleet.assignment import (
    DURATIONS_KEY,
    FleetError,
    ItemVerdicts,
    Runner,
    assign,
    cache_key,
    estimate,
    find_runner,
    load_fleet,
    parse_fleet,
    place,
    runner_release,
)
from pytest_lmbackend.fleet.check import CHECKS, match_gpus, missing
from pytest_lmbackend.hardware import GPU, NPU, Hardware
from pytest_lmbackend.hardware.profiles import hardware_from_data
from pytest_lmbackend.markers import parse_marks
from pytest_lmbackend.plan import fleet_lines, runner_summary_lines
from pytest_lmbackend.plugin import _one_requirement
from pytest_lmbackend.requirements import parse_requirement
from pytest_lmbackend.rules import KNOWN_RELEASES
from pytest_lmbackend.selection import BackendMode, is_backend_bound
from pytest_lmbackend.session import LmSession, Options
from pytest_lmbackend.skipping import PytestSkip
from pytest_lmbackend.verdict import Verdict

GPU_SKIP = Verdict("gpu", "needs 1 GPU; profile 'cpu' has none")
VRAM_SKIP = Verdict("vram", "needs 30 GiB of GPU memory; GPU 0 (NVIDIA GeForce RTX 4090) has 23.99 GiB")
NAMES = ("cpu", "rtx4090", "h100x8")


# -- options and loading --------------------------------------------------------------------------------
def test_parse_fleet_takes_commas_and_lines() -> None:
    assert parse_fleet("cpu, rtx4090,\n h100x8 \n") == NAMES
    with pytest.raises(argparse.ArgumentTypeError, match="cheapest first"):
        parse_fleet(" , \n")


def test_a_profile_stating_no_packages_has_none_in_a_fleet() -> None:
    """Whatever is installed where the fleet is loaded, so every runner computes the same assignment."""
    cpu, rtx = load_fleet(["cpu", "rtx4090"], origin="--lm-fleet")
    assert (cpu.name, cpu.spec, rtx.name) == ("cpu", "cpu", "rtx4090")
    assert dict(cpu.hardware.packages) == {} and cpu.hardware.packages_stated
    assert len(rtx.hardware.gpus) == 1


def test_relative_files_are_found_beside_the_ini_file(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "gpu.toml").write_text(
        'name = "ci-gpu"\n[packages]\ntorch = "2.13.0"\n'
        '[[gpus]]\nname = "X"\ncapability = "8.0"\nmemory_total = "40GiB"\n'
    )
    (runner,) = load_fleet(["ci/gpu.toml"], origin="ini lm_fleet", base_dir=tmp_path)
    assert (runner.name, runner.spec, dict(runner.hardware.packages)) == (
        "ci-gpu",
        "ci/gpu.toml",
        {"torch": "2.13.0"},
    )


def test_fleet_errors_name_where_the_fleet_came_from(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match=r"ini lm_fleet: hardware profile 'nosuch': no such profile"):
        load_fleet(["cpu", "nosuch"], origin="ini lm_fleet")
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "p.toml").write_text('name = "ci"\n')
    specs = [str(tmp_path / "a" / "p.toml"), str(tmp_path / "b" / "p.toml")]
    with pytest.raises(
        FleetError,
        match=r"--lm-fleet: 2 runners are named 'ci' \(.*a/p.toml, .*b/p.toml\); "
        r"give each profile its own name",
    ):
        load_fleet(specs, origin="--lm-fleet")


def test_find_runner_by_name_or_as_given() -> None:
    runners = load_fleet(["cpu", "a10x2"], origin="--lm-fleet")
    assert find_runner(runners, "a10x2", origin="--lm-runner") == 1
    with pytest.raises(
        FleetError,
        match=r"\$PYTEST_LM_RUNNER=h100: no such runner in the fleet; "
        r"its runners: cpu, a10x2",
    ):
        find_runner(runners, "h100", origin="$PYTEST_LM_RUNNER")


def test_a_runners_release_never_depends_on_this_machine() -> None:
    h100 = load_fleet(
        [str(Path(__file__).parents[1] / "examples" / "profiles" / "h100x8-lmdeploy.toml"), "cpu"],
        origin="--lm-fleet",
    )
    assert runner_release(h100[0].hardware, None) == "0.18.0"  # the LMDeploy it states
    assert runner_release(h100[1].hardware, None) == KNOWN_RELEASES[-1]  # none stated: the newest
    assert runner_release(h100[1].hardware, "0.10.2") == "0.10.2"  # --lm-lmdeploy decides for all


# -- the assignment rule ----------------------------------------------------------------------------------
def test_the_first_runner_that_runs_a_test_takes_it() -> None:
    assert place(ItemVerdicts("t::a", (None, None, None)), 3).runner == 0
    assert place(ItemVerdicts("t::a", (None, None, None)), 3).reason(NAMES) is None
    moved = place(ItemVerdicts("t::b", (GPU_SKIP, VRAM_SKIP, None)), 3)
    assert (moved.runner, moved.orphan) == (2, False)
    assert moved.reason(NAMES) == f"cpu: {GPU_SKIP.reason}; rtx4090: {VRAM_SKIP.reason}"
    with pytest.raises(ValueError, match="t::x: 2 verdicts for 3 runners"):
        place(ItemVerdicts("t::x", (None, None)), 3)


def test_a_test_no_runner_can_run_is_an_orphan_of_the_last() -> None:
    orphan = place(ItemVerdicts("t::c", (GPU_SKIP, GPU_SKIP, VRAM_SKIP)), 3)
    assert (orphan.runner, orphan.orphan) == (2, True)
    # one reason shared by several runners is said once, naming them
    assert orphan.reason(NAMES) == (f"can run on no runner of the fleet: cpu, rtx4090: {GPU_SKIP.reason}; "
                                    f"h100x8: {VRAM_SKIP.reason}")


def test_pytest_skips_and_bad_input_go_to_the_first_runner() -> None:
    fixed = PytestSkip("skipped by pytest: later")
    placed = place(ItemVerdicts("t::d", (GPU_SKIP, GPU_SKIP, None), fixed), 3)
    assert (placed.runner, placed.orphan, placed.reason(NAMES)) == (0, False, fixed.reason)
    # a skipif decided by a condition is the runner's to evaluate: the requirements place the test
    local = PytestSkip("skipped by pytest: no CUDA", local=True)
    assert place(ItemVerdicts("t::e", (GPU_SKIP, None, None), local), 3).runner == 1
    bad = Verdict("model", "lm_model('m'): m/config.json: not JSON", error=True)
    assert place(ItemVerdicts("t::f", (bad, bad, bad)), 3).runner == 0


def test_the_plans_json_and_text() -> None:
    items = [
        ItemVerdicts("t::a", (None, None, None)),
        ItemVerdicts("t::b", (GPU_SKIP, None, None)),
        ItemVerdicts("t::c", (GPU_SKIP, GPU_SKIP, GPU_SKIP)),
        ItemVerdicts("t::d", (GPU_SKIP, GPU_SKIP, None), PytestSkip("skipped by pytest: later")),
    ]
    assignment = assign(items, NAMES)
    data = assignment.to_json()
    assert data == json.loads(json.dumps(data))
    assert data == {
        "fleet": list(NAMES),
        "runners": {"cpu": ["t::a", "t::d"], "rtx4090": ["t::b"], "h100x8": ["t::c"]},
        "orphans": ["t::c"],
        "reasons": {
            "t::b": f"cpu: {GPU_SKIP.reason}",
            "t::c": f"can run on no runner of the fleet: cpu, rtx4090, h100x8: {GPU_SKIP.reason}",
            "t::d": "skipped by pytest: later",
        },
    }
    costs = estimate(assignment, {"": {"t::a": 2.0, "t::b": 60.0}, "rtx4090": {"t::b": 300.0}})
    assert [(c.name, c.tests, c.orphans, c.timed, c.seconds) for c in costs] == [
        ("cpu", 2, 0, 1, 2.0),
        ("rtx4090", 1, 0, 1, 300.0),
        ("h100x8", 0, 1, 0, 0.0),
    ]
    lines = fleet_lines(assignment, costs)
    assert lines[:4] == [
        "runners (cheapest first):",
        "  cpu: 2 tests; 2.0 s by last durations (1 of 2 timed)",
        "  rtx4090: 1 test; 5.0 min by last durations (1 of 1 timed) <- bottleneck",
        "  h100x8: 0 tests + 1 orphan; no durations recorded",
    ]
    assert lines[4].startswith("orphans: 1 test can run on no runner of the fleet; the last runner, h100x8,")
    assert lines[5] == f"  t::c: can run on no runner of the fleet: cpu, rtx4090, h100x8: {GPU_SKIP.reason}"
    shares = {name: len(tests) for name, tests in data["runners"].items()}
    assert runner_summary_lines("rtx4090", NAMES, shares, ["t::c"]) == [
        "runner 'rtx4090': 1 of 4 tests are this runner's; the others went to cpu (2), h100x8 (1)",
        "1 test can run on no runner of the fleet; the last runner, h100x8, reports them: skipped, or failed "
        "under --lm-require=fleet",
    ]


def test_durations_are_kept_under_the_plugins_own_cache_keys() -> None:
    assert cache_key(None) == DURATIONS_KEY == "lmbackend/durations"
    assert cache_key("ci h100/x") == "lmbackend/durations/ci_h100_x"


# -- the runner check -------------------------------------------------------------------------------------
def gpu(index: int, name: str, capability: tuple[int, int], gib: int) -> GPU:
    return GPU(index, index, f"GPU-{index}", name, capability, gib * 1024**3, gib * 1024**3)


def test_every_claimed_gpu_needs_its_own_real_gpu_of_at_least_its_kind() -> None:
    a100 = gpu(0, "A100", (8, 0), 80)
    h100 = gpu(1, "H100", (9, 0), 80)
    small = gpu(2, "A10", (8, 6), 24)
    # the H100 claim must not take the only H100 first-come: claims choose most demanding first
    assert match_gpus([a100, h100], [h100, a100]) == []
    assert match_gpus([a100, a100], [h100, small]) == [a100]  # the A10 has 8.6 but too little memory
    assert match_gpus([small], [h100]) == []  # at least: more memory, higher capability are fine
    assert match_gpus([small], [a100]) == [small]  # 8.0 is less than the 8.6 claimed
    assert match_gpus([h100], []) == [h100]


def test_what_a_runner_lacks_is_named() -> None:
    claimed = Hardware(
        gpus=(gpu(0, "H100", (9, 0), 80), gpu(1, "H100", (9, 0), 80)),
        source="profile",
        profile="h100x2",
        packages={"lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0", "flash-attn": "2.7.4"},
        backends=("turbomind", "pytorch"),
        packages_stated=True,
    )
    actual = Hardware(
        gpus=(gpu(0, "H100", (9, 0), 80),), source="nvml", packages={"lmdeploy": "0.17.1", "torch": "2.11.0"}
    )
    problems = missing(claimed, actual, ["pytorch", "transformers"])
    assert problems == [
        "GPUs: needs 2 x H100 (compute capability >= 9.0, >= 80 GiB); found 1: GPU 0 (H100, 9.0, 80 GiB); "
        "1 of the 2 without a GPU that matches",
        "packages: lmdeploy 0.18.0: found 0.17.1; LMDeploy's TurboMind extension: not installed; "
        "flash-attn 2.7.4: not installed",
        "backends: turbomind not available here (available: pytorch, transformers)",
    ]
    more = dataclasses.replace(
        actual,
        gpus=(*actual.gpus, gpu(1, "H200", (9, 0), 141)),
        packages={"lmdeploy": "0.18.1", "lmdeploy.turbomind": "0.18.1", "flash-attn": "2.8.0"},
    )
    assert missing(claimed, more, ["turbomind", "pytorch"]) == []
    assert [name for name, _ in CHECKS] == ["nodes", "gpus", "npus", "packages", "backends"]
    two_nodes = dataclasses.replace(claimed, nodes=2)
    assert missing(two_nodes, more, ["turbomind", "pytorch"]) == [
        "nodes: needs 2 nodes; this job spans 1 (the probe reads it from $PYTEST_LM_NODES)"]
    assert missing(two_nodes, dataclasses.replace(more, nodes=4), ["turbomind", "pytorch"]) == []


def test_ascend_npus_are_counted_by_memory() -> None:
    def npu(index: int, name: str, gib: int) -> NPU:
        return NPU(index, index, name, gib * 1024**3)

    claimed = Hardware(npus=tuple(npu(i, "Ascend910B3", 64) for i in range(8)), source="profile",
                       profile="ascend-910bx8", ascend=True)
    actual = Hardware(npus=(npu(0, "Ascend910B3", 64), npu(1, "Ascend310P3", 24)), source="profile",
                      ascend=True)
    assert missing(claimed, actual, []) == [
        "NPUs: needs 8 x Ascend910B3 (>= 64 GiB); found 2: NPU 0 (Ascend910B3), 64 GiB; NPU 1 (Ascend310P3), "
        "24 GiB; 7 of the 8 without an NPU that matches"]
    enough = dataclasses.replace(actual, npus=tuple(npu(i, "Ascend910B3", 64) for i in range(16)))
    assert missing(claimed, enough, []) == []


# -- the property -----------------------------------------------------------------------------------------
REGISTRY = build_registry()
TORCH_STACK = {"torch": "2.13.0", "transformers": "5.17.0"}
LMDEPLOY_STACK = {**TORCH_STACK, "lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0"}


def stated(name: str, gpus: list[dict[str, Any]], packages: dict[str, str]) -> Runner:
    data = {"name": name, "cuda": "12.8", "packages": packages, "gpus": gpus}
    return Runner(name, name, hardware_from_data(data, shown=name, profile=name))


SHIPPED_NAMES = ["cpu", "t4", "rtx4090", "a10x2", "a100-80gbx8", "h100x8", "b200x8", "ascend-910bx8"]
SHIPPED = list(load_fleet(SHIPPED_NAMES, origin="--lm-fleet"))
STATED = [
    stated("cpu-torch", [], TORCH_STACK),
    stated(
        "l40s-lmdeploy",
        [{"name": "NVIDIA L40S", "capability": "8.9", "memory_total": "45GiB"}],
        LMDEPLOY_STACK,
    ),
    stated(
        "h100x4-pt",
        [{"name": "NVIDIA H100", "capability": "9.0", "memory_total": "80GiB", "count": 4}],
        {**TORCH_STACK, "lmdeploy": "0.14.0", "flash-attn": "2.7.4"},
    ),
]
fleets = st.lists(st.sampled_from(SHIPPED + STATED), min_size=1, max_size=4, unique_by=lambda r: r.name)


def mark(name: str, *args: Any, **kwargs: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, args=args, kwargs=kwargs)


requires = st.fixed_dictionaries(
    {},
    optional={
        "gpus": st.integers(0, 16),
        "capability": st.sampled_from([">=7.5", ">=8.0", ">=9.0", "==8.9", "9.x", "<9.0"]),
        "vram": st.sampled_from(["16GiB", "40GiB", "80GiB", "100GiB"]),
        "dtype": st.sampled_from(["bf16", "fp8", "fp16"]),
        "packages": st.sampled_from(["torch", "lmdeploy>=0.10", "flash_attn", ["torch", "transformers"]]),
        "turbomind_kernels": st.booleans(),
    },
)
marker_sets = st.lists(
    st.one_of(
        st.integers(1, 16).map(lambda n: mark(f"gpu_num_{n}")),
        requires.map(lambda kw: mark("lm_requires", **kw)),
        st.sampled_from(["turbomind", "pytorch", "not_turbomind", "not_pytorch"]).map(mark),
        st.sampled_from([("transformers",), ("pytorch", "transformers")]).map(
            lambda n: mark("lm_backend", *n)
        ),
    ),
    max_size=3,
)
pytest_skips = st.one_of(
    st.none(), st.none(), st.builds(PytestSkip, st.just("skipped by pytest: x"), local=st.booleans())
)
suites = st.lists(st.tuples(marker_sets, st.booleans(), pytest_skips), min_size=1, max_size=25)


def judge(
    session: LmSession,
    runners: list[Runner],
    nodeid: str,
    marks: list[SimpleNamespace],
    uses_backend: bool,
    skipped: PytestSkip | None,
) -> ItemVerdicts:
    """What the plugin's collection and the fleet plugin do for one item, without pytest."""
    try:
        parsed = _one_requirement(
            parse_marks(
                marks,
                where=nodeid,
                backend_names=REGISTRY.names,
                parse_requirement=lambda a, k: parse_requirement(a, k, where=nodeid),
            ),
            nodeid,
        )
    except ValueError:  # markers that contradict each other are a usage error, not a placement
        parsed = parse_marks([], where=nodeid, backend_names=REGISTRY.names)
    bound = is_backend_bound(["lm_backend"] if uses_backend else [], parsed)
    verdicts = tuple(
        session.evaluate_on(
            r.hardware,
            facts_from_hardware(r.hardware),
            parsed,
            param=None,
            backend_bound=bound,
            release=runner_release(r.hardware, None),
        ).verdict
        for r in runners
    )
    return ItemVerdicts(nodeid, verdicts, skipped)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(runners=fleets, suite=suites, mode=st.sampled_from(["auto", "all", "none"]))
def test_the_runners_selections_partition_any_suite(
    runners: list[Runner], suite: list[Any], mode: str
) -> None:
    session = LmSession(options=Options(backend=BackendMode(mode)), registry=REGISTRY)  # type: ignore[arg-type]
    items = [
        judge(session, runners, f"t.py::test_{n}", marks, uses, skipped)
        for n, (marks, uses, skipped) in enumerate(suite)
    ]
    names = [r.name for r in runners]
    assignment = assign(items, names)
    selections = [assignment.indices(k) for k in range(len(runners))]
    event(f"runners with work: {sum(1 for s in selections if s)} of {len(runners)}")
    event(f"orphans: {'some' if assignment.orphans else 'none'}")
    # every test exactly once
    chosen = sorted(i for selection in selections for i in selection)
    assert chosen == list(range(len(items)))
    # orphans exactly on the last runner, and only tests that no runner runs
    last = len(runners) - 1
    for n, (item, placement) in enumerate(zip(items, assignment.placements, strict=True)):
        fixed_skip = item.pytest_skip is not None and not item.pytest_skip.local
        bad = any(v is not None and v.error for v in item.verdicts)
        if placement.orphan:
            assert n in selections[last] and all(v is not None for v in item.verdicts) and not fixed_skip
        elif fixed_skip or bad:
            assert placement.runner == 0
        else:  # the cheapest runner that runs it
            assert item.verdicts[placement.runner] is None
            assert all(v is not None for v in item.verdicts[: placement.runner])
    # the plan's JSON says exactly what each runner selects
    data = json.loads(json.dumps(assignment.to_json()))
    assert data["fleet"] == names
    assert data["runners"] == {name: [items[i].nodeid for i in selections[k]] for k, name in enumerate(names)}
    assert data["orphans"] == [items[i].nodeid for i in selections[last] if assignment.placements[i].orphan]
    assert set(data["reasons"]) >= set(data["orphans"])
