"""The plugin's fixtures: the item's backend, detection, hardware, engine config, model dirs, pipeline."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported in the fixtures' bodies: loading the plugin stays cheap
    from pytest_lmbackend.bench.plugin import StartupBenchmark
    from pytest_lmbackend.hardware import Hardware
    from pytest_lmbackend.markers import ItemMarks, ModelBinding
    from pytest_lmbackend.pipeline import PipelineCache
    from pytest_lmbackend.rules import Detection
    from pytest_lmbackend.selection import ItemOutcome
    from pytest_lmbackend.session import LmSession

ModelDirFactory = Callable[..., Path]


def _failure(message: str) -> BaseException:
    """A fixture's failure: one line, text from config files, model ids and engines escaped
    (``display.printable``), no traceback into the plugin."""
    from pytest_lmbackend.display import printable

    return pytest.fail.Exception(printable(message), pytrace=False)


def _state(request: pytest.FixtureRequest) -> LmSession:
    from pytest_lmbackend.session import session_state

    return session_state(request.config)


def _item_marks(request: pytest.FixtureRequest, fixture: str) -> ItemMarks:
    from pytest_lmbackend.session import MARKS_KEY

    marks: ItemMarks | None = request.node.stash.get(MARKS_KEY, None)
    if marks is None:
        raise _failure(f"{fixture} is for test functions collected by pytest-lmbackend")
    return marks


def _outcome(request: pytest.FixtureRequest, fixture: str) -> ItemOutcome:
    from pytest_lmbackend.session import OUTCOME_KEY

    outcome: ItemOutcome | None = request.node.stash.get(OUTCOME_KEY, None)
    if outcome is None:
        raise _failure(f"{fixture}: this item was not evaluated by pytest-lmbackend at setup")
    return outcome


@pytest.fixture
def lm_backend(request: pytest.FixtureRequest) -> str:
    """The backend this item runs on (``turbomind``, ``pytorch``, ``transformers`` or a registered one)."""
    from pytest_lmbackend.session import OUTCOME_KEY

    outcome: ItemOutcome | None = request.node.stash.get(OUTCOME_KEY, None)
    if outcome is None or outcome.backend is None:
        raise _failure(f"{request.node.nodeid}: lm_backend: no backend was chosen for this item: the backend "
                       "is decided at collection, so name lm_backend among the test's arguments (or mark it "
                       "with lm_backend(...) / turbomind / pytorch) rather than asking for it with "
                       "request.getfixturevalue")
    return outcome.backend


@pytest.fixture
def lm_detection(request: pytest.FixtureRequest) -> Detection:
    """The ``Detection`` of the item's ``lm_model`` under the active LMDeploy release."""
    from pytest_lmbackend.session import OUTCOME_KEY

    marks = _item_marks(request, "lm_detection")
    if marks.model is None:
        raise _failure(f"{request.node.nodeid}: lm_detection needs @pytest.mark.lm_model(source)")
    outcome: ItemOutcome | None = request.node.stash.get(OUTCOME_KEY, None)
    if outcome is not None and outcome.detection is not None:
        return outcome.detection
    from pytest_lmbackend.config import ConfigError

    try:
        return _state(request).detect(marks.model)
    except ConfigError as exc:  # names file and field; a bug in rules/ stays a traceback
        raise _failure(f"{marks.model.describe()}: {exc}") from None


@pytest.fixture(scope="session")
def lm_hardware(request: pytest.FixtureRequest) -> Hardware:
    """The session's ``Hardware``: probed once (NVML, nvidia-smi) or the fake profile."""
    return _state(request).hardware


def _engine_options(request: pytest.FixtureRequest, marks: ItemMarks) -> dict[str, Any]:
    options = dict(_state(request).options.engine_options)
    options.update(marks.engine_options)
    return options


@pytest.fixture
def lm_backend_config(request: pytest.FixtureRequest, lm_backend: str) -> Any:
    """LMDeploy's ``TurbomindEngineConfig``/``PytorchEngineConfig`` for this item's backend (imported now),
    from the ``lm_engine_options`` ini lines and the ``lm_engine(...)`` marker."""
    from pytest_lmbackend.pipeline import EngineOptionError, engine_config

    options = _engine_options(request, _item_marks(request, "lm_backend_config"))
    try:
        return engine_config(lm_backend, options)
    except EngineOptionError as exc:
        raise _failure(f"{request.node.nodeid}: {exc}") from None
    except ImportError as exc:
        message = f"{request.node.nodeid}: backend {lm_backend} cannot start here: {exc}"
        raise _failure(message) from None


@pytest.fixture(scope="session")  # a factory: every call makes a new folder, so one serves everybody
def lm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> ModelDirFactory:
    """Factory writing a model folder: ``lm_model_dir(config=None, *, weights=False, tokenizer=False,
    name="model", seed=0) -> Path``. ``config`` is a dict, a folder or a config.json path; None gives a
    tiny Llama. Weights are tiny and random, the tokenizer trained locally: nothing is downloaded."""

    def make(config: Mapping[str, Any] | str | Path | None = None, *, weights: bool = False,
             tokenizer: bool = False, name: str = "model", seed: int = 0) -> Path:
        from pytest_lmbackend import modeldir

        data = modeldir.tiny_llama_config() if config is None else read_config_dict(config)
        folder = tmp_path_factory.mktemp(name)
        return Path(modeldir.write_model_dir(folder, data, weights=weights, tokenizer=tokenizer, seed=seed))

    return make


def read_config_dict(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A config dict from a mapping, a model folder or a config.json file."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{file}: cannot read a model config: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{file}: a model config must be a JSON object")
    return data


