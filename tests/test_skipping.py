"""pytest's own skip marks in the plan: skip, skipif, xfail(run=False), empty parameter sets."""

from __future__ import annotations

import pytest

from pytest_lmbackend.skipping import PYTEST_KIND, pytest_skip

# Shapes of LMDeploy's suites: autotest's model lists come from its config and are empty on a
# runner whose config lists no model of that kind ([NOTSET] items), tests/ carries skipif(True)
# for kernels it parks, and kernel tests skip on the GPU's capability read at import.
SHAPES = """
    import sys

    import pytest

    def get_turbomind_model_list(tp_num):
        return []

    @pytest.mark.gpu_num_1
    @pytest.mark.parametrize("model", get_turbomind_model_list(tp_num=1))
    def test_restful_chat_tp1(model):
        pass

    @pytest.mark.skip(reason="fix it later")
    @pytest.mark.gpu_num_2
    def test_pipeline_chat_tp2():
        pass

    @pytest.mark.skipif(True, reason="not supported yet")
    def test_fused_moe():
        pass

    @pytest.mark.skipif("sys.platform == 'linux'", reason="not on linux")
    def test_string_condition():
        pass

    @pytest.mark.skipif(False, reason="never")
    @pytest.mark.gpu_num_2
    def test_false_condition():
        pass

    @pytest.mark.xfail(run=False, reason="hangs")
    def test_xfail_not_run():
        pass

    @pytest.mark.xfail("sys.platform == 'linux'", run=False, reason="hangs on linux")
    def test_xfail_not_run_here():
        pass

    @pytest.mark.xfail(reason="flaky")
    def test_xfail_runs():
        pass

    @pytest.mark.skipif("no_such_name", reason="typo")
    def test_bad_condition():
        pass

    def test_plain():
        pass
"""


def plan_cells(result: pytest.RunResult) -> dict[str, list[str]]:
    rows = {}
    for line in result.outlines:
        if "::" in line and not line.startswith(" "):
            name, *cells = line.split()
            rows[name.split("::", 1)[1]] = cells
    return rows


def test_the_plan_shows_what_pytest_skips_as_skip_in_every_column(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_shapes=SHAPES)
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=cpu,h100x2",
                                "-o", "lm_markers=lmdeploy")
    assert result.ret == 0, result.stdout.str()
    rows = plan_cells(result)
    for name in ("test_restful_chat_tp1[NOTSET]", "test_pipeline_chat_tp2", "test_fused_moe",
                 "test_string_condition", "test_xfail_not_run", "test_xfail_not_run_here"):
        assert rows[name] == ["skip:pytest", "skip:pytest"], name
    assert rows["test_false_condition"] == ["skip:gpu", "run"]
    assert rows["test_xfail_runs"] == ["run", "run"]
    assert rows["test_plain"] == ["run", "run"]
    assert rows["test_bad_condition"] == ["FAIL:pytest", "FAIL:pytest"]
    result.stdout.fnmatch_lines([
        "cpu: 2 would run, 7 would skip, 1 would fail",
        "  pytest: 1 would fail",
        "    1 x pytest cannot evaluate a skip mark: Error evaluating 'skipif' condition no_such_name "
        "NameError: name 'no_such_name' is not defined (its condition was evaluated on this machine*",
        "  pytest: 6 skipped",
        "    1 x not run by pytest: xfail(run=False): hangs",
        "    1 x not run by pytest: xfail(run=False): hangs on linux (its condition was evaluated on this "
        "machine; a runner may decide otherwise)",
        "    1 x skipped by pytest: fix it later",
        "    1 x skipped by pytest: got empty parameter set for (model)",
        "    1 x skipped by pytest: not on linux (its condition was evaluated on this machine; a runner may "
        "decide otherwise)",
        "    ... and 1 more reason",
        "  gpu: 1 skipped",
        "h100x2: 3 would run, 6 would skip, 1 would fail",
    ])
    # the run agrees with the plan: pytest skips exactly those
    run = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x2", "-k", "not bad_condition")
    run.assert_outcomes(passed=2, skipped=4, xfailed=2, xpassed=1)  # xfail(run=False): "[NOTRUN]"


def test_runxfail_runs_what_xfail_would_not(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_shapes=SHAPES)
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=h100x2", "--runxfail",
                                "-k", "xfail")
    assert plan_cells(result) == {"test_xfail_not_run": ["run"], "test_xfail_not_run_here": ["run"],
                                  "test_xfail_runs": ["run"]}


def test_empty_parameter_sets_marked_xfail_by_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nempty_parameter_set_mark = xfail\n")
    pytester.makepyfile(test_shapes=SHAPES)
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=h100", "-k", "restful")
    assert plan_cells(result) == {"test_restful_chat_tp1[NOTSET]": ["skip:pytest"]}
    result.stdout.fnmatch_lines(["*1 x not run by pytest: xfail(run=False): got empty parameter set*"])


def test_what_decided_it_is_told_apart(pytester: pytest.Pytester) -> None:
    """Conditions evaluated here are marked local: a fleet must not place a test by them."""
    pytester.makepyfile(test_shapes=SHAPES)
    items = {item.name: item for item in pytester.getitems(pytester.path / "test_shapes.py")}
    found = {name: pytest_skip(item) for name, item in items.items()}
    assert found["test_plain"] is None and found["test_false_condition"] is None
    assert found["test_xfail_runs"] is None
    fixed = ("test_restful_chat_tp1[NOTSET]", "test_pipeline_chat_tp2", "test_xfail_not_run")
    local = ("test_fused_moe", "test_string_condition", "test_xfail_not_run_here", "test_bad_condition")
    for name in fixed:
        skip = found[name]
        assert skip is not None and not skip.local and not skip.error, name
    for name in local:
        skip = found[name]
        assert skip is not None and skip.local, name
    bad = found["test_bad_condition"]
    assert bad is not None and bad.error
    verdict = bad.outcome().verdict
    assert verdict is not None and verdict.kind == PYTEST_KIND and verdict.error
    # a pytest skip never becomes a failure through --lm-require, whatever the kinds
    skipped = found["test_fused_moe"]
    assert skipped is not None
    verdict = skipped.outcome().verdict
    assert verdict is not None and verdict.failing_kind({"gpu", "capability", "backend"}) is None


def test_an_unconditional_skip_next_to_a_condition_holds_anywhere(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.skipif("1 == 1", reason="here")
        @pytest.mark.skip(reason="always")
        def test_both(): pass

        @pytest.mark.skipif(reason="no condition")
        def test_bare_skipif(): pass
        """
    )
    path = pytester.path / "test_an_unconditional_skip_next_to_a_condition_holds_anywhere.py"
    skips = [pytest_skip(item) for item in pytester.getitems(path)]
    assert [(s.local if s else None) for s in skips] == [False, False]


def test_the_header_lists_every_profile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=cpu,a10x2,h100x8")
    result.stdout.fnmatch_lines([
        "lmbackend: --lm-plan over 3 profiles; --lm-backend=auto; LMDeploy rules *",
        "lmbackend:   profile 'cpu': no GPU; driver none, CUDA none; packages: this interpreter's: *",
        "lmbackend:   profile 'a10x2': 2 x NVIDIA A10 (sm86 = 8.6, 22.49 GiB); driver 550.127.05, *",
        "lmbackend:   profile 'h100x8': 8 x NVIDIA H100 80GB HBM3 (sm90 = 9.0, 79.65 GiB); *",
    ])
    assert "GPU 0 -> physical 0" not in result.stdout.str()  # not the first profile in full, then nothing
