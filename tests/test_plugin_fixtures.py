"""Fixtures through pytester, against a stand-in ``lmdeploy`` package written into the test folder."""

from __future__ import annotations

import json

import pytest

FAKE_LMDEPLOY = {
    "lmdeploy/__init__.py": '''
import dataclasses
import logging
import os

logger = logging.getLogger("lmdeploy")
STARTED = []
CLOSED = []


@dataclasses.dataclass
class TurbomindEngineConfig:
    session_len: int | None = None
    cache_max_entry_count: float = 0.8
    tp: int = 1
    model_format: str | None = None


@dataclasses.dataclass
class PytorchEngineConfig:
    session_len: int | None = None
    cache_max_entry_count: float = 0.8
    tp: int = 1


class _Engine:
    def __init__(self, backend):
        self.backend = backend


class _Response:
    def __init__(self, text):
        self.text = text


class Pipeline:
    def __init__(self, path, backend_config):
        from lmdeploy.archs import autoget_backend_config

        backend, self.backend_config = autoget_backend_config(path, backend_config)
        self.async_engine = _Engine(os.environ.get("FAKE_PIPELINE_ENGINE", backend))
        self.path = path
        STARTED.append(self)

    def __call__(self, prompts, gen_config=None):
        return [_Response(self.async_engine.backend + ":" + p) for p in prompts]

    def close(self):
        CLOSED.append(self)


def pipeline(model_path, backend_config=None, **kwargs):
    return Pipeline(model_path, backend_config)
''',
    "lmdeploy/archs.py": '''
import os

from lmdeploy import PytorchEngineConfig, TurbomindEngineConfig, logger


def autoget_backend_config(model_path, backend_config=None):
    if isinstance(backend_config, PytorchEngineConfig):
        return "pytorch", backend_config
    if os.environ.get("FAKE_TM_BUILT") != "1":
        logger.warning("Fallback to pytorch engine because turbomind is not built.")
        return "pytorch", PytorchEngineConfig()
    return "turbomind", backend_config or TurbomindEngineConfig()
''',
}


def gpu_profile(pytester: pytest.Pytester) -> str:
    data = {"name": "h100-lmdeploy", "cuda": "13.0",
            "packages": {"lmdeploy": "0.18.0", "lmdeploy.turbomind": "0.18.0", "torch": "2.11.0",
                         "transformers": "5.17.0"},
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "capability": "9.0", "memory_total": "80GiB"}]}
    path = pytester.path / "h100-lmdeploy.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name, text in FAKE_LMDEPLOY.items():
        path = pytester.path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    for name, arch in (("llama", "LlamaForCausalLM"), ("mistral", "MistralForCausalLM")):
        (pytester.path / name).mkdir()
        (pytester.path / name / "config.json").write_text(json.dumps(
            {"architectures": [arch], "hidden_size": 128, "num_attention_heads": 2, "vocab_size": 1024}))
    pytester.syspathinsert()
    monkeypatch.setenv("PYTEST_LM_HARDWARE", gpu_profile(pytester))
    pytester.makeini("""
        [pytest]
        lm_lmdeploy = 0.18.0
        lm_engine_options =
            session_len = 512
            cache_max_entry_count = 0.1
    """)
    return pytester


