"""Tests of ``lm_requires`` parsing and its evaluation against fake hardware."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_lmbackend.hardware import GPU, Hardware, load_profile
from pytest_lmbackend.requirements import (
    DISTRIBUTED_LAYOUTS,
    CapabilitySpec,
    Layout,
    Requirement,
    RequirementError,
    combine,
    distributed_layout,
    evaluate,
    layout_degrees,
    parse_capability_spec,
    parse_requirement,
)
from pytest_lmbackend.verdict import Verdict

WHERE = "tests/test_x.py::test_y"
GiB = 1024**3


def req(**kwargs: object) -> Requirement:
    return parse_requirement((), kwargs, where=WHERE)


def hw(name: str, **packages: str) -> Hardware:
    return load_profile(name, local_packages=packages)


def test_the_reason_names_wanted_found_and_device() -> None:
    skip = evaluate(req(capability=">=9.0"), hw("a100-40gb"))
    assert skip == Verdict("capability",
                           "needs compute capability >= 9.0; GPU 0 (NVIDIA A100-SXM4-40GB) has 8.0")


@pytest.mark.parametrize(("spec", "cap", "ok"), [
    (">=8.0", (8, 0), True), (">=8.0", (7, 5), False), ("==9.0", (9, 0), True), ("==9.0", (9, 1), False),
    ("9.x", (9, 0), True), ("9.x", (10, 0), False), ("8.0", (8, 0), True), ("8.0", (8, 6), False),
    (">7.5", (8, 0), True), ("<9.0", (9, 0), False), ("!=8.6", (8, 9), True), (">=8.0,<10.0", (12, 0), False),
    ("  >= 8.9 ", (8, 9), True),
])
def test_capability_specs(spec: str, cap: tuple[int, int], ok: bool) -> None:
    assert all(s.matches(cap) for s in parse_capability_spec(spec)) is ok


@given(st.tuples(st.integers(0, 12), st.integers(0, 9)), st.tuples(st.integers(0, 12), st.integers(0, 9)))
def test_capability_comparisons_agree_with_tuple_order(want: tuple[int, int], have: tuple[int, int]) -> None:
    (spec,) = parse_capability_spec(f">={want[0]}.{want[1]}")
    assert spec.matches(have) is (have >= want)
    assert spec == CapabilitySpec(">=", want)


@pytest.mark.parametrize(("kwargs", "key", "fragment"), [
    ({"gpu": 2}, "gpu", "did you mean 'gpus'"),
    ({"gpus": -1}, "gpus", "whole number"),
    ({"gpus": True}, "gpus", "whole number"),
    ({"gpus": "2"}, "gpus", "whole number"),
    ({"nodes": 0}, "nodes", "whole number of nodes"),
    ({"nodes": True}, "nodes", "whole number of nodes"),
    ({"nodes": 2.0}, "nodes", "whole number of nodes"),
    ({"node": 2}, "node", "did you mean 'nodes'"),
    ({"capability": "sm90"}, "capability", "'sm90'"),
    ({"capability": 8.0}, "capability", "must be a string"),
    ({"capability": ">=9.x"}, "capability", "takes no comparison"),
    ({"vram": "lots"}, "vram", "'lots'"),
    ({"free_vram": -1}, "free_vram", "negative"),
    ({"dtype": "int3"}, "dtype", "unknown dtype 'int3'"),
    ({"dtype": 16}, "dtype", "dtype name"),
    ({"packages": "flash_attn[cuda]"}, "packages", "only a name and a version range"),
    ({"packages": "not a name!"}, "packages", "cannot read package"),
    ({"packages": 3}, "packages", "package name"),
    ({"turbomind_kernels": "yes"}, "turbomind_kernels", "True"),
])
def test_malformed_markers_name_the_test_key_and_value(kwargs: dict[str, object], key: str,
                                                       fragment: str) -> None:
    with pytest.raises(RequirementError) as info:
        parse_requirement((), kwargs, where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert info.value.key == key and info.value.where == WHERE
    assert f"lm_requires({key}=" in message and fragment in message


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(RequirementError, match="keywords only"):
        parse_requirement((2,), {}, where=WHERE)
    assert isinstance(RequirementError("x", where=WHERE), ValueError)


def test_parsed_values() -> None:
    r = req(gpus=2, capability=[">=8.0", "<10.0"], vram="40GiB", free_vram=10**9, dtype=["bfloat16", "bf16"],
            packages=["Flash_Attn", "lmdeploy>=0.10", "lmdeploy.turbomind"], turbomind_kernels=True)
    assert r.gpus == 2 and r.vram == 40 * GiB and r.free_vram == 10**9
    assert [str(s) for s in r.capability] == [">= 8.0", "< 10.0"]
    assert r.dtypes == ("bf16",)
    assert [str(p) for p in r.packages] == ["flash-attn", "lmdeploy>=0.10", "lmdeploy.turbomind"]
    assert r.where == WHERE


def test_gpu_count_defaults() -> None:
    assert req().gpu_count == 0
    assert req(packages="torch").gpu_count == 0
    assert req(dtype="fp8").gpu_count == 1
    assert req(gpus=0, capability=">=8.0").gpu_count == 0
    assert evaluate(req(), hw("cpu")) is None


@pytest.mark.parametrize(("profile", "kwargs", "kind", "reason"), [
    ("cpu", {"gpus": 1}, "gpu", "needs 1 GPU; profile 'cpu' has none"),
    ("h100", {"gpus": 2}, "gpu", "needs 2 GPUs; found 1: GPU 0 (NVIDIA H100 80GB HBM3)"),
    ("t4", {"vram": "20GiB"}, "vram", "needs 20 GiB of GPU memory; GPU 0 (Tesla T4) has 15 GiB"),
    ("h100", {"free_vram": "80GiB"}, "free_vram",
     "needs 80 GiB of free GPU memory; GPU 0 (NVIDIA H100 80GB HBM3) has 79.18 GiB free of 79.65 GiB"),
    ("v100", {"dtype": "bf16"}, "dtype",
     "needs native bf16 (compute capability >= 8.0); GPU 0 (Tesla V100-SXM2-32GB) has 7.0"),
    ("a100-40gb", {"dtype": "fp8"}, "dtype",
     "needs native fp8 (compute capability >= 8.9); GPU 0 (NVIDIA A100-SXM4-40GB) has 8.0"),
    ("h100", {"packages": ["flash_attn"]}, "packages",
     "needs package flash-attn; not installed in this interpreter (profile 'h100' states no [packages])"),
    ("h200", {"turbomind_kernels": False}, "turbomind_kernels",
     "needs a GPU without TurboMind kernels; GPU 0 (NVIDIA H200) has 9.0 and CUDA 13.0, "
     "which TurboMind builds"),
])
def test_skips_on_shipped_profiles(profile: str, kwargs: dict[str, object], kind: str, reason: str) -> None:
    skip = evaluate(req(**kwargs), hw(profile))
    assert skip is not None and skip.kind == kind and skip.reason.startswith(reason)


@pytest.mark.parametrize(("profile", "kwargs"), [
    ("h100x8", {"gpus": 8, "capability": "9.x", "vram": "80GB", "dtype": ["bf16", "fp8"]}),
    ("a100-80gbx8", {"gpus": 4, "capability": ">=8.0", "dtype": "bf16", "turbomind_kernels": True}),
    ("b200x8", {"capability": ">=10.0", "turbomind_kernels": True}),
    ("v100", {"turbomind_kernels": True, "dtype": "fp16"}),
    ("rtx5090", {"turbomind_kernels": True}),
])
def test_met_requirements_run(profile: str, kwargs: dict[str, object]) -> None:
    assert evaluate(req(**kwargs), hw(profile)) is None


def test_turbomind_kernels_follow_cuda_and_installed_release(tmp_path: object) -> None:
    v100 = hw("v100", lmdeploy="0.18.0")
    cuda13 = Hardware(gpus=v100.gpus, cuda="13.0", source="profile", profile="v100-cu13",
                      packages={"lmdeploy": "0.18.0"})
    skip = evaluate(req(turbomind_kernels=True), cuda13)
    assert skip is not None and skip.kind == "turbomind_kernels"
    assert "GPU 0 (Tesla V100-SXM2-32GB)" in skip.reason and "CUDA < 13.0" in skip.reason
    b200 = Hardware(gpus=hw("b200x8").gpus, cuda="12.8", source="profile", profile="b",
                    packages={"lmdeploy": "0.12.3"})
    skip = evaluate(req(turbomind_kernels=True), b200)
    assert skip is not None and "LMDeploy 0.12.3" in skip.reason


def test_packages_with_versions() -> None:
    machine = hw("h100", lmdeploy="0.10.2", torch="2.11.0+cu130", **{"lmdeploy.turbomind": "0.10.2"})
    assert evaluate(req(packages=["lmdeploy>=0.10", "torch>=2.8"]), machine) is None
    assert evaluate(req(packages="lmdeploy.turbomind"), machine) is None
    skip = evaluate(req(packages="lmdeploy>=0.14"), machine)
    assert skip == Verdict("packages", "needs package lmdeploy>=0.14; found lmdeploy 0.10.2 in this "
                                       "interpreter (profile 'h100' states no [packages])")
    odd = hw("h100", lmdeploy="weird-build")
    skip = evaluate(req(packages="lmdeploy>=0.14"), odd)
    assert skip is not None and "not a PEP 440 version" in skip.reason


def test_evaluated_on_the_gpus_the_test_gets() -> None:
    mixed = Hardware(gpus=(
        GPU(0, 0, "GPU-a", "NVIDIA A100-SXM4-40GB", (8, 0), 40 * GiB, 40 * GiB),
        GPU(1, 3, "GPU-b", "NVIDIA H100 80GB HBM3", (9, 0), 80 * GiB, 80 * GiB),
    ), cuda="13.0", source="nvml")
    r = req(capability=">=9.0")
    assert evaluate(r, mixed, gpus=[1]) is None
    skip = evaluate(r, mixed, gpus=[0, 1])
    assert skip is not None and "GPU 0 (NVIDIA A100-SXM4-40GB) has 8.0" in skip.reason
    skip = evaluate(req(gpus=2, capability=">=9.0"), mixed, gpus=[1, 0])
    assert skip is not None and "GPU 0" in skip.reason
    # the physical index is named when it differs from the logical one
    skip = evaluate(req(capability="==8.0"), mixed, gpus=[1])
    assert skip is not None and "GPU 1 (physical 3, NVIDIA H100 80GB HBM3) has 9.0" in skip.reason
    skip = evaluate(req(gpus=2), mixed, gpus=[1])
    assert skip is not None
    assert skip.reason == "needs 2 GPUs; this test was given 1: GPU 1 (physical 3, NVIDIA H100 80GB HBM3)"
    skip = evaluate(req(gpus=1), mixed, gpus=[])
    assert skip == Verdict("gpu", "needs 1 GPU; this test was given none")


def test_no_gpu_reasons_say_why() -> None:
    none = Hardware(source="none", warnings=("nvidia-smi: not found on PATH",))
    found = evaluate(req(gpus=1), none)
    assert found == Verdict("gpu", "needs 1 GPU; found none (no NVIDIA driver nor Ascend npu-smi answered)")
    hidden = Hardware(source="nvml", warnings=("CUDA_VISIBLE_DEVICES is empty: all 8 GPU(s) hidden",))
    skip = evaluate(req(gpus=1), hidden)
    assert skip is not None and "CUDA_VISIBLE_DEVICES is empty" in skip.reason


def test_unknown_free_memory_is_not_enough() -> None:
    machine = Hardware(gpus=(GPU(0, 0, "GPU-a", "X", (9, 0), 80 * GiB, None),), source="nvidia-smi")
    skip = evaluate(req(free_vram="1GiB"), machine)
    assert skip is not None and "has unknown free" in skip.reason


def test_combine() -> None:
    merged = combine([req(gpus=2, capability=">=8.0"), req(gpus=4, vram="10GiB"), req(capability=">=8.0")])
    assert merged.gpus == 4 and merged.vram == 10 * GiB and len(merged.capability) == 1
    assert merged.where == WHERE
    with pytest.raises(RequirementError, match="turbomind_kernels=True and turbomind_kernels=False both"):
        combine([req(turbomind_kernels=True), req(turbomind_kernels=False)])
    assert combine([]) == Requirement()


def test_sizes_that_round_alike_are_shown_exactly() -> None:
    h100 = load_profile("h100", local_packages={})
    skip = evaluate(req(vram="81560MiB"), h100)
    assert skip is not None and skip.reason == (
        "needs 79.65 GiB (85,521,858,560 bytes) of GPU memory; GPU 0 (NVIDIA H100 80GB HBM3) has "
        "79.65 GiB (85,520,809,984 bytes)")
    skip = evaluate(req(vram="90GiB"), h100)
    assert skip is not None and "(" not in skip.reason.split(";")[0]  # plainly different: no bytes


def test_a_profile_stating_its_packages_is_named_as_their_source(tmp_path: Path) -> None:
    path = tmp_path / "runner.toml"
    path.write_text("[packages]\nlmdeploy = '0.18.0'\n[[gpus]]\nname = 'X'\ncapability = '9.0'\n"
                    "memory_total = '80GiB'\n")
    skip = evaluate(req(packages=["flash_attn"]), load_profile(str(path)))
    assert skip is not None and skip.reason == "needs package flash-attn; not installed in profile 'runner'"


def cluster(tmp_path: Path, nodes: int, gpus: int, *, name: str = "cluster") -> Hardware:
    """A profile of ``nodes`` nodes with ``gpus`` H100s each."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f"nodes = {nodes}\n[packages]\n[[gpus]]\nname = 'NVIDIA H100 80GB HBM3'\n"
                    f"capability = '9.0'\nmemory_total = '80GiB'\ncount = {gpus}\n")
    return load_profile(str(path))


