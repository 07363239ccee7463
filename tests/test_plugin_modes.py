"""--lm-backend modes through pytester: ids, setup-time skips, --lm-require, plan, header, summary."""

from __future__ import annotations

import json

import pytest

MODELS = """
import pytest

@pytest.mark.lm_model("pt_model")
def test_pt_model(lm_backend):
    assert lm_backend == "pytorch"

@pytest.mark.lm_model("tm_model")
def test_tm_model(lm_backend):
    assert lm_backend == "turbomind"

def test_unbound(lm_backend):
    assert lm_backend

@pytest.mark.lm_model("tm_model")
def test_detection_only(lm_detection):
    assert lm_detection.backend == "turbomind"

def test_plain():
    pass
"""


def write_models(pytester: pytest.Pytester) -> None:
    for name, arch in (("pt_model", "MistralForCausalLM"), ("tm_model", "LlamaForCausalLM")):
        folder = pytester.path / name
        folder.mkdir()
        config = {"architectures": [arch], "model_type": arch[:-11].lower(), "hidden_size": 128,
                  "num_attention_heads": 2, "num_hidden_layers": 2, "vocab_size": 1024}
        (folder / "config.json").write_text(json.dumps(config))


def write_profile(pytester: pytest.Pytester, name: str, *, turbomind: bool, gpus: int = 1,
                  capability: str = "9.0", lmdeploy: str = "0.18.0") -> str:
    packages = {"lmdeploy": lmdeploy, "torch": "2.11.0", "transformers": "5.17.0"}
    if turbomind:
        packages["lmdeploy.turbomind"] = lmdeploy
    data = {"name": name, "cuda": "13.0", "driver": "580.159.04", "packages": packages,
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "capability": capability, "memory_total": "80GiB",
                      "count": gpus}] if gpus else []}
    path = pytester.path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    write_models(pytester)
    pytester.makepyfile(test_suite=MODELS)
    return pytester


def test_auto_gives_each_model_detections_backend(suite: pytest.Pytester) -> None:
    profile = write_profile(suite, "h100-tm", turbomind=True)
    result = suite.runpytest("--lm-backend=auto", f"--lm-hardware={profile}", "--lm-lmdeploy=0.18.0", "-v")
    result.assert_outcomes(passed=5)
    # auto adds no ids: the same node ids on every runner
    result.stdout.fnmatch_lines(
        ["*test_suite.py::test_pt_model PASSED*", "*test_suite.py::test_unbound PASSED*"]
    )


def test_auto_skips_at_setup_with_wanted_and_found(suite: pytest.Pytester) -> None:
    profile = write_profile(suite, "h200-pt", turbomind=False)
    result = suite.runpytest(f"--lm-hardware={profile}", "--lm-lmdeploy=0.18.0", "-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines([
        "SKIPPED [[]1[]] test_suite.py:*: backend turbomind needs LMDeploy's TurboMind extension; "
        "lmdeploy 0.18.0 is installed without it",
    ])


def test_release_decides_auto(suite: pytest.Pytester) -> None:
    # Mistral was on TurboMind until 0.14.0: under 0.10.2 test_pt_model gets turbomind and fails
    profile = write_profile(suite, "h100-tm", turbomind=True)
    result = suite.runpytest(f"--lm-hardware={profile}", "--lm-lmdeploy=0.10.2", "-q")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*assert 'turbomind' == 'pytorch'*"])


