"""Backend availability from runner facts, the registry, and facts read from Hardware values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_lmbackend.backends import (
    BUILTIN_BACKENDS,
    Backend,
    Device,
    RunnerFacts,
    build_registry,
    facts_from_hardware,
)
from pytest_lmbackend.hardware import GPU, Hardware, load_profile

H100 = Device(0, "NVIDIA H100 80GB HBM3", (9, 0))
V100 = Device(0, "Tesla V100-SXM2-32GB", (7, 0))
P100 = Device(0, "Tesla P100-PCIE-16GB", (6, 0))
B200 = Device(0, "NVIDIA B200", (10, 0))
FULL = {"lmdeploy": "0.18.0", "torch": "2.11.0", "transformers": "5.17.0"}


def reasons(facts: RunnerFacts) -> dict[str, str | None]:
    return build_registry().availability(facts)


def test_builtin_order_prefers_turbomind_then_pytorch_then_reference() -> None:
    assert build_registry().names == ("turbomind", "pytorch", "transformers")


def test_everything_available_on_an_h100_with_turbomind() -> None:
    facts = RunnerFacts(devices=(H100,), cuda="13.0", packages=FULL, turbomind_extension=True)
    assert reasons(facts) == {"turbomind": None, "pytorch": None, "transformers": None}


def test_cpu_box_with_torch_has_only_the_reference_backend() -> None:
    facts = RunnerFacts(packages={"lmdeploy": None, "torch": "2.13.0", "transformers": "5.17.0"})
    got = reasons(facts)
    assert got["transformers"] is None
    assert got["pytorch"] is not None and "lmdeploy" in got["pytorch"]
    assert got["turbomind"] is not None and "not installed" in got["turbomind"]


def test_turbomind_without_its_extension_names_the_lmdeploy_version() -> None:
    facts = RunnerFacts(devices=(H100,), cuda="13.0", packages=FULL, turbomind_extension=False)
    why = reasons(facts)["turbomind"]
    assert why is not None and "0.18.0 is installed without it" in why
    assert reasons(facts)["pytorch"] is None


def test_turbomind_needs_a_gpu_in_its_build_matrix() -> None:
    # sm70 kernels are built only with CUDA < 13: a V100 under CUDA 13 has none
    facts = RunnerFacts(devices=(V100,), cuda="13.0", packages=FULL, turbomind_extension=True)
    why = reasons(facts)["turbomind"]
    assert why is not None and "GPU 0 (Tesla V100-SXM2-32GB, sm70)" in why
    old_cuda = RunnerFacts(devices=(V100,), cuda="12.4", packages=FULL, turbomind_extension=True)
    assert reasons(old_cuda)["turbomind"] is None


def test_pytorch_needs_sm70_or_ascend() -> None:
    facts = RunnerFacts(devices=(P100,), cuda="12.4", packages=FULL)
    why = reasons(facts)["pytorch"]
    assert why is not None and ">= 7.0" in why and "Tesla P100" in why
    no_gpu = reasons(RunnerFacts(packages=FULL))["pytorch"]
    assert no_gpu is not None and "found no GPU" in no_gpu


def test_pytorch_on_ascend_needs_dlinfer_and_torch_npu() -> None:
    """LMDeploy >= 0.6.0 imports dlinfer for device_type='ascend' and exits without it."""
    bare = reasons(RunnerFacts(ascend=True, packages=FULL, npus=("NPU 0 (Ascend910B3)",)))["pytorch"]
    assert bare == ("backend pytorch on Ascend (device_type='ascend') needs dlinfer-ascend and torch-npu "
                    "installed; not found on this runner")
    ascend = {**FULL, "dlinfer-ascend": "0.2.5", "torch-npu": "2.8.0"}
    assert reasons(RunnerFacts(ascend=True, packages=ascend))["pytorch"] is None
    old = reasons(RunnerFacts(ascend=True, packages={**ascend, "lmdeploy": "0.5.3"}))["pytorch"]
    assert old is not None and "LMDeploy >= 0.6.0" in old and "0.5.3" in old
    # TurboMind stays CUDA-only whatever is installed
    tm = reasons(RunnerFacts(ascend=True, packages=ascend, turbomind_extension=True,
                             npus=("NPU 0 (Ascend910B3)",)))["turbomind"]
    assert tm == ("backend turbomind is CUDA-only (LMDeploy runs its PyTorch engine on Ascend); found no GPU "
                  "but NPU 0 (Ascend910B3)")


def test_stated_backends_are_the_whole_answer() -> None:
    facts = RunnerFacts(stated_backends=frozenset({"pytorch"}), profile="ci-a10")
    got = reasons(facts)
    assert got["pytorch"] is None
    assert got["turbomind"] is not None and "profile 'ci-a10' states backends: pytorch" in got["turbomind"]


def test_best_available_respects_rank_and_a_pool() -> None:
    registry = build_registry()
    facts = RunnerFacts(devices=(B200,), cuda="13.0", packages=FULL, turbomind_extension=True)
    assert registry.best_available(facts) == "turbomind"
    assert registry.best_available(facts, among=["transformers", "pytorch"]) == "pytorch"
    assert registry.best_available(RunnerFacts(), among=["pytorch"]) is None


def test_third_party_backends_join_by_rank() -> None:
    extra = Backend("vllm", "vLLM", lambda facts: None, rank=15)
    registry = build_registry([[extra]])
    assert registry.names == ("turbomind", "vllm", "pytorch", "transformers")
    assert registry.get("vllm") is extra


@pytest.mark.parametrize("name", ["pytorch", "auto", "all", "none", "bad name"])
def test_reserved_or_duplicate_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved, invalid or already registered"):
        build_registry([[Backend(name, "x", lambda facts: None)]])


def test_a_hook_returning_something_else_is_refused() -> None:
    with pytest.raises(ValueError, match="expected Backend values"):
        build_registry([["vllm"]])  # type: ignore[list-item]


def test_facts_from_a_profile_use_its_packages_and_gpus() -> None:
    hw = Hardware(
        gpus=(GPU(index=0, physical_index=3, uuid="GPU-x", name="NVIDIA A10", capability=(8, 6),
                  memory_total=24 << 30),),
        cuda="12.4", source="profile", profile="a10-ci",
        packages={"lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0", "torch": "2.11.0"},
    )
    facts = facts_from_hardware(hw)
    assert facts.devices == (Device(0, "NVIDIA A10", (8, 6)),)
    assert facts.turbomind_extension
    assert facts.packages["transformers"] is None
    assert facts.profile == "a10-ci"
    got = build_registry().availability(facts)
    assert got["turbomind"] is None and got["pytorch"] is None
    assert got["transformers"] is not None and "transformers" in got["transformers"]


def test_shipped_profile_gpus_reach_the_facts() -> None:
    hw = load_profile("h100x8")
    facts = facts_from_hardware(hw)
    assert len(facts.devices) == 8
    assert all(d.capability == (9, 0) for d in facts.devices)


@pytest.mark.parametrize("folder", ["lib", "turbomind"])
def test_without_package_facts_the_extension_is_looked_for_on_disk(tmp_path: Path, folder: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A real probe that listed no packages: metadata and the extension file decide, without importing
    lmdeploy, wherever its release put the file (lib/ up to 0.17, turbomind/ from 0.18)."""
    import importlib.machinery

    from pytest_lmbackend.hardware import Hardware

    pkg = tmp_path / "lmdeploy"
    (pkg / folder).mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    meta = tmp_path / "lmdeploy-0.18.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: lmdeploy\nVersion: 0.18.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lmdeploy", raising=False)
    bare = Hardware(source="none")
    assert not facts_from_hardware(bare).turbomind_extension
    (pkg / folder / f"_turbomind{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    facts = facts_from_hardware(bare)
    assert facts.turbomind_extension and facts.packages["lmdeploy"] == "0.18.0"
    assert "lmdeploy" not in sys.modules


def test_facts_are_the_hardware_fields() -> None:
    from pytest_lmbackend.hardware import load_profile

    hw = load_profile("ascend-910b+lmdeploy=0.18.0", local_packages={})
    facts = facts_from_hardware(hw)
    assert facts == RunnerFacts(devices=(), cuda=None, ascend=True, packages={
        "lmdeploy": "0.18.0", "torch": "", "transformers": "", "torch-npu": "", "dlinfer-ascend": ""},
        turbomind_extension=False, stated_backends=None, profile="ascend-910b+lmdeploy=0.18.0",
        packages_stated=True, npus=("NPU 0 (Ascend910B3)",))
    a10 = facts_from_hardware(load_profile("a10", local_packages={"lmdeploy": "0.18.0"}))
    assert a10.devices == (Device(0, "NVIDIA A10", (8, 6)),) and a10.cuda == "12.4"
    assert a10.packages["lmdeploy"] == "0.18.0" and a10.packages["torch"] is None


def test_builtins_have_distinct_names() -> None:
    assert len({b.name for b in BUILTIN_BACKENDS}) == len(BUILTIN_BACKENDS)


@pytest.mark.parametrize(("body", "message"), [
    ("raise RuntimeError('check exploded')", "raised RuntimeError: check exploded"),
    ("return 42", "returned 42; a check returns None (available) or the reason it is not"),
])
def test_a_broken_third_party_check_is_named_not_an_internal_error(pytester: pytest.Pytester, body: str,
                                                                    message: str) -> None:
    pytester.makeconftest(
        f"""
        from pytest_lmbackend.backends import Backend

        def _check(facts):
            {body}

        def pytest_lmbackend_register_backends(config):
            return [Backend("my.vllm-2", "x", _check, rank=5)]
        """
    )
    pytester.makepyfile("def test_a(lm_backend): pass\n")
    for extra in ((), ("-q",), ("--lm-plan",)):
        result = pytester.runpytest("-p", "no:xdist", "--lm-backend=all", "--lm-hardware=cpu", *extra)
        text = result.stdout.str() + result.stderr.str()
        assert "INTERNALERROR" not in text, extra
        assert f"backend 'my.vllm-2': its availability check _check {message}" in text, extra