def test_nodes_are_asked_and_judged_against_the_profile(tmp_path: Path) -> None:
    assert req(nodes=2).nodes == 2 and req(nodes=2).gpu_count == 0
    skip = evaluate(req(nodes=2, gpus=8), hw("h100x8"))
    assert skip == Verdict("nodes", "needs 2 nodes; profile 'h100x8' has 1 node of 8 GPUs")
    assert evaluate(req(nodes=2, gpus=8), cluster(tmp_path, 2, 8)) is None
    skip = evaluate(req(nodes=2, gpus=8), cluster(tmp_path, 2, 4))
    assert skip is not None and skip.kind == "gpu"  # each node must hold the GPUs asked
    assert evaluate(req(nodes=3), cluster(tmp_path, 2, 8)) == Verdict(
        "nodes", "needs 3 nodes; profile 'cluster' has 2 nodes of 8 GPUs")


def test_a_real_runner_is_one_node_unless_the_job_says_otherwise() -> None:
    machine = Hardware(gpus=tuple(GPU(i, i, f"GPU-{i}", "NVIDIA H100 80GB HBM3", (9, 0), 80 * GiB)
                                  for i in range(8)), source="nvml")
    skip = evaluate(distributed_layout("tp16"), machine)
    assert skip is not None and skip.reason == (
        "needs layout tp16: 16 GPUs in all, i.e. 2 nodes of 8 GPUs; this job has 1 node of 8 GPUs "
        "(a multi-node job says how many in $PYTEST_LM_NODES)")
    assert evaluate(distributed_layout("tp16"), Hardware(gpus=machine.gpus, source="nvml", nodes=2)) is None


