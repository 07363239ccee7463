"""Real pipelines per backend, LMDeploy's silent fallback made loud, and memory freed on close."""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LMDEPLOY_ENGINES: Mapping[str, str] = {"turbomind": "TurbomindEngineConfig", "pytorch": "PytorchEngineConfig"}


class FallbackError(Exception):
    """LMDeploy would run (or ran) another engine than the one the test was given."""

    def __init__(self, wanted: str, realized: str, reason: str | None) -> None:
        self.wanted = wanted
        self.realized = realized
        self.reason = reason
        why = reason or "LMDeploy gave no reason"
        super().__init__(
            f"strict fallback: the test's backend is {wanted}, but LMDeploy runs {realized}: {why} "
            "(--no-lm-strict-fallback allows this)"
        )


class EngineOptionError(ValueError):
    """An engine option the backend's config does not have."""


@dataclass(frozen=True)
class ReferenceConfig:
    """Options of the transformers reference backend (it has no LMDeploy config class)."""

    options: Mapping[str, Any]


def engine_config(backend: str, options: Mapping[str, Any]) -> Any:
    """LMDeploy's ``TurbomindEngineConfig``/``PytorchEngineConfig`` (imported here, only now) or the
    reference backend's config, built from ``options``; an unknown field is an EngineOptionError."""
    if backend in LMDEPLOY_ENGINES:
        import lmdeploy

        cls = getattr(lmdeploy, LMDEPLOY_ENGINES[backend])
        known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else None
        unknown = sorted(set(options) - known) if known is not None else []
        if unknown:
            raise EngineOptionError(
                f"engine option(s) {', '.join(unknown)} are not fields of lmdeploy.{cls.__name__}"
            )
        try:
            return cls(**options)
        except (TypeError, ValueError, AssertionError) as exc:
            raise EngineOptionError(f"lmdeploy.{cls.__name__}({_kw(options)}): {exc}") from exc
    return ReferenceConfig(dict(options))


def _kw(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def realized_backend(model_dir: str, config: Any) -> tuple[str, str | None]:
    """Ask LMDeploy which engine ``pipeline()`` would build for this model and config, and why.

    Calls the function ``pipeline()`` itself calls (``lmdeploy.archs.autoget_backend_config``), so no
    engine starts; LMDeploy's fallback warning is captured as the reason.
    """
    from lmdeploy.archs import autoget_backend_config

    logger = logging.getLogger("lmdeploy")
    capture = _Capture()
    logger.addHandler(capture)
    try:
        backend, _ = autoget_backend_config(model_dir, config)
    finally:
        logger.removeHandler(capture)
    reason = next((m for m in capture.messages if "allback" in m), None)
    return str(backend), reason


def open_lmdeploy(model_dir: str, backend: str, config: Any, *, strict: bool) -> Any:
    """``lmdeploy.pipeline`` for this backend; with ``strict``, a fallback raises FallbackError."""
    if strict:
        realized, reason = realized_backend(model_dir, config)
        if realized != backend:
            raise FallbackError(backend, realized, reason)
    import lmdeploy

    pipe = lmdeploy.pipeline(model_dir, backend_config=config)
    engine = getattr(getattr(pipe, "async_engine", None), "backend", None)
    if strict and engine is not None and engine != backend:
        close_pipeline(pipe)
        raise FallbackError(backend, str(engine), "the built pipeline reports another engine")
    return pipe


@dataclass(frozen=True)
class ReferenceResponse:
    """One answer of the reference pipeline; ``text`` as LMDeploy's ``Response.text``."""

    text: str
    token_ids: tuple[int, ...]


class ReferencePipeline:
    """Greedy generation with plain transformers, callable like an LMDeploy pipeline on text prompts."""

    backend = "transformers"

    def __init__(self, model_dir: str, options: Mapping[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = str(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        self.max_new_tokens = int(options.get("max_new_tokens", 8))
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False, dtype=dtype
        )
        self.model: Any = model.to(device)
        self.model.eval()
        self.device = device

    def __call__(self, prompts: str | Sequence[str], *, max_new_tokens: int | None = None) -> Any:
        import torch

        single = isinstance(prompts, str)
        batch = [prompts] if isinstance(prompts, str) else list(prompts)
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        out: list[ReferenceResponse] = []
        for prompt in batch:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
            with torch.no_grad():
                gen = self.model.generate(ids, max_new_tokens=limit, do_sample=False,
                                          pad_token_id=self.tokenizer.eos_token_id)
            new = tuple(int(t) for t in gen[0, ids.shape[1]:])
            text = str(self.tokenizer.decode(list(new), skip_special_tokens=True))
            out.append(ReferenceResponse(text, new))
        return out[0] if single else out

    def close(self) -> None:
        self.model = None


def close_pipeline(pipe: Any) -> None:
    """``close()``, then collect garbage and empty CUDA's cache, so the memory shows free."""
    close = getattr(pipe, "close", None)
    if callable(close):
        close()
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to empty a cache nobody filled
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class PipelineCloseError(RuntimeError):
    """A pipeline's ``close()`` raised when the cache let go of it."""


def _describe(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) >= 2:
        return f"model {key[0]} on backend {key[1]}"
    return repr(key)


class PipelineCache:
    """Pipelines shared per key within a session, at most ``capacity`` alive; older ones are closed.

    A failed build is remembered too, so tests sharing a model that cannot start fail fast.
    """

    def __init__(self, capacity: int = 1, close: Callable[[Any], None] = close_pipeline) -> None:
        self.capacity = max(1, capacity)
        self._close = close
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._failures: dict[Hashable, BaseException] = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key in self._failures:
            raise self._failures[key]
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        while len(self._entries) >= self.capacity:
            _, old = self._entries.popitem(last=False)
            self._close(old)
        try:
            value = build()
        except Exception as exc:
            self._failures[key] = exc
            raise
        self._entries[key] = value
        return value

    def close_all(self) -> None:
        """Close every pipeline, each even when another fails; then one error naming all that failed
        (at session end pytest shows it on the last test, whichever that was)."""
        failed: list[str] = []
        while self._entries:
            key, old = self._entries.popitem(last=False)
            try:
                self._close(old)
            except Exception as exc:
                failed.append(f"{_describe(key)}: {type(exc).__name__}: {exc}")
        self._failures.clear()
        if failed:
            raise PipelineCloseError("closing lm_pipeline engines at session end failed:\n  "
                                     + "\n  ".join(failed))

    def __len__(self) -> int:
        return len(self._entries)