def test_a_profiles_stated_lmdeploy_decides_auto_unless_lm_lmdeploy_is_given(suite: pytest.Pytester) -> None:
    """A fake runner's rules were this machine's installed (else the newest) release, whatever LMDeploy
    the profile stated; a fleet's runners already used their own."""
    old = write_profile(suite, "h100-old", turbomind=True, lmdeploy="0.10.2")
    result = suite.runpytest(f"--lm-hardware={old}", "-q")
    result.assert_outcomes(passed=4, failed=1)  # Mistral on TurboMind under 0.10.2
    result.stdout.fnmatch_lines(["*assert 'turbomind' == 'pytorch'*"])
    suite.runpytest(f"--lm-hardware={old}", "--lm-lmdeploy=0.18.0").assert_outcomes(passed=5)
    # lm_detection outside auto (read by the fixture, not at setup) follows the same release
    suite.makepyfile(test_det="""
        import pytest

        @pytest.mark.lm_model("pt_model")
        def test_det(lm_detection):
            assert (lm_detection.release, lm_detection.backend) == ("0.10.2", "turbomind")
    """)
    suite.runpytest(f"--lm-hardware={old}", "--lm-backend=pytorch", "test_det.py").assert_outcomes(passed=1)
    # +lmdeploy=VERSION states it too; the plan shows each profile's release
    plan = suite.runpytest("--lm-plan", "--lm-hardware=h100+lmdeploy=0.10.2,h100+lmdeploy", "-v")
    plan.stdout.fnmatch_lines([
        "lmbackend: --lm-plan over 2 profiles; --lm-backend=auto; LMDeploy rules per profile*",
        "lmbackend:   profile 'h100+lmdeploy=0.10.2': *; LMDeploy rules 0.10.2",
        "lmbackend:   profile 'h100+lmdeploy': *; LMDeploy rules 0.18.0",
        "*test_pt_model * run[[]turbomind[]] * run[[]pytorch[]]*",
    ])
    # a profile stating an LMDeploy older than any rules is a usage error, plan or run, whatever the
    # tests ask (the plan was an INTERNALERROR when none asked for a backend, a run one error per test)
    ancient = write_profile(suite, "ancient", turbomind=True, lmdeploy="0.3.0")
    for args in (("--lm-plan", "-k", "plain"), ("-k", "plain"), ()):
        result = suite.runpytest(f"--lm-hardware={ancient}", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: --lm-hardware: profile ancient: LMDeploy version '0.3.0'*"])
    # newer than any rules: the newest answer, and the header says so
    newer = suite.runpytest("--lm-hardware=h100+lmdeploy=99.0", "-k", "plain")
    newer.stdout.fnmatch_lines(["lmbackend: LMDeploy 99.0 (stated by profile 'h100+lmdeploy=99.0') is newer "
                                "than the newest rules known here (0.18.0): 0.18.0's rules answer for it"])
    # a pre-release as PEP 440 also spells it: 0.10.3-rc1 keeps 0.10.2's rules (Mistral on TurboMind)
    suite.runpytest("--lm-hardware=h100+lmdeploy=0.10.3-rc1", "-k", "pt_model").assert_outcomes(failed=1)


def test_all_parametrizes_over_every_registered_backend(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_all="""
        import pytest

        def test_x(lm_backend):
            pass

        @pytest.mark.not_turbomind
        def test_y():
            pass
    """)
    profile = write_profile(suite, "h200-pt", turbomind=False)
    result = suite.runpytest("test_all.py", "--lm-backend=all", f"--lm-hardware={profile}", "-v", "-rs",
                             "-o", "lm_markers=lmdeploy")
    result.stdout.fnmatch_lines([
        "*test_all.py::test_x[[]turbomind[]] SKIPPED*",
        "*test_all.py::test_x[[]pytorch[]] PASSED*",
        "*test_all.py::test_x[[]transformers[]] PASSED*",
        "*test_all.py::test_y PASSED*",  # not_turbomind binds nothing: its id is its own
    ])
    result.assert_outcomes(passed=3, skipped=1)


def test_ids_are_the_same_whatever_the_hardware(suite: pytest.Pytester) -> None:
    def ids(*args: str) -> list[str]:
        result = suite.runpytest("--collect-only", "-q", *args)
        return [line for line in result.outlines if "::" in line]

    for mode in ("auto", "all", "pytorch,transformers"):
        with_tm = ids(f"--lm-backend={mode}", f"--lm-hardware={write_profile(suite, 'a', turbomind=True)}")
        cpu = ids(f"--lm-backend={mode}", "--lm-hardware=cpu")
        assert with_tm == cpu and with_tm, mode


def test_names_mode_and_markers(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_names="""
        import pytest

        @pytest.mark.pytorch
        def test_pt_only(lm_backend):
            pass

        def test_any(lm_backend):
            pass

        @pytest.mark.pytorch
        def test_needs_pytorch():
            pass
    """)
    result = suite.runpytest("test_names.py", "--lm-backend=turbomind", "--lm-hardware=cpu", "-v", "-rs",
                             "-o", "lm_markers=lmdeploy")
    result.stdout.fnmatch_lines([
        "*test_pt_only[[]turbomind[]] SKIPPED*",
        "*test_any[[]turbomind[]] SKIPPED*",
        "*test_needs_pytorch SKIPPED*",  # not bound: the pytorch mark asks for the backend, by its name
    ])
    result.stdout.fnmatch_lines_random([
        "SKIPPED*test is marked for only pytorch; --lm-backend=turbomind gives turbomind",
        "SKIPPED*test_names.py:*: backend pytorch needs lmdeploy installed*",
    ])


def test_none_skips_backend_bound_only(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--lm-backend=none", "--lm-hardware=cpu", "-rs")
    result.assert_outcomes(passed=2, skipped=3)
    result.stdout.fnmatch_lines(["*--lm-backend=none: backend-bound tests do not run*"])


def test_lm_require_turns_skips_into_failures(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_req="""
        import pytest

        @pytest.mark.gpu_num_2
        def test_two():
            pass
    """)
    suite.makeini("[pytest]\nlm_markers = lmdeploy\n")
    result = suite.runpytest("test_req.py", "--lm-hardware=h100", "--lm-require=gpu")
    result.assert_outcomes(errors=1)  # failed at setup, as pytest reports any setup failure
    result.stdout.fnmatch_lines(["*needs 2 GPUs; found 1*(--lm-require=gpu)*"])
    result = suite.runpytest("test_req.py", "--lm-hardware=h100x2", "--lm-require=gpu")
    result.assert_outcomes(passed=1)
    # `all`: every kind fails instead of skipping
    result = suite.runpytest("test_req.py", "--lm-hardware=h100", "--lm-require=all")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*needs 2 GPUs; found 1*(--lm-require=gpu)*"])


def test_bad_options_are_usage_errors(suite: pytest.Pytester) -> None:
    for args, message in [
        (["--lm-backend=vllm"], "*unknown backend(s) vllm; known: turbomind, pytorch, transformers*"),
        (["--lm-backend=auto,pytorch"], "*cannot be combined*"),
        (["--lm-require=gpus_typo"], "*unknown kind(s) gpus_typo*"),
        (["--lm-hardware=nosuch"], "*hardware profile 'nosuch': no such profile*"),
        (["--lm-hardware=h100,a10"], "*several profiles are for --lm-plan only*"),
        (["--lm-lmdeploy=0.0.1"], "*--lm-lmdeploy=0.0.1*"),
    ]:
        result = suite.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_ini_keys_set_the_defaults(suite: pytest.Pytester) -> None:
    suite.makeini("""
        [pytest]
        lm_backend = none
        lm_hardware = cpu
    """)
    result = suite.runpytest("-rs")
    result.assert_outcomes(passed=2, skipped=3)
    suite.makeini("""
        [pytest]
        lm_backend = auto,all
    """)
    result = suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini lm_backend*cannot be combined*"])


def test_plan_prints_columns_and_runs_nothing(suite: pytest.Pytester) -> None:
    tm = write_profile(suite, "h100-tm", turbomind=True)
    pt = write_profile(suite, "h200-pt", turbomind=False)
    result = suite.runpytest("--lm-plan", f"--lm-hardware={tm},{pt},cpu", "--lm-lmdeploy=0.18.0")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*lm-plan: 5 tests, --lm-backend=auto, LMDeploy rules 0.18.0; nothing was run",
        "test * h100-tm * h200-pt * cpu",
        "test_suite.py::test_pt_model * run[[]pytorch[]] * run[[]pytorch[]] * skip:backend[[]pytorch[]]",
        "test_suite.py::test_tm_model * run[[]turbomind[]] * skip:backend[[]turbomind[]] * skip:backend*",
        "test_suite.py::test_unbound * run[[]turbomind[]] * run[[]pytorch[]] * run[[]transformers[]]",
        "h100-tm: 5 would run, 0 would skip, 0 would fail",
        "h200-pt: 4 would run, 1 would skip, 0 would fail",
    ])
    assert "passed" not in result.stdout.str()


