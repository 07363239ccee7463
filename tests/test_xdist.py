"""GPU slices per pytest-xdist worker: pure slicing, a 1,000-case simulation, and real ``-n`` runs."""

from __future__ import annotations

import argparse
import importlib
import json
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_lmbackend import xdist
from pytest_lmbackend.hardware.model import GPU
from pytest_lmbackend.hardware.visibility import Device, apply_visibility

pytest.importorskip("xdist")


def gpu(i: int, uuid: str | None = None, parent: int | None = None) -> GPU:
    return GPU(index=i, physical_index=i if parent is None else parent,
               uuid=uuid or f"GPU-{i:08x}-0000-0000-0000-{i:012x}", name="Fake GPU",
               capability=(9, 0), memory_total=80 << 30)


# --- pure functions -------------------------------------------------------------------------------


def test_slices_are_consecutive_and_disjoint() -> None:
    assert xdist.slice_devices(["a", "b", "c", "d", "e"], 2, 2) == (("a", "b"), ("c", "d"))


def test_more_workers_than_slices_hold_none() -> None:
    # LMDeploy's PR job runs its REST client tests with -n 20 on 8 GPUs: the workers beyond the slices
    # hold no GPU and run what needs none
    assert xdist.slice_devices(["a", "b", "c"], 3, 2) == (("a", "b"), (), ())
    assert xdist.held_sizes((2,), 3, 3) == (2, 0, 0)
    with pytest.raises(xdist.SliceError, match="not even one worker"):
        xdist.slice_devices(["a", "b", "c"], 2, 4)


def test_a_repeated_device_is_refused() -> None:
    with pytest.raises(xdist.SliceError, match="repeat"):
        xdist.slice_devices(["a", "a"], 2, 1)


def test_size_lists() -> None:
    assert xdist.parse_gpus_per_worker("4, 1,1") == (4, 1, 1)
    assert xdist.slice_devices(list("abcdef"), 3, (4, 1, 1)) == (("a", "b", "c", "d"), ("e",), ("f",))
    assert xdist.auto_num_workers(8, (4, 1, 1)) == 3
    with pytest.raises(xdist.SliceError, match=r"gives sizes for 3 workers, but 2 are started: use -n 3"):
        xdist.slice_devices(list("abcdef"), 2, (4, 1, 1))
    with pytest.raises(xdist.SliceError, match=r"=4,2 needs 6 GPU\(s\), but 5 are visible"):
        xdist.slice_devices(list("abcde"), 2, (4, 2))
    with pytest.raises(xdist.SliceError, match="a list of sizes is for local workers only"):
        xdist.plan_workers([("gw0", "local"), ("gw1", "ssh=a")], [gpu(0), gpu(1)], (1, 1))


def test_scheduler_fit_rule() -> None:
    from pytest_lmbackend.xdist.schedule import fits

    assert fits(0, 1, 4) and fits(4, 4, 4) and not fits(2, 1, 4)
    assert fits(8, 1, 4)  # nobody holds 8: any worker takes it and skips it with the reason


@pytest.mark.parametrize("text", ["-1", "two", "1.5", "", "2,0", "2,,1", "²"])
def test_gpus_per_worker_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a whole number of GPUs >= 1"):
        xdist.parse_gpus_per_worker(text)


def test_zero_gpus_per_worker_is_no_pinning() -> None:
    assert xdist.parse_gpus_per_worker("0") == () == xdist.parse_gpus_per_worker(" off ")


def test_auto_workers_is_gpus_divided_by_per_worker() -> None:
    assert xdist.auto_num_workers(8, 1) == 8
    assert xdist.auto_num_workers(8, 3) == 2
    assert xdist.auto_num_workers(2, 4) == 1  # the one worker then holds fewer: multi-GPU tests skip
    assert xdist.auto_num_workers(0, 1) is None  # no GPU: xdist counts CPUs


def test_tx_expansion_ids_and_hosts() -> None:
    specs = [xdist.spec_fields(s) for s in xdist.expand_tx(["2*popen", "ssh=box//id=far", "popen//env:X=1"])]
    assert xdist.worker_ids(specs) == ["gw0", "gw1", "far", "gw2"]
    assert [xdist.spec_host(f) for f in specs] == ["local", "local", "ssh=box", "local"]


