"""Ascend NPUs: ``npu-smi info`` read in its real layouts, ``ASCEND_RT_VISIBLE_DEVICES``, NPU profiles,
and requirements, reports and backends on an NPU runner."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_lmbackend.backends import build_registry, facts_from_hardware
from pytest_lmbackend.hardware import NPU, Hardware, ProfileError, load_profile, nvml, probe
from pytest_lmbackend.hardware.npusmi import parse_npu_smi
from pytest_lmbackend.hardware.visibility import apply_npu_visibility
from pytest_lmbackend.report import text_lines, to_json
from pytest_lmbackend.requirements import Requirement, distributed_layout, evaluate, parse_requirement
from pytest_lmbackend.verdict import Verdict

SHAPES = Path(__file__).resolve().parent.parent / "fixtures" / "npu-smi"
MiB, GiB = 1024**2, 1024**3


def shape(name: str) -> str:
    return (SHAPES / name).read_text()


def req(**kwargs: object) -> Requirement:
    return parse_requirement((), kwargs, where="t.py::test_x")


# -- npu-smi info in its layouts --------------------------------------------------------------------

def test_atlas_a2_910b3_node() -> None:
    view = parse_npu_smi(shape("910b3-x8.txt"))
    assert view.driver == "24.1.0.3" and view.warnings == ()
    assert [n.index for n in view.npus] == list(range(8))  # the process table's rows are not chips
    assert {n.name for n in view.npus} == {"Ascend910B3"}
    first, busy = view.npus[0], view.npus[1]
    assert first == NPU(0, 0, "Ascend910B3", 65536 * MiB, (65536 - 3402) * MiB, "0000:c1:00.0")
    assert busy.memory_free == (65536 - 54718) * MiB  # "54718/ 65536": no space before the slash


def test_atlas_a3_lists_two_chips_a_card() -> None:
    view = parse_npu_smi(shape("ascend910-a3.txt"))
    assert view.driver == "26.0.rc2" and view.warnings == ()
    assert [(n.index, n.name, n.pci_bus_id) for n in view.npus] == [
        (0, "Ascend910", "0000:9d:00.0"), (1, "Ascend910", "0000:9f:00.0"),
        (2, "Ascend910", "0000:99:00.0"), (3, "Ascend910", "0000:9b:00.0")]
    assert view.npus[1].memory_free == (65536 - 2871) * MiB


def test_310p3_has_one_memory_column_and_no_hbm() -> None:
    view = parse_npu_smi(shape("310p3.txt"))
    assert view.driver is None and view.warnings == ()
    assert [(n.name, n.memory_total, n.memory_free) for n in view.npus] == [
        ("Ascend310P3", 21534 * MiB, (21534 - 1072) * MiB),
        ("Ascend310P3", 21534 * MiB, (21534 - 1068) * MiB)]


def test_910b4_with_redacted_bus_ids_and_a_warning() -> None:
    view = parse_npu_smi(shape("910b4-1.txt"))
    assert [(n.name, n.pci_bus_id) for n in view.npus] == [("Ascend910B4-1", None), ("Ascend910B4-1", None)]
    assert view.warnings == ("npu-smi: NPU 1 (Ascend910B4-1) health is Warning",)


def test_the_newer_cell_layout() -> None:
    view = parse_npu_smi(shape("950dt.txt"))
    assert [(n.index, n.name, n.memory_total) for n in view.npus] == [
        (0, "Ascend950DT", 98304 * MiB), (1, "Ascend950DT", 98304 * MiB)]


def test_odd_output_becomes_notes_not_errors() -> None:
    view = parse_npu_smi("| 0   910B3 | OK | 90 40 0 / 0 |\n| 0 | 0000:01:00.0 | NA NA |\n"
                         "| what is this |\n| 1   910B3 | OK | 90 40 0 / 0 |\n")
    assert [n.memory_total for n in view.npus] == [0]
    assert [w.split(":")[1].split("(")[0].strip() for w in view.warnings] == [
        "memory of NPU 0", "line 3 is not a chip row", "the last chip"]
    assert parse_npu_smi("").npus == () and parse_npu_smi("\x00\xff garbage").npus == ()


# -- ASCEND_RT_VISIBLE_DEVICES ----------------------------------------------------------------------

EIGHT = parse_npu_smi(shape("910b3-x8.txt")).npus


@pytest.mark.parametrize(("value", "seen", "noted"), [
    (None, list(range(8)), False),
    ("1", [1], False),
    ("1,2,3", [1, 2, 3], False),
    ("1,3,8", [1, 3], True),      # CANN's own example: 8 names no device, 1 and 3 are read
    ("1, 2,3", [1], True),        # CANN's own example: the space ends the list
    ("3,1", [3], True),           # ascending order only
    ("1,1", [1], True),
    ("", [], True),
    ("٠,١", [], True),            # non-ASCII digits are "other characters"
    ("+1", [], True),
    ("0,", [0], True),
])
def test_ascend_mask_reads_the_ids_before_the_first_bad_entry(value: str | None, seen: list[int],
                                                               noted: bool) -> None:
    visible, notes = apply_npu_visibility(EIGHT, value)
    assert [n.physical_index for n in visible] == seen
    assert [n.index for n in visible] == list(range(len(seen)))
    assert bool(notes) is noted
    if noted:
        assert notes[0].startswith(f"ASCEND_RT_VISIBLE_DEVICES={value!r}: ")
        assert f"{len(seen)} NPU(s) are visible" in notes[0]


# -- the probe with a fake npu-smi on PATH -----------------------------------------------------------

@pytest.fixture(autouse=True)
def no_nvidia(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NVIDIA driver answers here: pynvml is the binding and cannot be imported."""
    monkeypatch.setattr(nvml, "DEFAULT_BINDING", "pynvml")
    monkeypatch.setitem(sys.modules, "pynvml", None)