def test_plan_with_xdist_is_a_usage_error(suite: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = suite.runpytest("--lm-plan", "--lm-hardware=cpu", "-n", "2", "-p", "xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lm-plan runs nothing, so it takes no -n*"])


def test_plan_shows_required_kinds_as_failures(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--lm-plan", "--lm-hardware=cpu", "--lm-require=backend")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["test_suite.py::test_pt_model * FAIL:backend",
                                 "cpu: 3 would run, 0 would skip, 2 would fail",
                                 "  backend: 2 would fail"])


def test_a_required_gpu_fact_fails_on_a_runner_without_the_gpus(pytester: pytest.Pytester) -> None:
    """--lm-require=capability on a runner whose driver broke (no GPU): the capability a test
    requires is not met, so the test fails, in the run and in the plan."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_requires(capability=">=9.0")
        def test_hopper(): pass

        @pytest.mark.lm_requires(gpus=2)
        def test_count_only(): pass
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu", "--lm-require=capability")
    result.assert_outcomes(errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs 1 GPU; profile 'cpu' has none, so the required capability was not "
                                 "met (--lm-require=capability)*"])
    plan = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=cpu,h100",
                              "--lm-require=capability")
    plan.stdout.fnmatch_lines(["*test_hopper * FAIL:capability * run",
                               "*test_count_only * skip:gpu * skip:gpu"])


def test_header_and_summary(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--lm-hardware=cpu", "--lm-lmdeploy=0.18.0")
    result.stdout.fnmatch_lines([
        "lmbackend: --lm-backend=auto; LMDeploy rules 0.18.0; backends available: transformers",
        "lmbackend:   turbomind: *",
        "*lmbackend skips by kind*",
        "backend: 2 skipped",
        "  1 x backend pytorch needs lmdeploy installed*",
    ])


def test_summary_counts_survive_xdist(suite: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    result = suite.runpytest("-n", "2", "--lm-hardware=cpu", "-p", "xdist")
    result.assert_outcomes(passed=3, skipped=2)
    result.stdout.fnmatch_lines(["*lmbackend skips by kind*", "backend: 2 skipped"])


def test_models_relative_to_the_test_file(pytester: pytest.Pytester) -> None:
    sub = pytester.mkpydir("pkg")
    (sub / "m").mkdir()
    (sub / "m" / "config.json").write_text(json.dumps({"architectures": ["ChatGLMModel"]}))
    (sub / "test_rel.py").write_text(
        "import pytest\n\n@pytest.mark.lm_model('m')\n"
        "def test_m(lm_detection):\n    assert lm_detection.backend == 'pytorch'\n"
    )
    pytester.runpytest("--lm-lmdeploy=0.18.0").assert_outcomes(passed=1)


def test_unreadable_model_fails_the_test_not_the_session(pytester: pytest.Pytester) -> None:
    (pytester.path / "broken").mkdir()
    (pytester.path / "broken" / "config.json").write_text("{not json")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.lm_model("broken")
        def test_a(lm_backend):
            pass

        def test_b():
            pass
    """)
    result = pytester.runpytest("--lm-hardware=cpu")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*lm_model('broken'): *config.json*"])
    assert "INTERNALERROR" not in result.stdout.str()