def test_plan_mixes_local_slices_and_remote_ranks() -> None:
    gpus = [gpu(i) for i in range(4)]
    plan = xdist.plan_workers([("gw0", "local"), ("gw1", "ssh=a"), ("gw2", "local"), ("gw3", "ssh=a")],
                              gpus, 2)
    assert plan[0].gpus == (gpus[0].uuid, gpus[1].uuid)
    assert plan[2].gpus == (gpus[2].uuid, gpus[3].uuid)
    assert (plan[1].gpus, plan[1].rank, plan[3].rank) == (None, 0, 1)
    assert plan[3].describe() == "gw3 -> GPUs 2..3 of ssh=a"


def test_remote_slice_uses_the_remote_hosts_gpus() -> None:
    remote = [gpu(i) for i in range(3)]
    assert xdist.remote_slice(remote, 1, 1, "gw1") == (remote[1].uuid,)
    assert xdist.remote_slice(remote, 3, 1, "gw3") == ()  # beyond the slices there: holds none
    assert xdist.remote_slice([], 0, 1, "gw0") is None  # no GPU there: nothing to pin


def test_gpu_count_is_the_items_stored_requirement(pytester: pytest.Pytester) -> None:
    # what the plugin read from the markers at collection, every marker merged: a GPU fact without a
    # count is judged on one GPU (GPU 0), so the item needs one, as the evaluation says
    importlib.import_module("pytest_lmbackend.session")  # kept across the in-process runs: one stash key
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")  # gpu_num_4 is LMDeploy's
    pytester.makepyfile(test_module="""
        import pytest

        pytestmark = pytest.mark.gpu_num_4

        @pytest.mark.lm_requires(gpus=2)
        def test_four(): pass

        def test_module_count(): pass

        @pytest.mark.lm_requires(capability=">=8.0")
        def test_capability(): pass
        """)
    items, _ = pytester.inline_genitems("test_module.py")
    assert [xdist.item_gpu_count(i) for i in items] == [4, 4, 4]
    pytester.makepyfile(test_module="""
        import pytest

        @pytest.mark.lm_requires(capability=">=8.0")
        def test_capability(): pass

        @pytest.mark.lm_requires(gpus=0)
        def test_none(): pass

        def test_plain(): pass
        """)
    items, _ = pytester.inline_genitems("test_module.py")
    assert [xdist.item_gpu_count(i) for i in items] == [1, 0, 0]


