"""Markers: folding an item's marks into ItemMarks, and bad marker arguments as usage errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.markers import ItemMarks, MarkerError, lmdeploy_marker_help, parse_marks, suite_backend
from pytest_lmbackend.plugin import MARKER_HELP

NAMES = ("turbomind", "pytorch", "transformers")


def marks(*items: Any, base: Path | None = None, requirement: Any = None, lmdeploy: bool = True) -> ItemMarks:
    return parse_marks(items, where="t.py::test_x", backend_names=NAMES,
                       base_dirs=[base] if base else [], parse_requirement=requirement, lmdeploy=lmdeploy)


def test_no_marks_mean_unrestricted() -> None:
    got = marks()
    assert got == ItemMarks()
    assert all(got.permits(n) for n in NAMES)


def test_lmdeploy_aliases_restrict_and_exclude() -> None:
    got = marks(pytest.mark.pytorch.mark, pytest.mark.turbomind.mark)
    # engines a test needs; they restrict a bound test's backends, but bind nothing themselves
    assert got.allowed == ("pytorch", "turbomind") and got.engines == {"pytorch", "turbomind"}
    assert not got.backend_marked
    got = marks(pytest.mark.not_turbomind.mark)
    assert got.allowed is None and got.excluded == {"turbomind"} and not got.backend_marked
    assert not got.permits("turbomind") and got.permits("transformers")
    assert marks(pytest.mark.lm_backend("pytorch").mark).backend_marked
    # lm_model binds by its model (selection.is_backend_bound), not as a backend marker
    assert not marks(pytest.mark.lm_model("m").mark).backend_marked


def test_lmdeploy_names_are_read_only_where_the_suite_opts_in() -> None:
    read = (pytest.mark.pytorch.mark, pytest.mark.not_turbomind.mark, pytest.mark.gpu_num_2.mark,
            pytest.mark.gpu_num_distributed_tp16.mark)
    assert marks(*read, lmdeploy=False) == ItemMarks()
    got = marks(*read)
    assert got.engines == {"pytorch"} and got.excluded == {"turbomind"}
    assert [r.gpus for r in got.requirements] == [2, None]
    assert got.requirements[1].layouts[0].name == "tp16"


def test_gpu_num_counts_in_ascii_digits_only() -> None:
    """``gpu_num_٣`` is a valid Python name but not LMDeploy's marker: it was read as 3 GPUs."""
    other = pytest.Mark("gpu_num_\u0663", (), {}, _ispytest=True)  # not registered: no pytest.mark
    assert marks(other) == ItemMarks()
    assert [r.gpus for r in marks(pytest.mark.gpu_num_3.mark).requirements] == [3]


def test_closest_lm_backend_wins_and_meets_aliases() -> None:
    pt_tf = pytest.mark.lm_backend("pytorch", "transformers").mark
    got = marks(pt_tf, pytest.mark.lm_backend("turbomind").mark)
    assert got.allowed == ("pytorch", "transformers")
    got = marks(pytest.mark.lm_backend("pytorch", "transformers").mark, pytest.mark.pytorch.mark)
    assert got.allowed == ("pytorch",)


def test_gpu_num_and_lm_requires_go_through_the_requirement_parser() -> None:
    seen: list[tuple[Any, Any]] = []

    def parse(args: Any, kwargs: Any) -> str:
        seen.append((args, kwargs))
        return f"req{len(seen)}"

    got = marks(pytest.mark.gpu_num_4.mark, pytest.mark.lm_requires(capability=">=8.0").mark,
                requirement=parse)
    assert got.requirements == ("req1", "req2")
    assert seen == [((), {"gpus": 4}), ((), {"capability": ">=8.0"})]


def test_requirement_errors_name_the_test() -> None:
    def parse(args: Any, kwargs: Any) -> Any:
        raise ValueError("lm_requires: unknown key 'gpuz'")

    with pytest.raises(MarkerError, match=r"t.py::test_x: lm_requires: unknown key 'gpuz'"):
        marks(pytest.mark.lm_requires(gpuz=2).mark, requirement=parse)


