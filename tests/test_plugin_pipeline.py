"""Pipelines: the shared cache, closing, LMDeploy's fallback made loud, and the reference backend."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.pipeline import (
    FallbackError,
    PipelineCache,
    ReferenceConfig,
    close_pipeline,
    engine_config,
    open_lmdeploy,
    realized_backend,
)


class Closable:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def close(self) -> None:
        self.log.append(self.name)


def test_cache_shares_per_key_and_closes_the_oldest() -> None:
    log: list[str] = []
    cache = PipelineCache(capacity=2)
    builds: list[str] = []

    def build(name: str) -> Any:
        builds.append(name)
        return Closable(name, log)

    a = cache.get("a", lambda: build("a"))
    assert cache.get("a", lambda: build("a")) is a
    cache.get("b", lambda: build("b"))
    cache.get("a", lambda: build("a"))  # a becomes the newest
    cache.get("c", lambda: build("c"))  # b is the oldest: closed
    assert builds == ["a", "b", "c"] and log == ["b"]
    cache.close_all()
    assert sorted(log) == ["a", "b", "c"] and len(cache) == 0


def test_cache_remembers_failures() -> None:
    cache = PipelineCache()
    calls = []

    def build() -> Any:
        calls.append(1)
        raise FallbackError("turbomind", "pytorch", "not built")

    for _ in range(2):
        with pytest.raises(FallbackError):
            cache.get("k", build)
    assert calls == [1]


def test_close_pipeline_never_imports_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    close_pipeline(Closable("x", log))
    close_pipeline(object())  # nothing to close: still fine
    assert log == ["x"] and "torch" not in sys.modules


def test_fallback_error_names_both_engines_and_the_reason() -> None:
    reason = "Fallback to pytorch engine because turbomind is not built."
    text = str(FallbackError("turbomind", "pytorch", reason))
    assert "backend is turbomind" in text and "LMDeploy runs pytorch" in text
    assert "turbomind is not built" in text and "--no-lm-strict-fallback" in text


def test_reference_backend_config_needs_no_lmdeploy() -> None:
    assert engine_config("transformers", {"device": "cpu"}) == ReferenceConfig({"device": "cpu"})


@pytest.fixture
def fake_lmdeploy(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Just the two functions ``open_lmdeploy`` uses, logging like LMDeploy does."""
    state = types.SimpleNamespace(realized="pytorch", built=[], engine=None)

    def autoget_backend_config(path: str, config: Any) -> Any:
        if state.realized != "turbomind":
            logging.getLogger("lmdeploy").warning(
                f"Fallback to pytorch engine because {path!r} not supported by turbomind engine.")
        return state.realized, config

    def pipeline(path: str, backend_config: Any = None) -> Any:
        engine = types.SimpleNamespace(backend=state.engine or state.realized)
        pipe = types.SimpleNamespace(async_engine=engine, close=lambda: state.built.remove(pipe))
        state.built.append(pipe)
        return pipe

    archs = types.ModuleType("lmdeploy.archs")
    archs.autoget_backend_config = autoget_backend_config  # type: ignore[attr-defined]
    package = types.ModuleType("lmdeploy")
    package.pipeline = pipeline  # type: ignore[attr-defined]
    package.archs = archs  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lmdeploy", package)
    monkeypatch.setitem(sys.modules, "lmdeploy.archs", archs)
    return state


def test_realized_backend_captures_lmdeploys_reason(fake_lmdeploy: Any) -> None:
    assert realized_backend("/m", None) == (
        "pytorch", "Fallback to pytorch engine because '/m' not supported by turbomind engine.")
    fake_lmdeploy.realized = "turbomind"
    assert realized_backend("/m", None) == ("turbomind", None)


def test_strict_open_stops_before_building_an_engine(fake_lmdeploy: Any) -> None:
    with pytest.raises(FallbackError, match="not supported by turbomind engine") as info:
        open_lmdeploy("/m", "turbomind", None, strict=True)
    assert (info.value.wanted, info.value.realized) == ("turbomind", "pytorch")
    assert fake_lmdeploy.built == []
    assert open_lmdeploy("/m", "turbomind", None, strict=False).async_engine.backend == "pytorch"


def test_strict_open_checks_the_built_engine_and_closes_it(fake_lmdeploy: Any) -> None:
    fake_lmdeploy.realized, fake_lmdeploy.engine = "turbomind", "pytorch"
    with pytest.raises(FallbackError, match="the built pipeline reports another engine"):
        open_lmdeploy("/m", "turbomind", None, strict=True)
    assert fake_lmdeploy.built == []  # closed again


def test_reference_pipeline_generates_greedily_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from pytest_lmbackend.modeldir import tiny_llama
    from pytest_lmbackend.pipeline import ReferencePipeline

    folder = tiny_llama(tmp_path / "m", vocab_size=512, hidden_size=64, intermediate_size=128)
    pipe = ReferencePipeline(str(folder), {"device": "cpu", "max_new_tokens": 3})
    first = pipe(["hello", "the sky"])
    again = pipe("hello")
    assert [len(r.token_ids) for r in first] == [3, 3]
    assert again.token_ids == first[0].token_ids
    assert isinstance(again.text, str)
    close_pipeline(pipe)
    assert pipe.model is None


def test_close_all_closes_every_pipeline_and_names_the_ones_that_failed() -> None:
    from pytest_lmbackend.pipeline import PipelineCloseError

    log: list[str] = []

    class Broken(Closable):
        def close(self) -> None:
            raise RuntimeError("engine hung up")

    cache = PipelineCache(capacity=3)
    cache.get(("m1", "pytorch", ()), lambda: Broken("a", log))
    cache.get(("m2", "transformers", ()), lambda: Closable("b", log))
    with pytest.raises(PipelineCloseError, match="model m1 on backend pytorch: RuntimeError: engine hung up"):
        cache.close_all()
    assert log == ["b"] and len(cache) == 0  # the one after the failure was closed too
