"""Adopting the plugin in an existing suite: installed, it changes nothing; LMDeploy's suites opt in with
``lm_markers = lmdeploy`` and ``lm_backend_param = backend``.

The suites below copy the shapes of real ones (LMDeploy v0.16.0's ``autotest/`` and ``tests/``,
small-text's own ``pytorch`` marker, pytest-benchmark's comparisons); each test failed before these
rules and passes with them.
"""

from __future__ import annotations

import json

import pytest

# LMDeploy autotest's REST client tests (interface/restful/test_restful_generate.py): the backend is the
# suite's own class-level parameter; not_turbomind / not_pytorch only deselect with -m.
LMDEPLOY_RESTFUL = """
import pytest

BACKEND_LIST = ['turbomind', 'pytorch']
RESTFUL_MODEL_LIST = ['Qwen/Qwen3.5-27B', 'internlm/Intern-S1']


@pytest.mark.gpu_num_1
@pytest.mark.parametrize('backend', BACKEND_LIST)
@pytest.mark.parametrize('model_name', RESTFUL_MODEL_LIST)
class TestGenerateComprehensive:

    @pytest.fixture(autouse=True)
    def setup_api(self, model_name, backend):
        self.backend = backend

    def test_generate(self):
        pass

    @pytest.mark.not_turbomind
    def test_request_returns_experts(self):
        assert self.backend != 'turbomind'

    @pytest.mark.not_pytorch
    def test_logprobs(self):
        assert self.backend != 'pytorch'
"""

# small-text (tests/): its own `pytorch` marker means "needs torch installed"
SMALL_TEXT = """
import pytest

@pytest.mark.pytorch
def test_kimcnn_fit():
    pass

@pytest.mark.pytorch
class TestEnsembleTorch:
    def test_predict(self):
        pass
"""
SMALL_TEXT_INI = "[pytest]\nmarkers =\n    pytorch: requires pytorch\n    optional: optional dependencies\n"


def ids(result: pytest.RunResult) -> list[str]:
    return sorted(line.strip() for line in result.outlines if "::" in line and not line.startswith(" "))