def test_lm_model_resolves_relative_to_base_dirs(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    got = marks(pytest.mark.lm_model("models/m", synthetic=True).mark, base=tmp_path)
    assert got.model is not None
    assert got.model.source == str((tmp_path / "models" / "m").resolve())
    assert got.model.given == "models/m" and got.model.synthetic
    # not found anywhere: left as given (a local cache id, or an error at detection)
    assert marks(pytest.mark.lm_model("org/name").mark).model.source == "org/name"  # type: ignore[union-attr]


def test_lm_engine_options_closest_first() -> None:
    got = marks(pytest.mark.lm_engine(tp=2).mark, pytest.mark.lm_engine(tp=1, session_len=64).mark)
    assert dict(got.engine_options) == {"tp": 2, "session_len": 64}


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (pytest.mark.lm_backend(), "needs at least one backend name"),
        (pytest.mark.lm_backend("vllm"), "unknown backend; known: turbomind, pytorch, transformers"),
        (pytest.mark.lm_backend(3), "must be strings"),
        (pytest.mark.lm_backend("pytorch", tp=2), "takes backend names only"),
        (pytest.mark.pytorch("x"), "the pytorch marker takes no arguments"),
        (pytest.mark.gpu_num_2(1), "the gpu_num_2 marker takes no arguments"),
        (pytest.mark.lm_model(), "takes exactly one source"),
        (pytest.mark.lm_model("a", "b"), "takes exactly one source"),
        (pytest.mark.lm_model(42), "must be a path, an id or a mapping"),
        (pytest.mark.lm_model("a", synthetic="yes"), "must be True or False"),
        (pytest.mark.lm_model("a", revision="main"), "unknown keyword"),
        (pytest.mark.lm_engine(2), "keyword options only"),
    ],
)
def test_bad_marker_arguments(mark: Any, message: str) -> None:
    with pytest.raises(MarkerError, match=r"^t.py::test_x: ") as info:
        marks(mark.mark)
    assert message in str(info.value)


def test_contradicting_backend_markers() -> None:
    with pytest.raises(MarkerError, match="leave no backend"):
        marks(pytest.mark.lm_backend("turbomind").mark, pytest.mark.pytorch.mark)
    with pytest.raises(MarkerError, match="leave no backend"):
        marks(pytest.mark.turbomind.mark, pytest.mark.not_turbomind.mark)


def test_every_marker_has_signature_style_help() -> None:
    lmdeploy = lmdeploy_marker_help()
    for name, text in (*MARKER_HELP.items(), *lmdeploy.items()):
        assert text.startswith(name), name
    assert {"lm_requires", "lm_backend", "lm_model", "lm_isolated", "lm_engine"} == set(MARKER_HELP)
    assert {"turbomind", "not_pytorch", "gpu_num_1", "gpu_num_16", "gpu_num_distributed_tp16",
            "gpu_num_distributed_cp2tp8"} <= set(lmdeploy)


def test_strict_markers_accepts_every_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.turbomind
        @pytest.mark.not_pytorch
        @pytest.mark.gpu_num_16
        @pytest.mark.lm_isolated
        @pytest.mark.lm_engine(tp=1)
        @pytest.mark.lm_model("m")
        @pytest.mark.lm_requires(gpus=1)
        def test_a():
            pass

        @pytest.mark.pytorch
        @pytest.mark.not_turbomind
        @pytest.mark.lm_backend("pytorch")
        def test_b():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "--collect-only", "-q", "-o", "lm_markers=lmdeploy")
    result.assert_outcomes()
    assert result.ret == 0
    result = pytester.runpytest("--markers", "-o", "lm_markers=lmdeploy")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.lm_requires(*, gpus=N, nodes=N, capability=*", "@pytest.mark.gpu_num_8: *"]
    )
    # without the opt-in those names are the suite's own: registering them is the suite's business
    # (a fresh interpreter: pytest remembers the markers it has seen registered in this one)
    result = pytester.runpytest_subprocess("--strict-markers", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*'turbomind' not found in `markers` configuration option*"])
    assert "gpu_num_8" not in pytester.runpytest_subprocess("--markers").stdout.str()


def test_bad_markers_are_one_usage_error_naming_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_requires(gpuz=2)
        def test_typo():
            pass

        @pytest.mark.lm_backend("vllm")
        def test_unknown_backend(lm_backend):
            pass

        def test_fine():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: bad pytest-lmbackend marker(s):",
        "*test_bad_markers_are_one_usage_error_naming_each_test.py::test_typo: *gpuz*",
        "*::test_unknown_backend: lm_backend('vllm'): unknown backend*",
    ])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


MIXED_PROFILE = """
cuda = "12.4"
[[gpus]]
name = "A"
capability = "9.0"
memory_total = "40GiB"
[[gpus]]
name = "B"
capability = "8.0"
memory_total = "20GiB"
[[gpus]]
name = "C"
capability = "8.6"
memory_total = "24GiB"
"""