@pytest.fixture(scope="session")
def lm_pipeline_cache(request: pytest.FixtureRequest) -> Iterator[PipelineCache]:
    """Pipelines shared per (model, backend, options) in this session; all closed at its end."""
    from pytest_lmbackend.pipeline import PipelineCache

    cache = PipelineCache(_state(request).options.pipeline_cache)
    yield cache
    cache.close_all()


@pytest.fixture(scope="session")
def _lm_synthetic_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


@pytest.fixture
def lm_pipeline(
    request: pytest.FixtureRequest,
    lm_backend: str,
    lm_pipeline_cache: PipelineCache,
    _lm_synthetic_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """The real pipeline for the item's model and backend: ``lmdeploy.pipeline`` for turbomind/pytorch,
    the transformers reference otherwise; shared per (model, backend), closed with its memory freed."""
    from pytest_lmbackend import pipeline as pl

    marks = _item_marks(request, "lm_pipeline")
    if marks.model is None:
        raise _failure(f"{request.node.nodeid}: lm_pipeline needs @pytest.mark.lm_model(source)")
    state = _state(request)
    options = _engine_options(request, marks)
    model_dir = _model_dir(marks.model, _lm_synthetic_models, tmp_path_factory)
    key = (model_dir, lm_backend, tuple(sorted((k, repr(v)) for k, v in options.items())))
    strict = state.options.strict_fallback

    def build() -> Any:
        if lm_backend in pl.LMDEPLOY_ENGINES:
            engine = pl.engine_config(lm_backend, options)
            return pl.open_lmdeploy(model_dir, lm_backend, engine, strict=strict)
        if lm_backend == "transformers":
            return pl.ReferencePipeline(model_dir, options)
        made = request.config.hook.pytest_lmbackend_make_pipeline(
            config=request.config, backend=lm_backend, model_dir=model_dir, options=options
        )
        if made is None:
            raise pl.EngineOptionError(f"backend {lm_backend} has no pipeline builder "
                                       "(implement pytest_lmbackend_make_pipeline)")
        return made

    try:
        return lm_pipeline_cache.get(key, build)
    except (pl.FallbackError, pl.EngineOptionError) as exc:
        raise _failure(f"{request.node.nodeid}: {exc}") from None
    except ImportError as exc:  # e.g. a fake profile claims packages this interpreter lacks
        message = f"{request.node.nodeid}: backend {lm_backend} cannot start here: {exc}"
        raise _failure(message) from None
    except Exception as exc:
        hint = _no_weights(model_dir)
        if hint is None:
            raise
        # the engine's own error (a tokenizer or weight file it looked for) is deep and long; the
        # cause is plain
        message = (f"{request.node.nodeid}: backend {lm_backend} could not start on {hint} "
                   f"({type(exc).__name__}: {str(exc)[:300]})")
        raise _failure(message) from None


_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json",
                    "*.bin.index.json")


def _model_dir(model: ModelBinding, made: dict[str, Path], factory: pytest.TempPathFactory) -> str:
    """The folder a pipeline starts from: the resolved model folder (a hub id's snapshot, a config.json
    file's folder), or for ``synthetic=True`` a folder of tiny random weights built from its config
    (a mapping included)."""
    from pytest_lmbackend.config import ConfigError, read_config

    if model.synthetic:
        if model.key not in made:
            from pytest_lmbackend import modeldir

            try:
                if isinstance(model.source, str):
                    cfg = read_config(model.source)  # parsed (and cached) once: the copy comes from it
                    config = (copy.deepcopy(dict(cfg.data)) if cfg.data is not None
                              else read_config_dict(model.source))  # no config.json: its error says so
                else:
                    config = dict(model.source)
                made[model.key] = Path(modeldir.write_model_dir(
                    factory.mktemp("lm_synthetic"), config, weights=True, tokenizer=True))
            except (ValueError, ConfigError) as exc:  # ModelDirError names the field
                message = f"lm_model({model.given!r}, synthetic=True): {exc}"
                raise _failure(message) from None
        return str(made[model.key])
    if not isinstance(model.source, str):
        raise _failure(f"lm_pipeline needs model weights; lm_model({model.given}) is a config mapping: add "
                       "synthetic=True for tiny random weights built from it")
    try:
        return read_config(model.source).folder or model.source
    except ConfigError as exc:
        raise _failure(f"lm_model({model.given!r}): {exc}") from None


def _no_weights(folder: str) -> str | None:
    """A description of ``folder`` when it holds a config but no weights, else None."""
    root = Path(folder)
    if (root / "triton_models").exists() or any(next(root.glob(p), None) for p in _WEIGHT_PATTERNS):
        return None
    return (f"{folder}, which holds a config but no weights (no *.safetensors, *.bin, ...): add "
            "synthetic=True to lm_model for tiny random ones built from its config")


BENCH_USED_KEY = pytest.StashKey[bool]()  # an lm_startup benchmark ran: its machine facts are saved with it
BENCHMARK_PLUGIN = "benchmark"  # pytest-benchmark's pytest11 entry-point name


@pytest.fixture
def lm_startup(request: pytest.FixtureRequest) -> StartupBenchmark:
    """Benchmark a backend's start-up: ``lm_startup(model_dir, "transformers", rounds=2)``.

    Skips when pytest-benchmark is not installed.
    """
    if not request.config.pluginmanager.has_plugin(BENCHMARK_PLUGIN):
        pytest.skip("lm_startup needs pytest-benchmark, which is not installed")
    from pytest_lmbackend.bench.plugin import StartupBenchmark

    request.config.stash[BENCH_USED_KEY] = True
    return StartupBenchmark(request.getfixturevalue("benchmark"))