def test_backend_config_from_ini_and_marker(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.lm_model("mistral")
        @pytest.mark.lm_engine(session_len=256, tp=2)
        def test_pt(lm_backend, lm_backend_config):
            assert lm_backend == "pytorch"
            assert type(lm_backend_config).__name__ == "PytorchEngineConfig"
            assert (lm_backend_config.session_len, lm_backend_config.tp) == (256, 2)
            assert lm_backend_config.cache_max_entry_count == 0.1

        @pytest.mark.lm_model("mistral")
        @pytest.mark.lm_engine(rope_scaling_factor=2.0)
        def test_unknown_option(lm_backend_config):
            pass
    """)
    result = project.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_unknown_option: engine option(s) rope_scaling_factor are not fields of "
         "lmdeploy.PytorchEngineConfig"]
    )


def test_pipeline_shared_per_model_and_closed_when_replaced(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest
        import lmdeploy

        @pytest.mark.lm_model("mistral")
        def test_a(lm_pipeline):
            assert lm_pipeline(["hi"])[0].text == "pytorch:hi"
            assert len(lmdeploy.STARTED) == 1

        @pytest.mark.lm_model("mistral")
        def test_b(lm_pipeline):
            assert lmdeploy.STARTED == [lm_pipeline]  # shared, not rebuilt

        @pytest.mark.lm_model("llama")
        @pytest.mark.pytorch
        def test_c(lm_pipeline):
            assert len(lmdeploy.STARTED) == 2
            assert lmdeploy.CLOSED == [lmdeploy.STARTED[0]]  # one alive at a time by default

        def test_d():
            assert len(lmdeploy.CLOSED) == 1
    """)
    project.makeconftest("""
        def pytest_sessionfinish(session):
            import lmdeploy
            print("closed at the end:", len(lmdeploy.CLOSED), "of", len(lmdeploy.STARTED))
    """)
    result = project.runpytest("-s", "-o", "lm_markers=lmdeploy")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*closed at the end: 2 of 2*"])


def test_strict_fallback_fails_with_both_names_and_the_reason(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.lm_model("llama")
        def test_tm(lm_pipeline, lm_backend):
            assert lm_backend == "turbomind"
    """)
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*strict fallback: the test's backend is turbomind, but LMDeploy runs pytorch: "
        "Fallback to pytorch engine because turbomind is not built.*",
    ])
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()  # the message alone, no chained exception


def test_no_strict_fallback_lets_it_pass(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.lm_model("llama")
        def test_tm(lm_pipeline, lm_backend):
            assert lm_backend == "turbomind"
            assert lm_pipeline.async_engine.backend == "pytorch"
    """)
    project.runpytest("--no-lm-strict-fallback").assert_outcomes(passed=1)
    # explicit names do not turn strict fallback on by themselves
    project.runpytest("--lm-backend=turbomind").assert_outcomes(passed=1)
    project.runpytest("--lm-backend=turbomind", "--lm-strict-fallback").assert_outcomes(errors=1)