def collect(pytester: pytest.Pytester, *args: str) -> list[str]:
    return ids(pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:xdist", *args))


@pytest.mark.parametrize("backend", [None, "auto", "all", "turbomind"])
def test_a_suite_with_its_own_backend_parameter_keeps_its_ids(pytester: pytest.Pytester,
                                                            backend: str | None) -> None:
    """LMDeploy's autotest with the plugin merely installed: under no option, auto, all or turbomind the
    ids are those of pytest alone (476 REST ids were renamed and gained a turbomind mark before)."""
    pytester.makepyfile(test_restful_generate=LMDEPLOY_RESTFUL)
    alone = collect(pytester, "-p", "no:lmbackend")
    assert len(alone) == 12
    args = () if backend is None else (f"--lm-backend={backend}", "--lm-hardware=h100x8")
    assert collect(pytester, *args) == alone
    # opted in, the ids stay too: LMDeploy's marks bind nothing, so nothing is parametrized
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\nlm_backend_param = backend\n")
    kept = [i for i in alone if backend in (None, "auto", "all") or "-turbomind" in i or "turbomind]" in i]
    assert collect(pytester, *args) == kept


def test_lmdeploy_marks_select_as_before(pytester: pytest.Pytester) -> None:
    """`-m 'gpu_num_1 and turbomind'`: the plugin adds no turbomind mark to tests it did not bind (126
    items selected instead of 56 before)."""
    pytester.makepyfile(test_restful_generate=LMDEPLOY_RESTFUL)
    alone = collect(pytester, "-p", "no:lmbackend", "-m", "gpu_num_1 and not not_pytorch")
    assert collect(pytester, "--lm-backend=turbomind", "--lm-hardware=h100x8",
                   "-m", "gpu_num_1 and not not_pytorch") == alone
    assert collect(pytester, "--lm-backend=all", "-m", "turbomind") == []


def test_merely_installed_a_not_turbomind_test_does_not_skip(pytester: pytest.Pytester) -> None:
    """On a runner where the plugin sees no backend it could bind, not_turbomind tests skipped."""
    pytester.makepyfile(test_restful_generate=LMDEPLOY_RESTFUL)
    (pytester.path / "bare.toml").write_text('[packages]\nnumpy = "2.0.0"\n')
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=bare.toml")
    result.assert_outcomes(passed=8, failed=4)  # the suite's own asserts: the backend is its business


def test_the_suites_backend_parameter_under_the_opt_in(pytester: pytest.Pytester) -> None:
    """``lm_backend_param = backend``: each test needs its backend available (skip naming it); one whose
    not_<backend> mark excludes its own backend skips naming the mark; --lm-backend=NAME deselects the
    others; the plan shows run[NAME] from the parameter."""
    pytester.makepyfile(test_restful_generate=LMDEPLOY_RESTFUL)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\nlm_backend_param = backend\n")
    tm = pytester.path / "tm.toml"
    tm.write_text('cuda = "12.8"\n[packages]\nlmdeploy = "0.16.0"\n"lmdeploy.turbomind" = "0.16.0"\n'
                  'torch = "2.8.0"\n[[gpus]]\nname = "NVIDIA H100 80GB HBM3"\ncapability = "9.0"\n'
                  'memory_total = "80GiB"\n')
    result = pytester.runpytest("-p", "no:xdist", f"--lm-hardware={tm}", "-rs")
    result.assert_outcomes(passed=8, skipped=4)
    result.stdout.fnmatch_lines_random([
        "SKIPPED [[]2[]] *: its backend parameter is turbomind, which its not_turbomind marker excludes",
        "SKIPPED [[]2[]] *: its backend parameter is pytorch, which its not_pytorch marker excludes",
    ])
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu", "-rs")
    result.assert_outcomes(skipped=12)
    result.stdout.fnmatch_lines(["*backend pytorch needs lmdeploy installed*"])
    result = pytester.runpytest("-p", "no:xdist", f"--lm-hardware={tm}", "--lm-backend=pytorch")
    result.assert_outcomes(passed=4, skipped=2, deselected=6)
    plan = pytester.runpytest("-p", "no:xdist", "--lm-plan", f"--lm-hardware={tm},cpu")
    plan.stdout.fnmatch_lines([
        "*test_generate[[]Qwen/Qwen3.5-27B-turbomind[]] * run[[]turbomind[]] * skip:backend[[]turbomind[]]",
        "*test_logprobs[[]Qwen/Qwen3.5-27B-pytorch[]] * skip:backend[[]pytorch[]] *",
    ])


# LMDeploy autotest's pipeline function tests (interface/pipeline/test_pipeline_func.py): the backend
# parameter holds LMDeploy's engine-config classes; the tools/ suites carry it in a dict parameter
# (run_config['backend']). Stand-in classes with LMDeploy's names: the plugin never imports LMDeploy.
LMDEPLOY_ENGINE_CLASSES = """
import pytest


class TurbomindEngineConfig:
    def __init__(self, tp=1):
        self.tp = tp


class PytorchEngineConfig:
    pass


class MyPytorchConfig(PytorchEngineConfig):
    pass


BACKENDS_BOTH = [TurbomindEngineConfig, PytorchEngineConfig]


def pipeline_params(models=('Qwen/Qwen3.5-35B-A3B',), backends=BACKENDS_BOTH):
    def deco(fn):
        fn = pytest.mark.parametrize('model', models)(fn)
        fn = pytest.mark.parametrize('backend', backends)(fn)
        return fn
    return deco


@pytest.mark.gpu_num_1
@pipeline_params()
def test_return_with_prompt(model, backend):
    pass


@pytest.mark.gpu_num_1
@pytest.mark.parametrize('backend', [TurbomindEngineConfig(tp=2), MyPytorchConfig])
def test_instances_and_subclasses(backend):
    pass


@pytest.mark.gpu_num_1
@pytest.mark.parametrize('run_config', [{'backend': 'turbomind', 'tp': 1}, {'backend': 'pytorch', 'tp': 1}])
def test_pipeline_chat_tp1(run_config):
    pass


@pytest.mark.parametrize('backend', [3, None])
def test_not_a_backend(backend):
    pass
"""


@pytest.mark.parametrize("ini", ["backend run_config", "backend, run_config"])
def test_engine_config_classes_and_dict_parameters_name_the_backend(pytester: pytest.Pytester,
                                                                     ini: str) -> None:
    """101 autotest items carry an engine-config class as their `backend` parameter: under
    --lm-backend=turbomind the [...-PytorchEngineConfig] items stayed, and where TurboMind is missing
    the [...-TurbomindEngineConfig] items were planned to run."""
    pytester.makepyfile(test_pipeline_func=LMDEPLOY_ENGINE_CLASSES)
    pytester.makeini(f"[pytest]\nlm_markers = lmdeploy\nlm_backend_param = {ini}\n")
    alone = collect(pytester, "-p", "no:lmbackend")
    assert len(alone) == 8
    assert collect(pytester, "--lm-hardware=h100x8+lmdeploy") == alone
    turbomind = collect(pytester, "--lm-backend=turbomind", "--lm-hardware=h100x8+lmdeploy")
    assert turbomind == [i for i in alone if "Pytorch" not in i and "pytorch" not in i
                         and "run_config1" not in i and "MyPytorch" not in i]
    assert [i.split("::")[1] for i in turbomind] == [
        "test_instances_and_subclasses[backend0]", "test_not_a_backend[3]", "test_not_a_backend[None]",
        "test_pipeline_chat_tp1[run_config0]",
        "test_return_with_prompt[Qwen/Qwen3.5-35B-A3B-TurbomindEngineConfig]"]
    # on an H100 with only LMDeploy's PyTorch engine, the TurboMind items skip naming it
    pytorch_only = "h100x8+lmdeploy-pytorch"
    result = pytester.runpytest("-p", "no:xdist", f"--lm-hardware={pytorch_only}", "-rs")
    result.assert_outcomes(passed=5, skipped=3)
    skips = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert len(skips) == 3 and all("backend turbomind needs LMDeploy's TurboMind extension" in line
                                   for line in skips), skips
    plan = pytester.runpytest("-p", "no:xdist", "--lm-plan", f"--lm-hardware={pytorch_only}")
    plan.stdout.fnmatch_lines_random([
        "*test_return_with_prompt[[]*-TurbomindEngineConfig[]]*skip:backend[[]turbomind[]]*",
        "*test_return_with_prompt[[]*-PytorchEngineConfig[]]*run[[]pytorch[]]*",
        "*test_pipeline_chat_tp1[[]run_config1[]]*run[[]pytorch[]]*",
    ])


def test_a_suites_own_values_failing_in_their_own_code_name_no_backend(pytester: pytest.Pytester) -> None:
    """A str subclass whose __eq__ raises and a class whose metaclass's __mro__ raises were
    INTERNALERRORs under lm_backend_param; without the plugin these tests pass."""
    pytester.makepyfile("""
        import pytest

        class EqRaise(str):
            def __eq__(self, other): raise RuntimeError("eq")
            def __hash__(self): raise RuntimeError("hash")

        class Meta(type):
            @property
            def __mro__(cls): raise RuntimeError("mro")

        class Odd(metaclass=Meta):
            pass

        @pytest.mark.parametrize("backend", [EqRaise("turbomind"), Odd, Odd()], ids=["eq", "cls", "obj"])
        def test_x(backend):
            pass
    """)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\nlm_backend_param = backend\n")
    # the str subclass is read as 'turbomind', which the cpu profile lacks; the others name nothing
    pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu").assert_outcomes(passed=2, skipped=1)
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu", "--lm-backend=pytorch")
    result.assert_outcomes(passed=2, deselected=1)


def test_a_bad_backend_parameter_name_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    pytester.makeini("[pytest]\nlm_backend_param = backend run-config\n")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*lm_backend_param*'run-config' is not a parameter name*"])


def test_small_texts_own_pytorch_marker_is_its_own(pytester: pytest.Pytester) -> None:
    """small-text registers `pytorch` as "requires pytorch": merely installed, its torch tests ran
    skipped ("backend pytorch needs lmdeploy installed"); they pass as without the plugin."""
    pytester.makeini(SMALL_TEXT_INI)
    pytester.makepyfile(test_kimcnn=SMALL_TEXT)
    alone = pytester.runpytest_subprocess("-p", "no:lmbackend", "--strict-markers", "-rs")
    alone.assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess("--strict-markers", "-rs", "--lm-hardware=cpu")
    result.assert_outcomes(passed=2)


def test_pytest_benchmarks_own_comparison_under_filterwarnings_error(pytester: pytest.Pytester) -> None:
    """pytest-benchmark's suite compares saved runs with filterwarnings=error: the plugin's machine info,
    with a timestamp in it, made every comparison warn and end in INTERNALERROR."""
    pytest.importorskip("pytest_benchmark")
    pytester.makeini("[pytest]\nfilterwarnings =\n    error\n")
    pytester.makepyfile("def test_fast(benchmark):\n    benchmark(lambda: sum(range(10)))\n")
    storage = f"file://{pytester.path / 'store'}"
    first = pytester.runpytest_subprocess("-p", "no:xdist", "--benchmark-autosave",
                                          f"--benchmark-storage={storage}")
    first.assert_outcomes(passed=1)
    (saved,) = (pytester.path / "store").rglob("*.json")
    assert "lmbackend" not in json.loads(saved.read_text())["machine_info"]
    again = pytester.runpytest_subprocess("-p", "no:xdist", "--benchmark-compare",
                                          f"--benchmark-storage={storage}")
    again.assert_outcomes(passed=1)
    assert "INTERNALERROR" not in again.stdout.str() + again.stderr.str()


def test_one_switch_turns_everything_off(pytester: pytest.Pytester) -> None:
    """``-p no:lmbackend``: no option, marker, fixture, header line or hook is left (one of five entry
    points before), in a session pytester starts in-process or in a subprocess alike."""
    pytester.makepyfile("def test_x(lm_backend):\n    pass\n")
    for run in (pytester.runpytest, pytester.runpytest_subprocess):
        helped = run("-p", "no:lmbackend", "--help").stdout.str()
        assert "--lm-" not in helped and "lm_markers" not in helped, run
        result = run("-p", "no:lmbackend", "-p", "no:xdist", "-v")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*fixture 'lm_backend' not found*"])
        assert "lmbackend:" not in result.stdout.str()
        assert "lm_isolated" not in run("-p", "no:lmbackend", "--markers").stdout.str()


def test_distributed_layouts_need_several_nodes(pytester: pytest.Pytester) -> None:
    """LMDeploy's gpu_num_distributed_* (autotest evaluate/, benchmark/) were planned to run anywhere."""
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.gpu_num_distributed_tp16
        def test_tp16(): pass

        @pytest.mark.gpu_num_distributed_dpep8
        def test_dpep8(): pass

        @pytest.mark.gpu_num_distributed_cp2tp8
        def test_cp2tp8(): pass

        @pytest.mark.gpu_num_distributed_dpep32
        def test_dpep32(): pass
    """)
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x8", "-rs", "--strict-markers")
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines_random(["*needs layout tp16: 16 GPUs in all, i.e. 2 nodes of 8 GPUs*",
                                        "*needs layout dpep32: 32 GPUs in all, i.e. 4 nodes of 8 GPUs*"])
    pytester.makepyfile(test_bad="import pytest\n\n@pytest.mark.gpu_num_distributed_zz3\n"
                                 "def test_z(): pass\n")
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x8", "test_bad.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_bad.py::test_z: the gpu_num_distributed_zz3 marker: *"])


def test_a_backend_parametrized_by_the_test_is_checked_like_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("lm_backend", ["nope"])
        def test_x(lm_backend): pass
    """)
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x[[]nope[]]: parametrize('lm_backend', ...) gives 'nope': unknown "
                                 "backend; known: turbomind, pytorch, transformers*"])