# How many GPUs each layout of LMDeploy's autotest (v0.16.0) occupies, and the engines it runs them on
# (autotest/configs/*.yml rows under `h` and `ascend`): derived from each engine's own rule below.
LAYOUT_GPUS = {"tp16": 16, "dpep8": 8, "dpep16": 16, "dpep32": 32, "dp4ep8": 8, "tp2dp4ep8": 8, "cp2tp8": 8}
LAYOUT_ENGINES = {"tp16": ("pytorch",), "dpep8": ("pytorch",), "dpep16": ("pytorch",), "dpep32": ("pytorch",),
                  "dp4ep8": ("pytorch",), "tp2dp4ep8": ("pytorch", "turbomind"), "cp2tp8": ("turbomind",)}


_ENGINE_GPUS = """
import json, sys
from lmdeploy.pytorch.config import DistConfig
from lmdeploy.turbomind.parallel_config import derive_parallel_config
out = {}
for name, (degrees, engines) in json.loads(sys.argv[1]).items():
    d = {k: degrees.get(k, 1) for k in ("tp", "dp", "ep", "cp")}
    got = {}
    if "pytorch" in engines:
        got["pytorch"] = DistConfig(dp=d["dp"], ep=d["ep"], tp=d["tp"]).world_size
    if "turbomind" in engines:
        got["turbomind"] = derive_parallel_config(d["dp"], d["tp"], d["ep"], d["cp"], None).device_num
    out[name] = got
print(json.dumps(out))
"""