def test_a_worker_whose_cuda_started_before_pinning_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(__import__("sys").modules, "torch", fake_torch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    config: Any = types.SimpleNamespace()
    with pytest.raises(pytest.UsageError, match="CUDA was initialised before its GPUs were set"):
        xdist._pin_worker(config, {"workerid": "gw1",
                                   xdist.WORKERINPUT_KEY: {"gpus": ["1"], "host": "local"}})


# --- simulation: no GPU to two workers, no masked-out GPU used ------------------------------------


def _devices(count: int, migs: int) -> list[Device]:
    devices = [Device(gpu(i)) for i in range(count)]
    for j in range(min(migs, count)):  # some GPUs in MIG mode show up as MIG devices instead
        parent = devices[j].gpu
        devices[j] = Device(gpu(j, uuid=f"MIG-{j:08x}-1111-2222-3333-{j:012x}", parent=parent.index),
                            mig_parent_uuid=parent.uuid, gpu_instance=1, compute_instance=0)
    return devices


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Device], str | None, int, int]:
    count = draw(st.integers(0, 12))
    devices = _devices(count, draw(st.integers(0, 2)))
    kind = draw(st.sampled_from(["unset", "empty", "entries"]))
    mask: str | None = None
    if kind == "empty":
        mask = ""
    elif kind == "entries":
        order = draw(st.permutations(range(count)))[: draw(st.integers(0, count))]
        entries = []
        for i in order:
            how = draw(st.sampled_from(["index", "uuid", "prefix"]))
            uuid = devices[i].gpu.uuid
            entries.append(str(i) if how == "index" else uuid if how == "uuid" else uuid[:16])
        if draw(st.booleans()):  # an entry CUDA does not know ends the list there
            entries.insert(draw(st.integers(0, len(entries))), draw(st.sampled_from(["99", "GPU-nope"])))
        mask = ",".join(entries)
    workers = draw(st.integers(1, 10))
    if draw(st.booleans()):
        sizes: tuple[int, ...] = (draw(st.integers(1, 4)),)
    else:  # one size per worker, e.g. a wide worker and narrow ones
        sizes = tuple(draw(st.lists(st.integers(1, 4), min_size=workers, max_size=workers)))
    return devices, mask, workers, sizes


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_simulated_runs_never_share_or_leak_a_gpu(
        case: tuple[list[Device], str | None, int, tuple[int, ...]]) -> None:
    devices, outer_mask, workers, sizes = case
    visible, _ = apply_visibility(devices, outer_mask)
    allowed = {g.uuid for g in visible}
    local = [(f"gw{i}", xdist.LOCAL) for i in range(workers)]
    if visible and ((len(sizes) == 1 and sizes[0] > len(visible))
                    or (len(sizes) > 1 and sum(sizes) > len(visible))):
        with pytest.raises(xdist.SliceError):
            xdist.plan_workers(local, visible, sizes)
        return
    each = xdist.held_sizes(sizes, workers, len(visible)) if visible else sizes * workers
    plan = xdist.plan_workers(local, visible, sizes)
    assert len(plan) == workers
    if not visible:  # nothing to hand out: workers keep the outer mask, which shows them nothing
        assert all(p.mask is None for p in plan)
        return
    taken: set[str] = set()
    for share, size in zip(plan, each, strict=True):
        assert share.mask is not None and len(share.gpus or ()) == size == share.size
        # what CUDA in that worker would show, given only the worker's own mask
        seen, notes = apply_visibility(devices, share.mask)
        seen_ids = {g.uuid for g in seen}
        assert len(seen) == size and (not notes or share.mask == "")  # "": a worker that holds none
        assert seen_ids <= allowed, "a GPU outside the outer CUDA_VISIBLE_DEVICES was used"
        assert not seen_ids & taken, "a GPU was given to two workers"
        taken |= seen_ids


# --- real pytest-xdist runs -----------------------------------------------------------------------

RECORDER = """
import json, os, pathlib, pytest

@pytest.mark.parametrize("i", range({count}))
def test_record(i):
    out = pathlib.Path({out!r}) / f"{{os.environ['PYTEST_XDIST_WORKER']}}-{{i}}.json"
    out.write_text(json.dumps({{
        "worker": os.environ["PYTEST_XDIST_WORKER"],
        "mask": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slice": os.environ.get("PYTEST_LM_WORKER_GPUS"),
    }}))
"""


def _profile_uuids(name: str) -> list[str]:
    from pytest_lmbackend import hardware

    return [g.uuid for g in hardware.load_profile(name).gpus]


def _run_recorded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str,
                  outer: str | None = None, count: int = 8) -> tuple[pytest.RunResult, dict[str, str | None]]:
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("PYTEST_LM_HARDWARE", raising=False)
    if outer is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", outer)
    out = pytester.mkdir("records")
    pytester.makepyfile(test_rec=RECORDER.format(count=count, out=str(out)))
    result = pytester.runpytest(*args)
    masks: dict[str, str | None] = {}
    for path in sorted(Path(out).glob("*.json")):
        record = json.loads(path.read_text())
        assert record["mask"] == record["slice"]
        # one worker, one mask, however many tests it ran
        assert masks.setdefault(record["worker"], record["mask"]) == record["mask"]
    return result, masks


def test_two_workers_each_get_their_own_gpu(pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = _profile_uuids("h100x8")
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "2", "--lm-hardware=h100x8",
                                  "--lm-gpus-per-worker=1")
    result.assert_outcomes(passed=8)
    assert masks == {"gw0": uuids[0], "gw1": uuids[1]}
    result.stdout.fnmatch_lines(["lmbackend xdist GPUs: gw0 -> GPU 0 (*); gw1 -> GPU 1 (*)"])