# LMDeploy autotest's pipeline tests (interface/pipeline/test_pipeline_longtext_func.py): they pin their
# own GPUs from the xdist worker id (utils/config_utils.py), then delete the mask.
LMDEPLOY_PIPELINE = """
import os

import pytest


def get_cuda_id_by_workerid(worker_id, tp_num=1):
    if worker_id is None or 'gw' not in worker_id:
        return None
    base_id = int(worker_id.replace('gw', ''))
    cuda_num = base_id * tp_num
    return ','.join([str(cuda_num + i) for i in range(tp_num)])


def set_device_env_variable(worker_id, parallel_config=None):
    cuda_id = get_cuda_id_by_workerid(worker_id, parallel_config or 1)
    if cuda_id is not None:
        os.environ['CUDA_VISIBLE_DEVICES'] = cuda_id


def unset_device_env_variable():
    if 'CUDA_VISIBLE_DEVICES' in os.environ:
        del os.environ['CUDA_VISIBLE_DEVICES']


@pytest.mark.gpu_num_2
@pytest.mark.parametrize('model', ['Qwen/Qwen3-30B-A3B', 'Qwen/Qwen3-32B', 'Qwen/Qwen3.5-35B-A3B',
                                   'Qwen/Qwen3.5-27B'])
@pytest.mark.parametrize('backend', ['turbomind', 'pytorch'])
def test_long_test_passkey_tp2(model, backend, worker_id):
    if 'gw' in worker_id:
        set_device_env_variable(worker_id, parallel_config=2)
    if 'gw' in worker_id:
        unset_device_env_variable()


@pytest.mark.gpu_num_1
@pytest.mark.parametrize('backend', ['turbomind', 'pytorch'])
def test_restful_client(backend):
    pass
"""


