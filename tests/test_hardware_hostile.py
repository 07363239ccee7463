"""Hostile hardware input: profiles that are FIFOs, devices, huge or deeply nested files, sizes that
overflow, names too long or with non-ASCII digits, odd masks and odd nvidia-smi output. Each is a
clear, typed error naming the field (a usage error in pytest), never a hang, an OverflowError or an
INTERNALERROR."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_lmbackend.hardware import (
    GPU,
    ProfileError,
    format_memory,
    load_profile,
    parse_capability,
    parse_memory,
    probe,
)
from pytest_lmbackend.hardware.smi import parse_query
from pytest_lmbackend.hardware.units import parse_seconds, parse_version
from pytest_lmbackend.hardware.visibility import Device, apply_visibility
from pytest_lmbackend.leak import parse_threshold
from pytest_lmbackend.requirements import RequirementError, parse_capability_spec, parse_requirement

ROOT = Path(__file__).resolve().parents[1]
HUGE = "9" * 400 + "GiB"


def within(seconds: float, call: Callable[[], object]) -> BaseException | object:
    """``call()``'s result or exception, failing the test when it has not returned in time (a hang)."""
    box: list[BaseException | object] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still running after {seconds} s"
    return box[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "runner.toml"
    os.mkfifo(path)
    return path


# -- profiles that are not regular files, or too large ------------------------------------------------

def test_a_fifo_profile_is_refused_not_waited_on(fifo: Path) -> None:
    got = within(10, lambda: load_profile(str(fifo), local_packages={}))
    assert isinstance(got, ProfileError) and "not a regular file" in str(got) and str(fifo) in str(got)
    got = within(10, lambda: probe(environ={"PYTEST_LM_HARDWARE": str(fifo)}))
    assert isinstance(got, ProfileError)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_a_device_profile_is_refused(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} is absent here")
    got = within(10, lambda: load_profile(device, local_packages={}))
    assert isinstance(got, ProfileError) and "not a regular file" in str(got)


def test_a_folder_or_a_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(str(tmp_path) + "/", local_packages={})
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ProfileError, match="larger than 1 MiB"):
        load_profile(str(big), local_packages={})


@pytest.mark.parametrize(("suffix", "text"), [
    (".json", "[" * 100_000 + "]" * 100_000),
    (".json", '{"gpus": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    (".toml", "gpus = " + "[" * 100_000 + "]" * 100_000),
])
def test_deeply_nested_profiles_are_an_error_naming_the_file(tmp_path: Path, suffix: str, text: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), local_packages={})
    assert "nested too deeply" in str(info.value) and str(path) in str(info.value)


# -- sizes that overflow -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [HUGE, "1e400GiB", "9" * 5000, 10**30, "99999999999TiB", "inf", "nan",
                                  "٤٠GiB", "4٠GiB"])
def test_sizes_beyond_any_device_or_not_numbers_are_value_errors(text: object) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_sizes_up_to_the_largest_device_still_read_exactly() -> None:
    assert parse_memory("16777216TiB") == 2**64 == parse_memory(2**64)
    with pytest.raises(ValueError, match="more than any device holds"):
        parse_memory("16777217TiB")
    assert parse_memory("0.1GB") == 10**8 and parse_memory("1.5TiB") == 3 * 2**39
    assert format_memory(2**64) == "16777216 TiB"


@pytest.mark.parametrize("key", ["vram", "free_vram"])
def test_an_overflowing_requirement_names_the_key(key: str) -> None:
    with pytest.raises(RequirementError) as info:
        parse_requirement((), {key: HUGE}, where="t.py::test_x")
    assert info.value.key == key and "memory size" in str(info.value)


@pytest.mark.parametrize("key", ["memory_total", "memory_free"])
def test_an_overflowing_profile_size_names_the_field(tmp_path: Path, key: str) -> None:
    path = tmp_path / "big.toml"
    sizes = {"memory_total": "'80GiB'", key: f"'{HUGE}'"}
    fields = "".join(f"{k} = {v}\n" for k, v in sizes.items())
    path.write_text("[[gpus]]\nname = 'X'\ncapability = '9.0'\n" + fields)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), local_packages={})
    assert info.value.field == f"gpus[0].{key}"


def test_the_leak_threshold_reads_sizes_through_the_same_parser() -> None:
    import argparse

    for bad in (HUGE, "9" * 400, "٦٤"):
        with pytest.raises(argparse.ArgumentTypeError, match="memory size"):
            parse_threshold(bad)
    assert parse_threshold("64MiB") == 64 * 2**20 and parse_threshold("1024") == 1024


# -- names ---------------------------------------------------------------------------------------------

def test_a_profile_name_longer_than_a_file_name_is_a_clear_error() -> None:
    with pytest.raises(ProfileError, match="longer than any file name"):
        load_profile("x" * 300, local_packages={})
    with pytest.raises(ProfileError, match="longer than any file name"):
        load_profile("h100x" + "1" * 300, local_packages={})


@pytest.mark.parametrize("name", ["h100x٣", "h１００", "a10x²"])
def test_non_ascii_digits_are_refused_in_names(name: str) -> None:
    with pytest.raises(ProfileError, match="ASCII"):
        load_profile(name, local_packages={})


@pytest.mark.parametrize(("name", "count", "gpu"), [
    ("rtx4090x2", 2, "NVIDIA GeForce RTX 4090"), ("rtx3090x2", 2, "NVIDIA GeForce RTX 3090"),
    ("rtx5090x4", 4, "NVIDIA GeForce RTX 5090"), ("h100x3", 3, "NVIDIA H100 80GB HBM3"),
    ("ascend-910bx4", 4, "Ascend910B3"),
])
def test_a_shipped_name_ending_in_digits_repeats(name: str, count: int, gpu: str) -> None:
    hw = load_profile(name, local_packages={})
    assert [d.name for d in hw.accelerators] == [gpu] * count and hw.profile == name


