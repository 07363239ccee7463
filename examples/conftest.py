"""A downstream project's conftest: a third-party backend registered through the plugin's hooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from pytest_lmbackend.backends import Backend, RunnerFacts


def _echo_check(facts: RunnerFacts) -> str | None:
    return None  # pure Python: runs anywhere


def pytest_lmbackend_register_backends(config: pytest.Config) -> list[Backend]:
    """A third-party backend: ``--lm-backend=echo`` or ``all`` runs backend-bound tests on it too."""
    return [Backend("echo", "answers with the prompt (a registered backend)", _echo_check, rank=200)]


class EchoPipeline:
    """What a registered backend's pipeline looks like to the tests: callable on prompts, closable."""

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir
        self.closed = False

    def __call__(self, prompts: str | Sequence[str], **_: Any) -> Any:
        if isinstance(prompts, str):
            return _Echo(prompts)
        return [_Echo(p) for p in prompts]

    def close(self) -> None:
        self.closed = True


class _Echo:
    def __init__(self, text: str) -> None:
        self.text = text


def pytest_lmbackend_make_pipeline(config: pytest.Config, backend: str, model_dir: str,
                                   options: Mapping[str, Any]) -> EchoPipeline | None:
    return EchoPipeline(model_dir) if backend == "echo" else None