def test_lmdeploys_daily_gpu_num_2_job_runs_on_eight_gpus(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest -n 4 -m gpu_num_2` on an 8-GPU runner skipped every test ("needs 2 GPUs; xdist worker gw1
    holds 1") and the tests' own unset_device_env_variable made teardown errors. Installed, nothing is
    pinned; opted in, gpu_num_2 is judged on the whole machine."""
    pytest.importorskip("xdist")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTEST_LM_WORKER_GPUS", raising=False)
    pytester.makepyfile(test_pipeline_longtext_func=LMDEPLOY_PIPELINE)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")
    result = pytester.runpytest("-n", "4", "-m", "gpu_num_2", "--lm-hardware=h100x8", "-W", "error")
    result.assert_outcomes(passed=8)  # (xdist's controller does not count the deselected)


def test_more_workers_than_gpus_and_a_test_that_deletes_its_mask(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """LMDeploy's PR job runs REST client tests with -n 20 on 8 GPUs ("20 workers x 1 GPU need 20 GPUs,
    8 visible" was a usage error): with pinning asked, the extra workers hold none; a test that deletes
    its pinned worker's mask gets it back after it, with a warning naming it, never an error."""
    pytest.importorskip("xdist")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTEST_LM_WORKER_GPUS", raising=False)
    pytester.makepyfile(test_pipeline_longtext_func=LMDEPLOY_PIPELINE)
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")
    result = pytester.runpytest("-n", "3", "-m", "gpu_num_1", "--lm-hardware=h100x2",
                                "--lm-gpus-per-worker=1")
    result.assert_outcomes(passed=2)
    result = pytester.runpytest("-n", "2", "-m", "gpu_num_2", "--lm-hardware=h100x4",
                                "--lm-gpus-per-worker=2")
    result.assert_outcomes(passed=8, warnings=8)
    result.stdout.fnmatch_lines(["*GPUMaskWarning: *test_long_test_passkey_tp2* deleted CUDA_VISIBLE_DEVICES "
                                 "on xdist worker gw?, which holds *: restored it*"])
    # where warnings are errors it stays a note in the test's report
    result = pytester.runpytest("-n", "2", "-m", "gpu_num_2", "--lm-hardware=h100x4",
                                "--lm-gpus-per-worker=2", "-o", "filterwarnings=error", "-rA")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*lmbackend*", "*deleted CUDA_VISIBLE_DEVICES on xdist worker gw?*"])
    # 0 is "no pinning", not a usage error
    pytester.runpytest("-n", "2", "--lm-gpus-per-worker=0", "--lm-hardware=h100x2").assert_outcomes(passed=10)


def test_auto_width_is_the_selected_tests_largest_need(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`-n 4 -m gpu_num_2 --lm-gpus-per-worker=auto` on 8 GPUs: four workers of two GPUs each."""
    pytest.importorskip("xdist")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTEST_LM_WORKER_GPUS", raising=False)
    out = pytester.mkdir("masks")
    pytester.makeini("[pytest]\nlm_markers = lmdeploy\n")
    pytester.makepyfile(f"""
        import os, pathlib, pytest

        @pytest.mark.gpu_num_2
        @pytest.mark.parametrize("i", range(8))
        def test_two(i):
            pathlib.Path({str(out)!r}, f"{{os.environ['PYTEST_XDIST_WORKER']}}").write_text(
                os.environ["CUDA_VISIBLE_DEVICES"])
            assert len(os.environ["CUDA_VISIBLE_DEVICES"].split(",")) == 2

        @pytest.mark.gpu_num_8
        def test_eight():
            pass
    """)
    result = pytester.runpytest("-n", "4", "-m", "gpu_num_2", "--lm-hardware=h100x8",
                                "--lm-gpus-per-worker=auto")
    result.assert_outcomes(passed=8)
    masks = {p.name: p.read_text() for p in out.iterdir()}
    used = [gpu for mask in masks.values() for gpu in mask.split(",")]
    assert len(used) == len(set(used)) and len(masks) >= 2  # disjoint pairs
