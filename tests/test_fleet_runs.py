"""Fleet mode through pytest: runners faked with PYTEST_LM_HARDWARE run every test once between them."""

from __future__ import annotations

import json
import re

import pytest

SUITE = """
    import pytest

    def test_anywhere(): pass

    @pytest.mark.gpu_num_1
    def test_one_gpu(): pass

    @pytest.mark.lm_requires(gpus=4, capability=">=9.0")
    def test_four_hopper(): pass

    @pytest.mark.gpu_num_16
    def test_sixteen(): pass

    @pytest.mark.skip(reason="fix it later")
    @pytest.mark.gpu_num_8
    def test_parked(): pass

    @pytest.mark.skipif("1 == 1", reason="decided where it runs")
    @pytest.mark.gpu_num_2
    def test_skipif_on_the_runner(): pass

    @pytest.mark.parametrize("size", [1, 2, 3])
    @pytest.mark.lm_requires(vram="30GiB")
    def test_large(size): pass

    @pytest.mark.lm_backend("transformers")
    def test_reference(lm_backend): pass
"""
FLEET = "--lm-fleet=cpu,rtx4090,h100x8"
RUNNERS = ("cpu", "rtx4090", "h100x8")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")  # the suite uses LMDeploy's gpu_num_N
    return pytester


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """node id -> PASSED / SKIPPED / FAILED / ERROR, from a -v run."""
    found = {}
    for line in result.outlines:
        match = re.match(r"^(?:\.\./)*(test_\S+::\S+) (PASSED|SKIPPED|FAILED|ERROR|XFAIL|XPASS)\b", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("-p", "no:xdist", "--collect-only", "-q", *args)
    return [line for line in result.outlines if "::" in line]


def run_runner(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *args: str,
    hardware: str | None = None,
) -> pytest.RunResult:
    monkeypatch.setenv("PYTEST_LM_HARDWARE", hardware or name)
    try:
        return pytester.runpytest("-p", "no:xdist", "-v", "-rs", FLEET, f"--lm-runner={name}", *args)
    finally:
        monkeypatch.delenv("PYTEST_LM_HARDWARE")


def test_three_runners_together_run_every_test_once(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = collected(suite)
    assert len(every) == 10
    plan = suite.runpytest("-p", "no:xdist", FLEET, "--lm-plan-json=plan.json")
    data = json.loads((suite.path / "plan.json").read_text())
    seen: dict[str, str] = {}
    for name in RUNNERS:
        result = run_runner(suite, monkeypatch, name)
        assert result.ret == 0, result.stdout.str()
        ran = outcomes(result)
        assert not set(ran) & set(seen), f"{name} ran tests another runner ran"
        assert sorted(ran) == sorted(data["runners"][name]), name  # the plan's assignment is the run's
        seen.update({nodeid: f"{name}:{outcome}" for nodeid, outcome in ran.items()})
        result.stdout.fnmatch_lines([f"*{10 - len(ran)} deselected*"])
    assert sorted(seen) == sorted(every)  # every test exactly once
    assert seen == {
        "test_suite.py::test_anywhere": "cpu:PASSED",
        "test_suite.py::test_parked": "cpu:SKIPPED",  # pytest skips it anywhere: the first runner
        # not transformers: `cpu` states no packages, and a fleet never reads them from this machine
        "test_suite.py::test_reference": "h100x8:SKIPPED",
        "test_suite.py::test_one_gpu": "rtx4090:PASSED",
        # a condition is the runner's to evaluate: placed by its requirements, skipped there
        "test_suite.py::test_skipif_on_the_runner": "h100x8:SKIPPED",
        "test_suite.py::test_four_hopper": "h100x8:PASSED",
        "test_suite.py::test_large[1]": "h100x8:PASSED",
        "test_suite.py::test_large[2]": "h100x8:PASSED",
        "test_suite.py::test_large[3]": "h100x8:PASSED",
        "test_suite.py::test_sixteen": "h100x8:SKIPPED",
    }
    assert data["orphans"] == ["test_suite.py::test_sixteen", "test_suite.py::test_reference"]
    assert plan.ret == pytest.ExitCode.TESTS_FAILED  # orphans make the plan fail


def test_an_orphan_is_named_on_the_last_runner(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_runner(suite, monkeypatch, "h100x8")
    result.stdout.fnmatch_lines(
        [
            "*lmbackend fleet*",
            "runner 'h100x8': 7 of 10 tests are this runner's; the others went to cpu (2), rtx4090 (1)",
            "2 tests can run on no runner of the fleet; this runner, the last, reports them: skipped, "
            "or failed under --lm-require=fleet",
            "*lmbackend skips by kind*",
            "fleet: 2 skipped",
            "SKIPPED [[]1[]] test_suite.py:*: can run on no runner of the fleet: cpu: needs 16 GPUs; "
            "profile 'cpu' has none; rtx4090: needs 16 GPUs; found 1: GPU 0 (NVIDIA GeForce RTX 4090); "
            "h100x8: needs 16 GPUs; found 8: *",
        ]
    )
    other = run_runner(suite, monkeypatch, "cpu")
    other.stdout.fnmatch_lines(
        ["2 tests can run on no runner of the fleet; the last runner, h100x8, reports *"]
    )
    required = run_runner(suite, monkeypatch, "h100x8", "--lm-require=fleet")
    assert required.ret == pytest.ExitCode.TESTS_FAILED
    required.stdout.fnmatch_lines(
        ["*ERROR at setup of test_sixteen*", "can run on no runner of the fleet: *(--lm-require=fleet)"]
    )
    assert outcomes(required)["test_suite.py::test_sixteen"] == "ERROR"  # failed at setup


def test_a_runner_faking_less_than_its_profile_is_a_usage_error(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_runner(suite, monkeypatch, "h100x8", hardware="h100x2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--lm-runner=h100x8: this machine is not what runner 'h100x8' of the fleet claims (h100x8); its "
            "hardware (profile 'h100x2', faked) lacks:",
            "*GPUs: needs 8 x NVIDIA H100 80GB HBM3 (compute capability >= 9.0, >= 79.65 GiB); found 2: *; "
            "6 of the 8 without a GPU that matches",
        ]
    )
    assert "passed" not in result.stdout.str()
    # capability counts too: an A100 box is not an H100 runner however many GPUs it has
    result = run_runner(suite, monkeypatch, "rtx4090", hardware="a100-80gbx8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs 1 x NVIDIA GeForce RTX 4090 (compute capability >= 8.9, *"])
    # more than claimed is fine
    assert run_runner(suite, monkeypatch, "rtx4090", hardware="h100x8").ret == 0


def test_a_profiles_stated_packages_are_checked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makefile(
        ".toml",
        claimed='name = "gpu-lmdeploy"\n[packages]\nlmdeploy = "0.18.0"\n'
        '"lmdeploy.turbomind" = "0.18.0"\n[[gpus]]\nname = "X"\ncapability = "9.0"\n'
        'memory_total = "80GiB"\n',
    )
    pytester.makefile(
        ".toml",
        actual='name = "box"\n[packages]\nlmdeploy = "0.14.0"\n'
        '[[gpus]]\nname = "X"\ncapability = "9.0"\nmemory_total = "80GiB"\n',
    )
    pytester.makepyfile("def test_a(): pass\n")
    monkeypatch.setenv("PYTEST_LM_HARDWARE", "actual.toml")
    result = pytester.runpytest("-p", "no:xdist", "--lm-fleet=cpu,claimed.toml", "--lm-runner=gpu-lmdeploy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*packages: lmdeploy 0.18.0: found 0.14.0; LMDeploy's TurboMind extension: not installed"]
    )


def test_runner_and_fleet_usage_errors(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    for args, message in [
        (
            [FLEET, "--lm-runner=a100"],
            "*--lm-runner=a100: no such runner in the fleet; its runners: cpu, rtx4090, h100x8*",
        ),
        (["--lm-runner=cpu"], "*--lm-runner=cpu: no fleet is configured; give --lm-fleet=*"),
        (["--lm-plan-json=x.json"], "*--lm-plan-json=x.json: no fleet is configured*"),
        (["--lm-fleet=cpu,nosuch"], "*--lm-fleet: hardware profile 'nosuch': no such profile*"),
        (["--lm-fleet=cpu,cpu"], "*--lm-fleet: 2 runners are named 'cpu' (cpu, cpu)*"),
        ([FLEET, "--lm-runner=cpu,h100x8"], "*expected the name of one runner of the fleet*"),
        ([FLEET, "--lm-require=fleet,gpus_typo"], "*unknown kind(s) gpus_typo*"),
        ([FLEET, "--lm-plan", "--lm-hardware=a10,h100"], "*--lm-hardware=a10,h100: with a fleet (--lm-fleet) "
                                                         "the plan's columns are its runners*"),
    ]:
        result = suite.runpytest("-p", "no:xdist", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    monkeypatch.setenv("PYTEST_LM_RUNNER", "a100")
    result = suite.runpytest("-p", "no:xdist", FLEET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$PYTEST_LM_RUNNER=a100: no such runner in the fleet*"])


def test_the_plan_shows_the_assignment_totals_and_orphans(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-p", "no:xdist", FLEET, "--lm-plan")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "lmbackend: fleet (cheapest first, --lm-fleet): cpu, rtx4090, h100x8; planning",
            "lmbackend:   profile 'cpu': no GPU; *; LMDeploy rules *",
            "lmbackend:   profile 'rtx4090': 1 x NVIDIA GeForce RTX 4090 *",
            "lmbackend:   profile 'h100x8': 8 x NVIDIA H100 80GB HBM3 *",
            "lm-plan: 10 tests, --lm-backend=auto, LMDeploy rules *; fleet (cheapest first): cpu, rtx4090, "
            "h100x8; nothing was run",
            "test * runner * cpu * rtx4090 * h100x8",
            "test_suite.py::test_anywhere * cpu * run * run * run",
            "test_suite.py::test_one_gpu * rtx4090 * skip:gpu * run * run",
            "test_suite.py::test_sixteen * h100x8 (orphan) * skip:gpu * skip:gpu * skip:gpu",
            "test_suite.py::test_parked * cpu * skip:pytest * skip:pytest * skip:pytest",
            "test_suite.py::test_skipif_on_the_runner * h100x8 * skip:pytest * skip:pytest * skip:pytest",
            "runners (cheapest first):",
            "  cpu: 2 tests; no durations recorded",
            "  rtx4090: 1 test; no durations recorded",
            "  h100x8: 5 tests + 2 orphans; no durations recorded",
            "orphans: 2 tests can run on no runner of the fleet; the last runner, h100x8, skips them *",
            "  test_suite.py::test_sixteen: can run on no runner of the fleet: cpu: needs 16 GPUs; *",
            "  test_suite.py::test_reference: can run on no runner of the fleet: cpu: backend transformers "
            "needs torch and transformers installed; not found on profile 'cpu'; *",
        ]
    )
    assert "passed" not in result.stdout.str()
    # -m / -k come first: without its orphans the same plan passes
    result = suite.runpytest("-p", "no:xdist", FLEET, "--lm-plan", "-k", "not sixteen and not reference")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["lm-plan: 8 tests, *", "orphans: none; every test can run on a runner of the fleet"]
    )


def test_durations_recorded_by_runners_estimate_their_cost(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makeconftest("""
        import time
        import pytest

        @pytest.fixture(autouse=True)
        def slow(request):
            if "large" in request.node.name:
                time.sleep(0.05)
    """)
    for name in RUNNERS:
        run_runner(suite, monkeypatch, name)
    recorded = json.loads((suite.path / ".pytest_cache/v/lmbackend/durations/h100x8").read_text())
    # only tests that ran are recorded (skips cost nothing and say nothing of a test's cost)
    assert set(recorded) == {
        "test_suite.py::test_four_hopper",
        *(f"test_suite.py::test_large[{n}]" for n in (1, 2, 3)),
    }
    assert all(recorded[f"test_suite.py::test_large[{n}]"] >= 0.05 for n in (1, 2, 3))
    result = suite.runpytest("-p", "no:xdist", FLEET, "--lm-plan")
    result.stdout.fnmatch_lines(
        [
            "  cpu: 2 tests; * s by last durations (1 of 2 timed)",
            "  rtx4090: 1 test; * s by last durations (1 of 1 timed)",
            "  h100x8: 5 tests + 2 orphans; * s by last durations (4 of 7 timed) <- bottleneck",
        ]
    )


def test_ini_fleet_files_beside_the_ini_and_the_runner_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ci = pytester.mkdir("ci")
    (ci / "gpu.toml").write_text(
        'name = "ci-gpu"\n[[gpus]]\nname = "X"\ncapability = "8.0"\nmemory_total = "40GiB"\ncount = 2\n'
    )
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\nlm_fleet =\n    cpu\n    ci/gpu.toml\n")
    pytester.makepyfile(
        test_s="import pytest\ndef test_a(): pass\n\n@pytest.mark.gpu_num_2\ndef test_b(): pass\n"
    )
    sub = pytester.mkdir("elsewhere")
    monkeypatch.chdir(sub)  # relative to the ini file, not to where pytest starts
    monkeypatch.setenv("PYTEST_LM_RUNNER", "ci-gpu")
    monkeypatch.setenv("PYTEST_LM_HARDWARE", str(ci / "gpu.toml"))
    result = pytester.runpytest("-p", "no:xdist", "-v", str(pytester.path))
    assert outcomes(result) == {"test_s.py::test_b": "PASSED"}
    result.stdout.fnmatch_lines(
        [
            "lmbackend: fleet (cheapest first, ini lm_fleet): cpu, ci-gpu; this job is runner "
            "'ci-gpu' ($PYTEST_LM_RUNNER)"
        ]
    )


def test_without_a_fleet_nothing_of_it_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        def pytest_configure(config):
            config.stash_fleet = config.pluginmanager.get_plugin("lmbackend-fleet")

        def pytest_report_header(config):
            return [f"FLEET-PLUGIN: {config.stash_fleet}"]
    """)
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest("-p", "no:xdist")
    result.stdout.fnmatch_lines(["FLEET-PLUGIN: None"])
    assert "lmbackend: fleet" not in result.stdout.str()
    assert "lmbackend fleet" not in result.stdout.str()


def test_xdist_inside_a_runner_selects_the_same_tests(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    alone = outcomes(run_runner(suite, monkeypatch, "h100x8"))
    recorded = suite.path / ".pytest_cache/v/lmbackend/durations/h100x8"
    recorded.unlink()
    monkeypatch.setenv("PYTEST_LM_HARDWARE", "h100x8")
    result = suite.runpytest_subprocess(
        "-p", "xdist", "-n", "2", "--lm-gpus-per-worker=4", "-v", "-rs", FLEET, "--lm-runner=h100x8"
    )
    assert result.ret == 0, result.stdout.str()
    found = {}
    for line in result.outlines:  # xdist prints "[gw0] [ 10%] PASSED test_suite.py::test_x"
        match = re.search(r"(PASSED|SKIPPED) (test_\S+::\S+)", line)
        if match:
            found[match.group(2)] = match.group(1)
    assert found == alone
    result.stdout.fnmatch_lines(
        ["runner 'h100x8': 7 of 10 tests are this runner's; the others went to cpu (2), rtx4090 (1)"]
    )
    # the controller records what its workers ran, as a single process does
    assert sorted(json.loads(recorded.read_text())) == sorted(n for n, o in alone.items() if o == "PASSED")


def test_backend_all_and_auto_assign_the_same_way_on_every_runner(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "llama").mkdir()
    (pytester.path / "llama" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16"})
    )
    pytester.makefile(
        ".toml",
        gpu_tm='name = "gpu-tm"\n[packages]\nlmdeploy = "0.18.0"\n'
        '"lmdeploy.turbomind" = "0.18.0"\ntorch = "2.11.0"\ntransformers = "5.17.0"\n'
        '[[gpus]]\nname = "NVIDIA H100 80GB HBM3"\ncapability = "9.0"\nmemory_total = "80GiB"\n',
    )
    pytester.makefile(
        ".toml", cpu_torch='name = "cpu-torch"\n[packages]\ntorch = "2.13.0"\ntransformers = "5.17.0"\n'
    )
    pytester.makepyfile(
        test_m="""
        import pytest

        @pytest.mark.lm_model("llama")
        def test_model(lm_backend): pass

        def test_plain(lm_backend): pass
    """
    )
    fleet = "--lm-fleet=cpu_torch.toml,gpu_tm.toml"
    for mode, expected in (
        (
            "all",
            {
                "cpu-torch": ["test_m.py::test_model[transformers]", "test_m.py::test_plain[transformers]"],
                "gpu-tm": [
                    "test_m.py::test_model[turbomind]",
                    "test_m.py::test_model[pytorch]",
                    "test_m.py::test_plain[turbomind]",
                    "test_m.py::test_plain[pytorch]",
                ],
            },
        ),
        ("auto", {"cpu-torch": ["test_m.py::test_plain"], "gpu-tm": ["test_m.py::test_model"]}),
    ):
        pytester.runpytest("-p", "no:xdist", fleet, f"--lm-backend={mode}", "--lm-plan-json=plan.json")
        data = json.loads((pytester.path / "plan.json").read_text())
        assert data["runners"] == expected, mode
        for runner, spec in (("cpu-torch", "cpu_torch.toml"), ("gpu-tm", "gpu_tm.toml")):
            monkeypatch.setenv("PYTEST_LM_HARDWARE", spec)
            result = pytester.runpytest(
                "-p", "no:xdist", "-v", fleet, f"--lm-backend={mode}", f"--lm-runner={runner}"
            )
            assert sorted(outcomes(result)) == sorted(expected[runner]), (mode, runner)