def test_profile_from_environment(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_LM_HARDWARE", write_profile(suite, "h100-tm", turbomind=True))
    result = suite.runpytest("--lm-lmdeploy=0.18.0")
    result.assert_outcomes(passed=5)


def test_a_bad_profile_from_the_environment_is_one_usage_error(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".toml", bad='[[gpus]]\nname = "X"\ncapability = "abc"\nmemory_total = "1GiB"\n')
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    monkeypatch.setenv("PYTEST_LM_HARDWARE", "bad.toml")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$PYTEST_LM_HARDWARE: *bad.toml*capability*"])
    assert "--lm-hardware" not in result.stderr.str()
    monkeypatch.setenv("PYTEST_LM_HARDWARE", "h100x8,a10")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$PYTEST_LM_HARDWARE=h100x8,a10: several profiles are for --lm-plan only*"])


def test_the_environment_outranks_the_ini_and_the_option_outranks_both(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nlm_hardware = a100-40gb\n")
    pytester.makepyfile(
        """
        import os
        def test_which(lm_hardware):
            assert lm_hardware.profile == os.environ["EXPECTED_PROFILE"]
        """
    )
    monkeypatch.delenv("PYTEST_LM_HARDWARE", raising=False)
    monkeypatch.setenv("EXPECTED_PROFILE", "a100-40gb")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)
    monkeypatch.setenv("PYTEST_LM_HARDWARE", "h100")
    monkeypatch.setenv("EXPECTED_PROFILE", "h100")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)
    monkeypatch.setenv("EXPECTED_PROFILE", "t4")
    pytester.runpytest("-p", "no:xdist", "--lm-hardware=t4").assert_outcomes(passed=1)