def test_counts_and_facts_from_different_markers_are_judged_together(pytester: pytest.Pytester) -> None:
    """gpu_num_2 (or a class/module count) with a capability from another marker: both GPUs the
    test gets must meet it, not just GPU 0; and the largest count is the one reported."""
    pytester.makefile(".toml", mixed=MIXED_PROFILE)
    pytester.makepyfile(
        test_split="""
        import pytest

        @pytest.mark.gpu_num_2
        @pytest.mark.lm_requires(capability=">=9.0")
        def test_gpu_num_and_capability(): pass

        @pytest.mark.lm_requires(vram="30GiB")
        class TestTwo:
            pytestmark = pytest.mark.lm_requires(gpus=2)
            def test_vram_on_both(self): pass

        @pytest.mark.lm_requires(gpus=8)
        @pytest.mark.gpu_num_2
        def test_largest_count(): pass

        @pytest.mark.lm_requires(capability=">=9.0")
        def test_one_gpu_by_default(): pass
        """,
        test_contradiction="""
        import pytest

        @pytest.mark.lm_requires(turbomind_kernels=True)
        class TestK:
            @pytest.mark.lm_requires(turbomind_kernels=False)
            def test_both(self): pass
        """,
    )
    result = pytester.runpytest("-p", "no:xdist", "-rs", "--lm-hardware=mixed.toml", "test_split.py",
                                "-o", "lm_markers=lmdeploy")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines_random([
        "SKIPPED * needs compute capability >= 9.0; GPU 1 (B) has 8.0",
        "SKIPPED * needs 30 GiB of GPU memory; GPU 1 (B) has 20 GiB",
        "SKIPPED * needs 8 GPUs; found 3: GPU 0 (A), GPU 1 (B), GPU 2 (C)",
    ])
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=mixed.toml", "test_contradiction.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_contradiction.py::TestK::test_both: lm_requires: "
                                 "turbomind_kernels=True and turbomind_kernels=False both asked*"])


def test_a_test_needing_more_nodes_skips_on_a_single_node_profile(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pair='nodes = 2\n[[gpus]]\nname = "A"\ncapability = "9.0"\n'
                                    'memory_total = "80GiB"\ncount = 8\n')
    pytester.makepyfile(test_n="""
        import pytest

        @pytest.mark.lm_requires(nodes=2, gpus=8)
        def test_two_nodes(): pass
        """)
    result = pytester.runpytest("-p", "no:xdist", "-rs", "--lm-hardware=h100x8")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * needs 2 nodes; profile 'h100x8' has 1 node of 8 GPUs"])
    pytester.runpytest("-p", "no:xdist", "--lm-hardware=pair.toml").assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x8", "--lm-require=nodes")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*needs 2 nodes; profile 'h100x8' has 1 node of 8 GPUs (--lm-require=nodes)"])


def test_a_relative_model_path_found_nowhere_says_where_it_was_looked_for(pytester: pytest.Pytester) -> None:
    sub = pytester.mkdir("sub")
    sub.joinpath("test_m.py").write_text(
        "import pytest\n@pytest.mark.lm_model('models/missing')\ndef test_m(lm_detection): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*lm_model('models/missing') (not found under {sub}, {pytester.path}; then "
                                 "tried as a hub id): models/missing: not a local path*"])


class TurbomindEngineConfig:  # LMDeploy's names; never imported from LMDeploy
    def __init__(self, tp: int = 1) -> None:
        self.tp = tp


class PytorchEngineConfig:
    pass


class _Raising(Mapping[str, Any]):
    """A suite's own mapping type that fails in its own code."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(["backend"])

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(("value", "backend"), [
    ("turbomind", "turbomind"), ("pytorch", "pytorch"), ("vllm", "vllm"),
    (TurbomindEngineConfig, "turbomind"), (TurbomindEngineConfig(tp=2), "turbomind"),
    (type("MyPytorch", (PytorchEngineConfig,), {}), "pytorch"),
    ({"backend": "pytorch", "tp": 2}, "pytorch"), ({"backend": PytorchEngineConfig}, "pytorch"),
    ({"backend": {"backend": "turbomind"}}, None), ({"tp": 1}, None), (_Raising(), None),
    (None, None), (3, None), (["turbomind"], None), (object, None),
])  # fmt: skip
def test_the_backend_a_suites_own_parameter_names(value: object, backend: str | None) -> None:
    assert suite_backend(value) == backend
