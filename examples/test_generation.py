"""Tests on real pipelines, bound to tiny models whose weights are written at test time."""

from __future__ import annotations

from typing import Any

import pytest

TINY_LLAMA = pytest.mark.lm_model("models/tiny-llama", synthetic=True)
TINY_MISTRAL = pytest.mark.lm_model("models/tiny-mistral", synthetic=True)


def generate(pipe: Any, backend: str, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The same greedy request on every backend (LMDeploy takes a GenerationConfig)."""
    if backend in ("turbomind", "pytorch"):
        from lmdeploy import GenerationConfig

        config = GenerationConfig(max_new_tokens=max_new_tokens, top_k=1, do_sample=False)
        return [r.text for r in pipe(prompts, gen_config=config)]
    return [r.text for r in pipe(prompts, max_new_tokens=max_new_tokens)]


@TINY_MISTRAL
@pytest.mark.not_turbomind  # TurboMind dropped Mistral in LMDeploy 0.14.0
def test_greedy_generation_is_repeatable(lm_pipeline: Any, lm_backend: str) -> None:
    # auto: runs on the backend LMDeploy picks for Mistral under 0.18.0 (pytorch)
    first = generate(lm_pipeline, lm_backend, ["hello there", "the sky is"], 6)
    again = generate(lm_pipeline, lm_backend, ["hello there", "the sky is"], 6)
    assert len(first) == 2
    assert first == again


@TINY_MISTRAL
@pytest.mark.not_turbomind
def test_pipeline_runs_the_engine_it_was_given(lm_pipeline: Any, lm_backend: str) -> None:
    realized = getattr(getattr(lm_pipeline, "async_engine", None), "backend", None)
    realized = realized or getattr(lm_pipeline, "backend", lm_backend)
    assert realized == lm_backend


@TINY_LLAMA
@pytest.mark.lm_backend("transformers")
def test_reference_backend_generates(lm_pipeline: Any, lm_backend: str) -> None:
    (text,) = generate(lm_pipeline, lm_backend, ["hello"], 4)
    assert isinstance(text, str)
    first, again = (lm_pipeline(["hello"], max_new_tokens=4)[0] for _ in range(2))
    assert first.token_ids == again.token_ids
    assert 0 < len(first.token_ids) <= 4


@TINY_LLAMA
@pytest.mark.turbomind
@pytest.mark.gpu_num_1
def test_turbomind_llama(lm_pipeline: Any, lm_backend: str) -> None:
    # With strict fallback, a runner whose LMDeploy silently builds the PyTorch engine fails here.
    (text,) = generate(lm_pipeline, lm_backend, ["hello"], 4)
    assert isinstance(text, str)