def test_requirements_are_judged_on_the_workers_own_gpu(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile of mixed GPUs under -n 3: each worker judges lm_requires on the GPU it holds, and
    its lm_hardware shows that GPU only, as a real probe in that worker would."""
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("PYTEST_LM_HARDWARE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makefile(".toml", mixed=(
        'cuda = "12.4"\n'
        '[[gpus]]\nname = "A"\ncapability = "9.0"\nmemory_total = "40GiB"\n'
        '[[gpus]]\nname = "B"\ncapability = "8.0"\nmemory_total = "20GiB"\n'
        '[[gpus]]\nname = "C"\ncapability = "8.6"\nmemory_total = "24GiB"\n'))
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.parametrize("i", range(9))
        @pytest.mark.lm_requires(capability=">=9.0")
        def test_hopper(i, lm_hardware):
            assert [g.name for g in lm_hardware.gpus] == ["A"], os.environ["PYTEST_XDIST_WORKER"]
        """
    )
    result = pytester.runpytest("-n", "3", "--lm-hardware=mixed.toml", "--lm-gpus-per-worker=1", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("passed", 0) >= 1
    assert outcomes.get("skipped", 0) >= 1  # 9 tests over 3 workers: the 8.0 and 8.6 ones skip theirs
    result.stdout.re_match_lines([r"SKIPPED \[\d+\] .*needs compute capability >= 9\.0; "
                                  r"GPU 0 \(physical [12], [BC]\) has 8\.[06]"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_four_workers_under_an_outer_mask(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = _profile_uuids("h100x8")
    # the runner itself was given GPUs 6, 1, 3, 4, 7 (by index and by UUID) in that order
    outer = f"6,{uuids[1]},3,4,{uuids[7]}"
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "4", "--lm-hardware=h100x8",
                                  "--lm-gpus-per-worker=1", outer=outer)
    result.assert_outcomes(passed=8)
    assert masks == {"gw0": uuids[6], "gw1": uuids[1], "gw2": uuids[3], "gw3": uuids[4]}


def test_auto_gives_one_worker_per_slice(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = _profile_uuids("h100x8")
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "auto", "--lm-gpus-per-worker=3",
                                  "--lm-hardware=h100x8")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["created: 2/2 workers"])
    assert masks == {"gw0": ",".join(uuids[0:3]), "gw1": ",".join(uuids[3:6])}


def test_auto_wins_over_the_cpu_count_whatever_the_load_order(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    result, masks = _run_recorded(pytester, monkeypatch, "-p", "pytest_lmbackend.plugin",
                                  "-p", "pytest_lmbackend.xdist", "-p", "xdist.plugin",
                                  "-n", "auto", "--lm-hardware=h100x8", "--lm-gpus-per-worker=8", count=2)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["created: 1/1 worker"])  # not one per CPU
    assert len(masks) == 1


def test_users_auto_count_is_respected(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "1")
    result, _ = _run_recorded(pytester, monkeypatch, "-n", "auto", "--lm-hardware=h100x8", count=2)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["created: 1/1 worker"])


def test_ini_key_sets_gpus_per_worker(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = _profile_uuids("h100x4")
    pytester.makeini("[pytest]\nlm_gpus_per_worker = 2\n")
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "2", "--lm-hardware=h100x4", count=4)
    result.assert_outcomes(passed=4)
    assert masks == {"gw0": ",".join(uuids[0:2]), "gw1": ",".join(uuids[2:4])}


def test_workers_beyond_the_slices_hold_no_gpu(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    uuids = _profile_uuids("h100x8")
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "4", "--lm-gpus-per-worker=2",
                                  "--lm-hardware=h100x8", outer="0,1,2,3,4")
    result.assert_outcomes(passed=8)  # two slices of two in five GPUs; two workers hold none
    held = sorted(masks.values())
    assert held == ["", "", f"{uuids[0]},{uuids[1]}", f"{uuids[2]},{uuids[3]}"], masks


def test_a_test_that_changes_its_workers_mask_is_restored_with_a_warning(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile(
        """
        import os

        def test_grabs_every_gpu():
            os.environ["CUDA_VISIBLE_DEVICES"] = "0,1,2,3"

        def test_sees_its_own_again():
            assert os.environ["CUDA_VISIBLE_DEVICES"] == os.environ["PYTEST_LM_WORKER_GPUS"]

        def test_polite(monkeypatch):
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
        """
    )
    result = pytester.runpytest("-n", "1", "--lm-hardware=h100x4", "--lm-gpus-per-worker=1")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines([
        "*GPUMaskWarning: test_*.py::test_grabs_every_gpu left CUDA_VISIBLE_DEVICES='0,1,2,3' on xdist "
        "worker gw0, which holds *: restored it*",
    ])


def test_an_explicit_tx_mask_is_refused(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = _run_recorded(pytester, monkeypatch, "--tx", "popen//env:CUDA_VISIBLE_DEVICES=0",
                              "--dist=load", "--lm-hardware=h100x2", "--lm-gpus-per-worker=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tx sets env:CUDA_VISIBLE_DEVICES itself*"])


def test_without_gpus_workers_are_left_alone(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "2", "--lm-hardware=cpu",
                                  "--lm-gpus-per-worker=1", count=2)
    result.assert_outcomes(passed=2)
    assert set(masks.values()) == {None}
    result.stdout.fnmatch_lines(["lmbackend xdist: no GPU visible; workers are not pinned"])


def test_on_an_ascend_runner_the_header_says_why_workers_are_not_pinned(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, masks = _run_recorded(pytester, monkeypatch, "-n", "2", "--lm-hardware=ascend-910bx8",
                                  "--lm-gpus-per-worker=1", count=2)
    result.assert_outcomes(passed=2)
    assert set(masks.values()) == {None}
    result.stdout.fnmatch_lines(["lmbackend xdist: no NVIDIA GPU visible, 8 Ascend NPUs: pinning sets "
                                 "CUDA_VISIBLE_DEVICES only; workers are not pinned"])


def test_works_with_xdist_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-gpus-per-worker=2", "--lm-hardware=h100x2")
    result.assert_outcomes(passed=1)


def test_too_wide_names_worker_slice_and_option() -> None:
    assert xdist.too_wide(2, "GPU-a,GPU-b", "gw1", 2) is None
    assert xdist.too_wide(4, "GPU-a", "gw1", 1) == (
        "needs 4 GPUs; xdist worker gw1 holds 1 (GPU-a) with --lm-gpus-per-worker=1: "
        "run it with --lm-gpus-per-worker=4, or without -n")
    assert xdist.too_wide(4, "GPU-a", "gw1", "4,1", dist="loadfile") == (
        "needs 4 GPUs; xdist worker gw1 holds 1 (GPU-a) with --lm-gpus-per-worker=4,1: size lists send "
        "wide tests to wide workers only under --dist load (not loadfile); or run it with "
        "--lm-gpus-per-worker=4, or without -n")
    # an isolated child: of a run without -n it holds every GPU there is; under xdist, its worker's
    assert xdist.too_wide(16, "GPU-a,GPU-b", None, 1) == (
        "needs 16 GPUs; this isolated process was given 2 (GPU-a,GPU-b), all there are")
    assert xdist.too_wide(2, "GPU-a", None, 1, outer_worker="gw3").startswith(
        "needs 2 GPUs; the isolated process of xdist worker gw3 holds 1 (GPU-a)")


WIDE = """
import os, pytest

@pytest.mark.lm_requires(gpus=2)
def test_two_gpus():
    assert len(os.environ["CUDA_VISIBLE_DEVICES"].split(",")) == 2

@pytest.mark.gpu_num_4
def test_four_gpus():
    pass

def test_no_gpu():
    pass
"""


def test_tests_wider_than_a_worker_skip_with_the_fix(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile(WIDE)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")  # its gpu_num_4 is LMDeploy's
    result = pytester.runpytest("-n", "2", "--lm-hardware=h100x4", "--lm-gpus-per-worker=1", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "*needs 2 GPUs; xdist worker gw? holds 1 (GPU-*) with --lm-gpus-per-worker=1: run it with "
        "--lm-gpus-per-worker=2, or without -n*",
    ])
    result.stdout.fnmatch_lines([
        "lmbackend xdist: 2 test(s) need more GPUs than a worker holds (up to 4); run them with "
        "--lm-gpus-per-worker=4, or without -n",
    ])
    result = pytester.runpytest("-n", "2", "--lm-hardware=h100x4", "--lm-gpus-per-worker=2", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result = pytester.runpytest("-n", "1", "--lm-hardware=h100x4", "--lm-gpus-per-worker=2",
                                "--lm-require=gpu")
    result.assert_outcomes(passed=2, errors=1)  # at setup, as every unmet --lm-require
    result.stdout.fnmatch_lines(["*needs 4 GPUs; xdist worker gw0 holds 2 * (--lm-require=gpu)*"])


MIXED = """
import os, pathlib, pytest

def record(name):
    pathlib.Path({out!r}, name).write_text(
        os.environ["PYTEST_XDIST_WORKER"] + " " + os.environ["CUDA_VISIBLE_DEVICES"])

@pytest.mark.parametrize("i", range(6))
def test_narrow(i):
    record(f"narrow{{i}}")

@pytest.mark.parametrize("i", range(2))
@pytest.mark.lm_requires(gpus=4)
def test_four(i):
    assert len(os.environ["CUDA_VISIBLE_DEVICES"].split(",")) == 4
    record(f"four{{i}}")

@pytest.mark.gpu_num_2
def test_two():
    record("two")

@pytest.mark.lm_requires(gpus=8)
def test_eight():
    pass
"""


def test_multi_gpu_tests_go_to_the_wide_worker(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    uuids = _profile_uuids("h100x6")
    out = pytester.mkdir("where")
    pytester.makepyfile(MIXED.format(out=str(out)))
    result = pytester.runpytest("-n", "auto", "--lm-gpus-per-worker=4,1,1", "--lm-hardware=h100x6", "-rs",
                                "-o", "lm_markers=lmdeploy")
    result.assert_outcomes(passed=9, skipped=1)
    result.stdout.fnmatch_lines(["created: 3/3 workers", "*needs 8 GPUs; xdist worker gw? holds *"])
    where = {p.name: p.read_text().split() for p in out.iterdir()}
    wide = ",".join(uuids[:4])
    for name in ("four0", "four1", "two"):
        assert where[name] == ["gw0", wide]
    assert {w for name, (w, _) in where.items() if name.startswith("narrow")} <= {"gw0", "gw1", "gw2"}
    assert where.keys() >= {f"narrow{i}" for i in range(6)}


def test_a_restarted_worker_keeps_the_crashed_ones_width(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """xdist gives the replacement a new id; its share (and width) is the crashed worker's, so 2-GPU
    tests still go to the 2-GPU worker, not to the 1-GPU replacement."""
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    monkeypatch.delenv("PYTEST_LM_HARDWARE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makepyfile(
        """
        import os, time, pytest

        @pytest.mark.parametrize("i", range(2))
        def test_a(i, worker_id):
            if worker_id == "gw1":
                os._exit(3)
            time.sleep(1)

        @pytest.mark.gpu_num_2
        @pytest.mark.parametrize("i", range(8))
        def test_wide(i):
            time.sleep(0.5)
        """
    )
    result = pytester.runpytest("-n", "2", "--lm-hardware=h100x8", "--lm-gpus-per-worker=2,1", "-rs",
                                "-o", "lm_markers=lmdeploy")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 8


def test_sizes_that_cannot_matter_or_cannot_fit_are_said_plainly() -> None:
    from pytest_lmbackend.hardware import load_profile
    from pytest_lmbackend.xdist.slicing import LOCAL, SliceError, plan_workers

    # no GPU: nothing is pinned, so a size list from a shared ini does not have to match -n
    plans = plan_workers([("gw0", LOCAL), ("gw1", LOCAL)], [], (2, 1, 1))
    assert [p.gpus for p in plans] == [None, None]
    too_many = r"--lm-gpus-per-worker=9 is more GPUs than are visible \(8\), so not even one worker"
    with pytest.raises(SliceError, match=too_many):
        plan_workers([("gw0", LOCAL)], load_profile("h100x8").gpus, (9,))
