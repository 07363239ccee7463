"""The backend axis as pure decisions: ids, the chosen backend, verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_lmbackend.backends import Device, RunnerFacts, build_registry
from pytest_lmbackend.config import MissingFieldError
from pytest_lmbackend.markers import ItemMarks, ModelBinding
from pytest_lmbackend.selection import (
    choose_backend,
    evaluate_item,
    is_backend_bound,
    needs_engine,
    parametrize_ids,
)
from pytest_lmbackend.settings import BackendMode
from pytest_lmbackend.verdict import Verdict

REGISTRY = build_registry()
FULL = {"lmdeploy": "0.18.0", "torch": "2.11.0", "transformers": "5.17.0"}
H100 = RunnerFacts(devices=(Device(0, "NVIDIA H100", (9, 0)),), cuda="13.0", packages=FULL,
                   turbomind_extension=True)
PT_ONLY = RunnerFacts(devices=(Device(0, "NVIDIA H200", (9, 0)),), cuda="13.0", packages=FULL)
CPU = RunnerFacts(packages={"lmdeploy": None, "torch": "2.13.0", "transformers": "5.17.0"})
AUTO, ALL, NONE = BackendMode("auto"), BackendMode("all"), BackendMode("none")
MODEL = ModelBinding("/models/x", given="x")


class FakeDetection:
    def __init__(self, backend: str) -> None:
        self.backend = backend


def test_only_tests_that_ask_are_bound() -> None:
    for fixture in ("lm_backend", "lm_pipeline", "lm_detection", "lm_backend_config"):
        assert is_backend_bound(["request", fixture], ItemMarks()), fixture
    assert is_backend_bound(["request"], ItemMarks(backend_marked=True))  # lm_backend(...)
    assert is_backend_bound(["request"], ItemMarks(model=MODEL))  # lm_model(...)
    # LMDeploy's engine and not_* marks bind nothing
    assert not is_backend_bound(["lm_hardware", "lm_model_dir"], ItemMarks(engines=frozenset({"pytorch"}),
                                                                         excluded=frozenset({"turbomind"})))
    # bound by its model only: it reads the detection, it runs no engine
    assert not needs_engine(["lm_detection"], ItemMarks(model=MODEL))
    assert needs_engine(["lm_pipeline"], ItemMarks(model=MODEL))
    assert needs_engine([], ItemMarks(backend_marked=True))


def test_ids_never_depend_on_hardware() -> None:
    assert parametrize_ids(AUTO, ItemMarks(), REGISTRY) is None
    assert parametrize_ids(NONE, ItemMarks(), REGISTRY) is None
    assert parametrize_ids(ALL, ItemMarks(), REGISTRY) == ("turbomind", "pytorch", "transformers")
    only_pt = ItemMarks(allowed=("pytorch",), backend_marked=True)
    assert parametrize_ids(ALL, only_pt, REGISTRY) == ("pytorch",)
    not_tm = ItemMarks(excluded=frozenset({"turbomind"}), backend_marked=True)
    assert parametrize_ids(ALL, not_tm, REGISTRY) == ("pytorch", "transformers")
    names = BackendMode("names", ("transformers", "turbomind"))
    assert parametrize_ids(names, not_tm, REGISTRY) == ("transformers",)
    # nothing permitted: the asked-for ids remain, and skip at setup with the reason
    assert parametrize_ids(BackendMode("names", ("turbomind",)), not_tm, REGISTRY) == ("turbomind",)


def test_auto_takes_detection_then_best_available() -> None:
    model = ItemMarks(model=MODEL)
    assert choose_backend(AUTO, model, None, "pytorch", H100, REGISTRY) == "pytorch"
    assert choose_backend(AUTO, model, None, "turbomind", CPU, REGISTRY) == "turbomind"  # skips, with reason
    assert choose_backend(AUTO, ItemMarks(), None, None, H100, REGISTRY) == "turbomind"
    assert choose_backend(AUTO, ItemMarks(), None, None, PT_ONLY, REGISTRY) == "pytorch"
    assert choose_backend(AUTO, ItemMarks(), None, None, CPU, REGISTRY) == "transformers"
    # markers win over detection: a test marked pytorch of a TurboMind model runs on pytorch
    pt = ItemMarks(model=MODEL, allowed=("pytorch",), backend_marked=True)
    assert choose_backend(AUTO, pt, None, "turbomind", H100, REGISTRY) == "pytorch"
    # nothing permitted is available: the first permitted, so the skip names it
    assert choose_backend(AUTO, ItemMarks(allowed=("turbomind",)), None, None, CPU, REGISTRY) == "turbomind"
    assert choose_backend(NONE, ItemMarks(), None, None, H100, REGISTRY) is None
    assert choose_backend(ALL, ItemMarks(), "pytorch", "turbomind", H100, REGISTRY) == "pytorch"


def test_not_turbomind_on_a_turbomind_model_means_the_pytorch_engine() -> None:
    """As in LMDeploy's own suites: the other LMDeploy engine, skipping where it cannot run, not
    the reference backend that happens to be available."""
    not_tm = ItemMarks(model=MODEL, excluded=frozenset({"turbomind"}), backend_marked=True)
    assert choose_backend(AUTO, not_tm, None, "turbomind", H100, REGISTRY) == "pytorch"
    assert choose_backend(AUTO, not_tm, None, "turbomind", CPU, REGISTRY) == "pytorch"  # skips, with reason
    # only the reference backend permitted: it is the answer
    ref = ItemMarks(model=MODEL, allowed=("transformers",), backend_marked=True)
    assert choose_backend(AUTO, ref, None, "turbomind", CPU, REGISTRY) == "transformers"


def evaluate(mode: BackendMode, marks: ItemMarks, facts: RunnerFacts, *, param: str | None = None,
             bound: bool = True, detect: Any = None, requirement: Any = None) -> Any:
    return evaluate_item(
        mode=mode, marks=marks, param=param, backend_bound=bound, facts=facts, registry=REGISTRY,
        detect=detect or (lambda model: FakeDetection("turbomind")),
        evaluate_requirement=requirement or (lambda req: None),
    )


def test_evaluate_runs_where_the_backend_is_available() -> None:
    out = evaluate(AUTO, ItemMarks(model=MODEL), H100)
    assert (out.backend, out.verdict) == ("turbomind", None)
    assert out.detection.backend == "turbomind"


def test_evaluate_skips_with_the_backend_reason() -> None:
    out = evaluate(AUTO, ItemMarks(model=MODEL), PT_ONLY)
    assert out.backend == "turbomind"
    assert out.verdict is not None and out.verdict.kind == "backend"
    assert "installed without it" in out.verdict.reason


def test_evaluate_none_mode_skips_backend_bound_only() -> None:
    out = evaluate(NONE, ItemMarks(), H100)
    assert out.verdict == Verdict("backend", "--lm-backend=none: backend-bound tests do not run")
    assert evaluate(NONE, ItemMarks(), H100, bound=False).verdict is None


def test_evaluate_param_outside_markers_skips_with_the_restriction() -> None:
    marks = ItemMarks(allowed=("pytorch",), backend_marked=True)
    out = evaluate(BackendMode("names", ("turbomind",)), marks, H100, param="turbomind")
    assert out.verdict is not None
    assert out.verdict.reason == "test is marked for only pytorch; --lm-backend=turbomind gives turbomind"


def test_evaluate_detection_error_fails_the_item() -> None:
    def broken(model: ModelBinding) -> Any:
        raise MissingFieldError("config.json", "architectures", "missing")

    out = evaluate(AUTO, ItemMarks(model=MODEL), H100, detect=broken)
    assert out.verdict is not None and out.verdict.error and out.verdict.kind == "model"
    assert "lm_model('x')" in out.verdict.reason and "architectures" in out.verdict.reason


def test_a_bug_in_detection_is_not_read_as_a_bad_model() -> None:
    def buggy(model: ModelBinding) -> Any:
        raise KeyError("num_layers")  # a rule that forgot a default: our bug, shown as such

    with pytest.raises(KeyError):
        evaluate(AUTO, ItemMarks(model=MODEL), H100, detect=buggy)


def test_evaluate_requirements_after_the_backend() -> None:
    marks = ItemMarks(requirements=("two gpus",))
    seen: list[Any] = []

    def requirement(req: Any) -> Verdict:
        seen.append(req)
        return Verdict("gpu", "needs 2 GPUs; found 1")

    out = evaluate(AUTO, marks, H100, bound=False, requirement=requirement)
    assert out.verdict == Verdict("gpu", "needs 2 GPUs; found 1") and seen == ["two gpus"]
    seen.clear()
    out = evaluate(AUTO, marks, CPU, param="turbomind", requirement=requirement)
    assert out.verdict is not None and out.verdict.kind == "backend" and seen == []



def test_engine_groups_gather_where_their_first_member_stood() -> None:
    from pytest_lmbackend.selection import group_by_engine

    keys = ["a", None, "b", "a", None, "b", "c", "a"]
    order = group_by_engine(keys)
    assert order == [0, 3, 7, 1, 2, 5, 4, 6]
    assert sorted(order) == list(range(len(keys)))  # a permutation: nothing lost or repeated
    assert group_by_engine([None, None, None]) == [0, 1, 2]
    assert group_by_engine([]) == []


def test_collection_order_groups_tests_sharing_a_pipeline(pytester: pytest.Pytester) -> None:
    for name in ("m1", "m2"):
        folder = pytester.path / name
        folder.mkdir()
        (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_model("m1")
        def test_a1(lm_pipeline): pass

        def test_plain(): pass

        @pytest.mark.lm_model("m2")
        def test_b1(lm_pipeline): pass

        @pytest.mark.lm_model("m1")
        def test_a2(lm_pipeline): pass

        @pytest.mark.lm_model("m1")
        def test_detect_only(lm_detection): pass

        @pytest.mark.lm_model("m2")
        def test_b2(lm_pipeline): pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q", "--lm-backend=auto", "--lm-hardware=cpu")
    names = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert names == ["test_a1", "test_a2", "test_plain", "test_b1", "test_b2", "test_detect_only"]


def test_grouping_stays_within_a_module_unless_asked(pytester: pytest.Pytester) -> None:
    """Moving a test into another module's run would set that module's fixtures up twice."""
    (pytester.path / "m1").mkdir()
    (pytester.path / "m1" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    for name in ("test_x", "test_y"):
        pytester.makepyfile(**{name: f"""
            import pytest

            @pytest.mark.lm_model("m1")
            def {name}_engine(lm_pipeline): pass

            def {name}_plain(): pass
            """})
    def order(*args: str) -> list[str]:
        result = pytester.runpytest("--collect-only", "-q", "--lm-hardware=cpu", *args)
        return [line.split("::")[1] for line in result.outlines if "::" in line]

    assert order() == ["test_x_engine", "test_x_plain", "test_y_engine", "test_y_plain"]
    assert order("-o", "lm_group_by_engine=session") == [
        "test_x_engine", "test_y_engine", "test_x_plain", "test_y_plain"]
    result = pytester.runpytest("--collect-only", "-o", "lm_group_by_engine=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini lm_group_by_engine: 'sometimes' is not one of parent, session, off*"])
    result = pytester.runpytest("--collect-only", "-o", "lm_pipeline_cache=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini lm_pipeline_cache: 'abc' is not a whole number >= 1*"])