def fake_npu_smi(folder: Path, body: str) -> dict[str, str]:
    script = folder / "npu-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": str(folder)}


def test_probe_reads_npus_through_npu_smi_under_the_mask(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text(shape("910b3-x8.txt"))
    env = fake_npu_smi(tmp_path, f'[ "$1" = info ] && cat "{tmp_path / "out.txt"}"\n')
    hw = probe(environ=env)
    assert hw.source == "npu-smi" and hw.ascend and len(hw.npus) == 8 and hw.gpus == ()
    assert hw.npu_driver == "24.1.0.3"
    assert hw.warnings == ()  # no NVIDIA driver on an Ascend runner is not worth a warning
    masked = probe(environ={**env, "ASCEND_RT_VISIBLE_DEVICES": "2,5"})
    assert [n.label() for n in masked.npus] == ["NPU 0 (device 2, Ascend910B3)",
                                                "NPU 1 (device 5, Ascend910B3)"]
    assert evaluate(req(gpus=2), masked) is None
    assert evaluate(req(gpus=4), masked) == Verdict(
        "gpu", "needs 4 NPUs; found 2: NPU 0 (device 2, Ascend910B3), NPU 1 (device 5, Ascend910B3)")


def test_a_failing_or_hanging_npu_smi_is_a_warning(tmp_path: Path) -> None:
    env = fake_npu_smi(tmp_path, 'echo "dcmi module initialize failed" >&2; exit 255\n')
    hw = probe(environ=env)
    assert hw.npus == () and hw.ascend  # npu-smi is there: an Ascend machine, its driver broken
    assert any(w == "npu-smi: exit 255: dcmi module initialize failed" for w in hw.warnings)
    env = fake_npu_smi(tmp_path, "sleep 30\n")
    started = time.monotonic()
    hw = probe(environ=env, timeout=0.5)
    assert time.monotonic() - started < 10
    assert any("npu-smi: info (limit 0.5 s) did not answer in time; killed it" in w for w in hw.warnings)


def test_without_npu_smi_nothing_is_run_nor_loaded(tmp_path: Path) -> None:
    code = ("import sys; from pytest_lmbackend.hardware import probe; "
            f"hw = probe(environ={{'PATH': {str(tmp_path)!r}}}); "
            "print(hw.npus, 'pytest_lmbackend.hardware.npusmi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["()", "False"], out.stderr


# -- profiles ---------------------------------------------------------------------------------------

def test_shipped_ascend_profile_and_its_repeats() -> None:
    one = load_profile("ascend-910b", local_packages={})
    assert one.ascend and one.gpus == () and len(one.npus) == 1
    assert one.npus[0].name == "Ascend910B3" and one.npus[0].memory_total == 64 * GiB
    eight = load_profile("ascend-910bx8", local_packages={})
    assert [n.index for n in eight.npus] == list(range(8)) and eight.accelerator_kind == "NPU"


def test_npu_profile_files(tmp_path: Path) -> None:
    path = tmp_path / "a3.toml"
    path.write_text("ascend_rt_visible_devices = '1,2'\n[[npus]]\nname = 'Ascend910'\n"
                    "memory_total = '64GiB'\ncount = 4\n")
    hw = load_profile(str(path), local_packages={})
    assert [n.physical_index for n in hw.npus] == [1, 2] and hw.ascend
    js = tmp_path / "duo.json"
    js.write_text(json.dumps({"npus": [{"name": "310P3", "memory_total": "21534MiB", "count": 2}]}))
    assert load_profile(str(js), local_packages={}).npus[0].name == "Ascend310P3"


@pytest.mark.parametrize(("text", "field", "message"), [
    ("npus = [{name = 'Ascend910B3'}]", "npus[0].memory_total", "missing"),
    ("npus = [{name = 'Ascend910B3', memory_total = '64GiB', capability = '9.0'}]", "npus[0].capability",
     "unknown key"),
    ("npus = [{name = '', memory_total = '64GiB'}]", "npus[0].name", "non-empty string"),
    ("npus = [{name = 'A', memory_total = '64GiB', count = 0}]", "npus[0].count", "1 to"),
    ("npus = 'eight'", "npus", "list of NPU tables"),
    ("ascend = false\nnpus = [{name = 'A', memory_total = 1}]", "ascend", "lists NPUs"),
    ("npus = [{name = 'A', memory_total = 1, count = 1024}, {name = 'A', memory_total = 1, count = 1024}]",
     "npus", "more than 1024 NPUs"),
])
def test_bad_npu_profiles_name_the_field(tmp_path: Path, text: str, field: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), local_packages={})
    assert info.value.field == field and message in str(info.value)


# -- requirements on an NPU runner ------------------------------------------------------------------

def test_gpu_counts_count_npus_and_facts_are_judged_as_npus_have_them() -> None:
    node = load_profile("ascend-910bx8", local_packages={})
    assert evaluate(req(gpus=8, vram="60GiB", dtype="bf16"), node) is None
    assert evaluate(distributed_layout("dpep8"), node) is None
    assert evaluate(req(gpus=16), node) == Verdict(
        "gpu", "needs 16 NPUs; found 8: NPU 0 (Ascend910B3), NPU 1 (Ascend910B3), NPU 2 (Ascend910B3), "
               "NPU 3 (Ascend910B3), ...")
    assert evaluate(req(vram="80GiB"), node) == Verdict(
        "vram", "needs 80 GiB of NPU memory; NPU 0 (Ascend910B3) has 64 GiB")
    assert evaluate(req(capability=">=8.0"), node) == Verdict(
        "capability", "needs compute capability >= 8.0; NPU 0 (Ascend910B3) is not an NVIDIA GPU")
    skip = evaluate(req(turbomind_kernels=True), node)
    assert skip is not None and skip.reason.endswith("TurboMind runs on NVIDIA GPUs only")
    assert evaluate(req(turbomind_kernels=False), node) is None
    skip = evaluate(distributed_layout("tp16"), node)
    assert skip is not None and skip.reason == ("needs layout tp16: 16 NPUs in all, i.e. 2 nodes of 8 NPUs; "
                                                "profile 'ascend-910bx8' has 1 node of 8 NPUs")


@pytest.mark.parametrize(("name", "bf16"), [
    ("Ascend910B1", True), ("Ascend910B3", True), ("Ascend910B4-1", True), ("Ascend910", True),
    ("Ascend910_9391", True), ("Ascend950DT", True), ("Ascend310P3", False), ("Ascend910ProB", False),
    ("Ascend910A", False),
])
def test_native_bf16_by_ascend_generation(name: str, bf16: bool) -> None:
    hw = Hardware(npus=(NPU(0, 0, name, 64 * GiB, 64 * GiB),), source="npu-smi", ascend=True)
    assert (evaluate(req(dtype="bf16"), hw) is None) is bf16
    assert evaluate(req(dtype="fp16"), hw) is None
    skip = evaluate(req(dtype="fp8"), hw)
    assert skip is not None and skip.kind == "dtype" and name in skip.reason


# -- report and backends -----------------------------------------------------------------------------

def test_header_and_json_show_npus() -> None:
    hw = load_profile("ascend-910bx2", local_packages={"lmdeploy": "0.18.0"})
    lines = text_lines(hw)
    assert lines[0] == ("hardware: 2 Ascend NPUs, profile 'ascend-910bx2' (fake hardware, nothing probed); "
                        "Ascend driver 24.1.0.3")
    assert lines[1] == "  NPU 0 -> device 0: Ascend910B3, 64 GiB total, 60.68 GiB free"
    data = to_json(hw)
    assert data["npus"][1]["name"] == "Ascend910B3" and data["npu_driver"] == "24.1.0.3"
    assert json.loads(json.dumps(data)) == data


def test_backends_on_an_npu_runner() -> None:
    registry = build_registry()
    ready = {"lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0", "torch": "2.8.0", "transformers": "4.57.0",
             "dlinfer-ascend": "0.2.5", "torch-npu": "2.8.0"}
    got = registry.availability(facts_from_hardware(load_profile("ascend-910b", local_packages=ready)))
    assert got["pytorch"] is None
    assert got["turbomind"] is not None and "CUDA-only" in got["turbomind"]
    assert "NPU 0 (Ascend910B3)" in got["turbomind"]
    bare = {k: v for k, v in ready.items() if k != "dlinfer-ascend"}
    got = registry.availability(facts_from_hardware(load_profile("ascend-910b", local_packages=bare)))
    assert got["pytorch"] is not None and "dlinfer-ascend" in got["pytorch"]


def test_a_session_on_an_npu_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_n="""
        import pytest

        @pytest.mark.lm_requires(gpus=8)
        def test_eight(): pass

        @pytest.mark.lm_requires(gpus=16)
        def test_sixteen(): pass

        @pytest.mark.lm_requires(dtype="bf16", vram="60GiB")
        def test_bf16(): pass
        """)
    result = pytester.runpytest("-p", "no:xdist", "-v", "-rs", "--lm-hardware=ascend-910bx8")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "*hardware: 8 Ascend NPUs, profile 'ascend-910bx8'*",
        "*NPU 0 -> device 0: Ascend910B3, 64 GiB total*",
        "SKIPPED * needs 16 NPUs; found 8: NPU 0 (Ascend910B3), *",
    ])


def test_a_profile_is_seen_through_the_ascend_mask_as_real_npus_are() -> None:
    env = {"PYTEST_LM_HARDWARE": "ascend-910bx8", "ASCEND_RT_VISIBLE_DEVICES": "4,5",
           "CUDA_VISIBLE_DEVICES": "0"}
    hw = probe(environ=env)
    assert [n.label() for n in hw.npus] == ["NPU 0 (device 4, Ascend910B3)", "NPU 1 (device 5, Ascend910B3)"]
    assert hw.warnings == ()  # a CUDA mask over a runner without NVIDIA GPUs means nothing there
    hw = probe(environ={**env, "ASCEND_RT_VISIBLE_DEVICES": "4,9"})
    assert len(hw.npus) == 1 and "'9' names no device here (8 found)" in hw.warnings[0]