def test_strict_fallback_checks_the_built_engine_too(project: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TM_BUILT", "1")
    monkeypatch.setenv("FAKE_PIPELINE_ENGINE", "pytorch")
    project.makepyfile("""
        import pytest

        @pytest.mark.lm_model("llama")
        def test_tm(lm_pipeline):
            pass
    """)
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*LMDeploy runs pytorch: the built pipeline reports another engine*"])
    monkeypatch.delenv("FAKE_PIPELINE_ENGINE")
    project.runpytest().assert_outcomes(passed=1)


def test_detection_and_hardware_fixtures(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import pytest

        @pytest.mark.lm_model("mistral")
        def test_det(lm_detection):
            assert (lm_detection.arch, lm_detection.backend, lm_detection.task) == (
                "MistralForCausalLM", "pytorch", "llm")

        def test_no_model(lm_detection):
            pass

        def test_hw(lm_hardware):
            assert lm_hardware.profile == "h100-lmdeploy"
            assert [g.capability for g in lm_hardware.gpus] == [(9, 0)]
    """)
    result = project.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_no_model: lm_detection needs @pytest.mark.lm_model(source)"])


def test_model_dir_factory(project: pytest.Pytester) -> None:
    project.makepyfile("""
        import json
        from pytest_lmbackend.rules import detect

        def test_tiny_llama(lm_model_dir):
            folder = lm_model_dir()
            config = json.loads((folder / "config.json").read_text())
            assert config["architectures"] == ["LlamaForCausalLM"]
            assert not list(folder.glob("*.safetensors"))

        def test_from_a_folder(lm_model_dir, request):
            folder = lm_model_dir(request.config.rootpath / "mistral", name="copy")
            assert folder.name.startswith("copy")
            assert detect(folder, lmdeploy="0.18.0").backend == "pytorch"
    """)
    project.runpytest().assert_outcomes(passed=2)


def test_third_party_backend_and_pipeline_hooks(project: pytest.Pytester) -> None:
    project.makeconftest("""
        from pytest_lmbackend.backends import Backend

        class Echo:
            closed = False
            def __call__(self, prompts):
                return list(prompts)
            def close(self):
                Echo.closed = True

        def pytest_lmbackend_register_backends(config):
            return [Backend("echo", "echo", lambda facts: None, rank=5)]

        def pytest_lmbackend_make_pipeline(config, backend, model_dir, options):
            return Echo() if backend == "echo" else None
    """)
    project.makepyfile("""
        import pytest

        def test_any(lm_backend, request):
            if request.config.getoption("lm_backend").mode == "auto":
                assert lm_backend == "echo"  # rank 5: preferred over turbomind (10)

        @pytest.mark.lm_model("mistral")
        @pytest.mark.lm_backend("echo")
        def test_echo(lm_pipeline, lm_backend):
            assert lm_backend == "echo"
            assert lm_pipeline(["a"]) == ["a"]
    """)
    result = project.runpytest("--lm-backend=all", "-v")
    result.stdout.fnmatch_lines([
        "*test_any[[]echo[]] PASSED*", "*test_any[[]turbomind[]] PASSED*", "*test_any[[]pytorch[]] PASSED*",
        "*test_any[[]transformers[]] PASSED*", "*test_echo[[]echo[]] PASSED*",
    ])
    result = project.runpytest("-v", "--lm-backend=auto")
    result.stdout.fnmatch_lines(["*test_any PASSED*", "*test_echo PASSED*"])


def test_each_mapping_bound_test_gets_its_own_detection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_model({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
        def test_llama(lm_detection):
            assert lm_detection.arch == "LlamaForCausalLM"

        @pytest.mark.lm_model({"architectures": ["MistralForCausalLM"], "model_type": "mistral"})
        def test_mistral(lm_detection):
            assert lm_detection.arch == "MistralForCausalLM"
        """
    )
    pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100").assert_outcomes(passed=2)


def test_synthetic_models_from_a_hub_id_and_a_mapping_and_a_folder_without_weights(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.util import find_spec

    from pytest_lmbackend.modeldir import tiny_llama_config

    if find_spec("torch") is None or find_spec("transformers") is None:
        pytest.skip("needs torch and transformers (the test extra)")

    config = tiny_llama_config()
    snapshot = pytester.path / "hub" / "models--acme--tiny" / "snapshots" / "r1"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (pytester.path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (pytester.path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("r1")
    (pytester.path / "bare").mkdir()
    (pytester.path / "bare" / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HUB_CACHE", str(pytester.path / "hub"))
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.lm_model("acme/tiny", synthetic=True)
        def test_hub_id(lm_pipeline):
            assert lm_pipeline([\"hi\"], max_new_tokens=2)

        @pytest.mark.lm_model({config!r}, synthetic=True)
        def test_mapping(lm_pipeline):
            assert lm_pipeline([\"hi\"], max_new_tokens=2)

        @pytest.mark.lm_model("bare")
        def test_no_weights(lm_pipeline):
            pass
        """
    )
    # in a subprocess: torch imported inside an in-process run would be dropped from sys.modules
    # afterwards while its C extension stays loaded, and the next import of torch here would fail
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--lm-backend=transformers", "--lm-hardware=cpu")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*backend transformers could not start on *bare, which holds a config "
                                 "but no weights*add synthetic=True to lm_model*"])


def test_lm_model_dir_serves_inside_given(pytester: pytest.Pytester) -> None:
    """A factory fixture used from @given: no function-scoped-fixture health check, a folder per call."""
    pytester.makepyfile(
        """
        from hypothesis import given, settings, strategies as st

        SEEN = set()

        @settings(max_examples=5, database=None)
        @given(st.integers(1, 4))
        def test_folders(lm_model_dir, layers):
            folder = lm_model_dir({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": layers})
            assert folder not in SEEN and (folder / "config.json").is_file()
            SEEN.add(folder)
        """
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


def test_asking_for_lm_backend_late_says_how_to_ask_for_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_late(request):
            request.getfixturevalue("lm_backend")
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no backend was chosen for this item: the backend is decided at "
                                 "collection, so name lm_backend among the test's arguments*"])