def test_plan_columns_of_profiles_with_one_name_are_told_apart(pytester: pytest.Pytester) -> None:
    for folder, cap in (("a", "9.0"), ("b", "8.0")):
        pytester.mkdir(folder).joinpath("p.toml").write_text(
            f'name = "ci-h100"\n[[gpus]]\nname = "X"\ncapability = "{cap}"\nmemory_total = "80GiB"\n')
    pytester.makepyfile("import pytest\n@pytest.mark.lm_requires(capability='>=9.0')\ndef test_h(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-plan", "--lm-hardware=a/p.toml,b/p.toml")
    result.stdout.fnmatch_lines(["test * ci-h100 (a/p.toml) * ci-h100 (b/p.toml)",
                                 "*test_h * run * skip:capability"])


def test_a_profile_stating_an_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", runner='backends = ["pytorch", "vllm"]\n')
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=runner.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lm-hardware: hardware profile 'runner': field 'backends': 'vllm' "
                                 "is not a registered backend (registered: turbomind, pytorch, *"])


def test_pytest_skip_marks_come_before_backend_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.skip(reason="not today")
        def test_skipped(lm_backend): pass

        @pytest.mark.skipif(True, reason="never here")
        def test_skipped_if(lm_backend): pass
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-backend=all", "--lm-hardware=cpu", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped") == 6 and "passed" not in outcomes
    assert result.stdout.str().count("not today") == 1 and result.stdout.str().count("never here") == 1
    result.stdout.fnmatch_lines(["SKIPPED [[]3[]] *: not today", "SKIPPED [[]3[]] *: never here"])
    assert "lmbackend skips by kind" not in result.stdout.str()


def test_a_test_that_parametrizes_lm_backend_itself_keeps_its_own_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("lm_backend", ["pytorch", "transformers"], indirect=True)
        def test_mine(lm_backend):
            assert lm_backend in ("pytorch", "transformers")
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-backend=all", "--lm-hardware=cpu", "-v")
    assert "duplicate parametrization" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_mine[[]pytorch[]] SKIPPED*", "*test_mine[[]transformers[]] PASSED*"])


def test_an_unknown_backend_in_the_ini_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "-o", "lm_backend=bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini lm_backend: unknown backend(s) bogus; known: *"])


def test_lmdeploy_markers_select_the_parameters_of_their_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(lm_backend): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-backend=all", "--lm-hardware=cpu", "--collect-only",
                                "-q", "-m", "turbomind", "--strict-markers", "-o", "lm_markers=lmdeploy")
    selected = [line.split("::")[1] for line in result.outlines if "::" in line]
    assert selected == ["test_x[turbomind]"]
    # without the opt-in the parameters carry no mark of that name: `turbomind` is the suite's word
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--lm-backend=all", "--lm-hardware=cpu",
                                           "--collect-only", "-q", "-m", "turbomind")
    assert [line for line in result.outlines if "::" in line] == []