@pytest.mark.parametrize(("name", "advice"), [
    ("a100-80gbx8x2", "'a100-80gbx8' already names 8 GPUs; for 2 of its kind say a100-80gbx2"),
    ("h100x8x3", "'h100x8' already names 8 GPUs; for 3 of its kind say h100x3"),
    ("h100x0", "count must be 1 to 1024"),
    ("rtx409", "did you mean 'rtx4090'?"),
    ("h10x2", "did you mean 'h100x2'?"),
])
def test_the_advice_for_a_bad_name_is_right(name: str, advice: str) -> None:
    with pytest.raises(ProfileError) as info:
        load_profile(name, local_packages={})
    assert advice in str(info.value)


# -- capabilities, versions and masks -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["٩.٠", "9.٠", "９.0"])
def test_non_ascii_digits_are_refused_in_capabilities(text: str) -> None:
    with pytest.raises(ValueError, match="capability"):
        parse_capability(text)
    with pytest.raises(ValueError):
        parse_capability_spec(f">={text}")


def test_a_profile_with_a_non_ascii_capability_or_version_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[[gpus]]\nname = 'X'\ncapability = '٩.٠'\nmemory_total = 1\n")
    with pytest.raises(ProfileError, match=r"gpus\[0\]\.capability"):
        load_profile(str(path), local_packages={})
    path.write_text("cuda = '١٢.٨'\n")
    with pytest.raises(ProfileError, match="'cuda'"):
        load_profile(str(path), local_packages={})
    assert parse_version("١٢.٨") is None and parse_version("12.8") == (12, 8)


@pytest.mark.parametrize("text", ["٣", "１０", "1٠", "inf", "nan", "-1"])
def test_durations_are_ascii_numbers(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="--x must be seconds"):
        parse_seconds(text, "--x")
    assert parse_seconds("2.5", "--x") == 2.5


def test_cuda_reads_its_mask_as_ascii_and_stops_at_the_first_invalid_entry() -> None:
    """CUDA parses CUDA_VISIBLE_DEVICES byte by byte as ASCII: '٠' is no index nor a UUID, so it is an
    invalid entry, and CUDA ignores it and everything after it."""
    devices = [Device(GPU(i, i, f"GPU-{i}", "X", (9, 0), 1)) for i in range(2)]
    visible, notes = apply_visibility(devices, "٠,١")
    assert visible == () and "entry '٠' names no device" in notes[0]
    visible, notes = apply_visibility(devices, "0,١")
    assert [g.physical_index for g in visible] == [0] and "'١'" in notes[0]


# -- nvidia-smi rows that are not numbers -----------------------------------------------------------------

ROW = "{i}, GPU-{i}, 00000000:0{i}:00.0, NVIDIA A100-SXM4-40GB, 8.0, {total}, {free}, 550.127.05"


@pytest.mark.parametrize(("total", "free"), [("inf", "100"), ("nan", "100"), ("100", "-inf"),
                                             ("1e400", "100"), ("٤٠", "100"), ("[N/A]", "100")])
def test_a_row_with_a_memory_that_is_no_number_keeps_its_gpu(total: str, free: str) -> None:
    """Every GPU nvidia-smi lists stays listed; a memory figure that is not a whole number of MiB is
    unknown (0 total, or None free) with a note, whether it reads inf, nan or [N/A]."""
    text = "\n".join(ROW.format(i=i, total=total if i == 1 else "40960", free=free if i == 1 else "40000")
                     for i in range(3)) + "\n"
    devices, driver, notes = parse_query(text)
    assert [d.gpu.physical_index for d in devices] == [0, 1, 2] and driver == "550.127.05"
    odd = devices[1].gpu
    assert odd.memory_total == (0 if total != "100" else 100 * 2**20)
    assert odd.memory_free == (None if free != "100" else 100 * 2**20)
    if "[N/A]" not in (total, free):
        assert len(notes) == 1 and "GPU 1" in notes[0] and "not a number" in notes[0]


# -- through pytest and the env command ----------------------------------------------------------------

def test_pytest_gives_a_usage_error_for_each(pytester: pytest.Pytester, fifo: Path) -> None:
    pytester.makepyfile(test_x=f"""
        import pytest

        @pytest.mark.lm_requires(vram="{HUGE}")
        def test_huge(): pass
        """, test_ok="def test_ok(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100", "test_x.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_huge: lm_requires(vram=*memory size*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    for args in ([f"--lm-hardware={fifo}"], ["--lm-hardware=/dev/zero"], ["--lm-leak-threshold=" + HUGE],
                 ["--lm-hardware=h100x٣"], ["--lm-hardware=" + "x" * 300]):
        result = within(60, lambda a=args: pytester.runpytest("-p", "no:xdist", *a, "test_ok.py"))
        assert isinstance(result, pytest.RunResult), result
        assert result.ret == pytest.ExitCode.USAGE_ERROR, (args, result.stdout.str(), result.stderr.str())
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_env_refuses_them_with_exit_2(fifo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTEST_LM_HARDWARE", None)
    for spec in (str(fifo), "/dev/zero"):
        out = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "env", "--hardware", spec],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 2 and "not a regular file" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "pytest_lmbackend", "env"], capture_output=True, text=True,
                         env={**env, "PYTEST_LM_HARDWARE": str(fifo)}, timeout=60)
    assert out.returncode == 2 and "not a regular file" in out.stderr, out.stderr