def test_layout_sizes_are_what_lmdeploy_itself_allots() -> None:
    """Each engine of LMDeploy 0.18.0 asked how many GPUs it gives each layout it runs (the
    differential environment, see ``pytest_lmbackend.oracle``; skipped where it was not built)."""
    from pytest_lmbackend.oracle.venv import is_ready, spec_for, venv_python

    spec = spec_for("0.18.0")
    if not is_ready(spec):
        pytest.skip("the LMDeploy 0.18.0 environment is not built "
                    "(python -m pytest_lmbackend.oracle setup 0.18.0)")
    asked = {name: (layout_degrees(name), LAYOUT_ENGINES[name]) for name in DISTRIBUTED_LAYOUTS}
    proc = subprocess.run([str(venv_python(spec)), "-c", _ENGINE_GPUS, json.dumps(asked)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in DISTRIBUTED_LAYOUTS:
        assert set(answers[name].values()) == {LAYOUT_GPUS[name]}, (name, answers[name])


@pytest.mark.parametrize("name", DISTRIBUTED_LAYOUTS)
def test_lmdeploy_distributed_layouts(name: str) -> None:
    wanted = LAYOUT_GPUS[name]
    assert distributed_layout(name) == distributed_layout(f"gpu_num_distributed_{name}")
    assert distributed_layout(name).layouts == (Layout(name, wanted),)
    assert distributed_layout(name).gpu_count == 1  # asks for GPUs even where no count is given


def test_layouts_on_single_and_multi_node_profiles(tmp_path: Path) -> None:
    node = hw("h100x8")
    assert evaluate(distributed_layout("tp2dp4ep8"), node) is None  # 8 GPUs fit one node of 8
    skip = evaluate(distributed_layout("tp16"), node)
    assert skip == Verdict("nodes", "needs layout tp16: 16 GPUs in all, i.e. 2 nodes of 8 GPUs; "
                                 "profile 'h100x8' has 1 node of 8 GPUs")
    skip = evaluate(distributed_layout("dpep32"), cluster(tmp_path, 2, 8))
    assert skip == Verdict("nodes", "needs layout dpep32: 32 GPUs in all, i.e. 4 nodes of 8 GPUs; "
                                 "profile 'cluster' has 2 nodes of 8 GPUs")
    assert evaluate(distributed_layout("dpep32"), cluster(tmp_path, 4, 8)) is None
    assert evaluate(distributed_layout("tp16"), cluster(tmp_path, 1, 16)) is None  # one node of 16
    # spread evenly: 16 GPUs over nodes of 6 take 4 nodes of 4, not 3 nodes
    assert evaluate(distributed_layout("tp16"), cluster(tmp_path, 3, 6)) is not None
    assert evaluate(distributed_layout("tp16"), cluster(tmp_path, 4, 6)) is None
    assert evaluate(distributed_layout("tp16"), hw("cpu")) == Verdict(
        "gpu", "needs layout tp16 (16 GPUs in all); profile 'cpu' has none")


def test_layout_gpu_facts_hold_on_every_gpu_of_the_share(tmp_path: Path) -> None:
    path = tmp_path / "mixed.toml"
    path.write_text("nodes = 2\n[[gpus]]\nname = 'NVIDIA H100 80GB HBM3'\ncapability = '9.0'\n"
                    "memory_total = '80GiB'\ncount = 7\n[[gpus]]\nname = 'NVIDIA A100-SXM4-80GB'\n"
                    "capability = '8.0'\nmemory_total = '80GiB'\n")
    mixed = load_profile(str(path))
    both = combine([distributed_layout("tp16"), req(capability=">=9.0")])
    skip = evaluate(both, mixed)
    assert skip is not None and skip.kind == "capability" and "GPU 7 (NVIDIA A100-SXM4-80GB)" in skip.reason
    # 14 GPUs take 7 of each node: the A100 is not used
    assert evaluate(combine([distributed_layout("tp14"), req(capability=">=9.0")]), mixed) is None


@pytest.mark.parametrize("bad", ["", "tp", "tp0", "tp2tp4", "dpep8dp2", "xx16", "tp16 ", "tp١٦",
                                 "gpu_num_distributed_"])
def test_unreadable_layouts_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="layout"):
        distributed_layout(bad)


def test_combine_keeps_the_largest_node_count_and_every_layout() -> None:
    merged = combine([req(nodes=2), distributed_layout("tp16"), distributed_layout("dpep8"),
                      distributed_layout("tp16"), req(nodes=3, gpus=1)])
    assert merged.nodes == 3 and merged.gpus == 1
    assert merged.layouts == (Layout("tp16", 16), Layout("dpep8", 8))
