"""Hooks that pytest-lmbackend calls, for plugins and conftest files to implement."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_lmbackend.backends import Backend


@pytest.hookspec
def pytest_lmbackend_register_backends(config: pytest.Config) -> Iterable[Backend]:
    """Return extra backends that ``--lm-backend`` may select, parametrize over and skip.

    Called once per session, before collection. Each backend says, from the runner's facts alone (GPUs,
    CUDA, packages from metadata, a fake profile's word), whether it can run here; it must not import
    its engine to decide. A name already taken, or ``auto``/``all``/``none``, is a usage error.

    Example, in a ``conftest.py``::

        from pytest_lmbackend.backends import Backend

        def _vllm_check(facts):
            if facts.packages.get("vllm") is None:
                return "backend vllm needs vllm installed"
            if not facts.devices:
                return "backend vllm needs a CUDA GPU; " + facts.found_devices()
            return None

        def pytest_lmbackend_register_backends(config):
            return [Backend("vllm", "vLLM engine", _vllm_check, rank=30)]

    ``facts.packages`` holds lmdeploy, torch and transformers; read other packages with
    ``pytest_lmbackend.backends.package_versions(["vllm"])`` inside the check.

    :param config: the pytest config.
    :return: an iterable of :class:`pytest_lmbackend.backends.Backend`.
    """
    raise NotImplementedError


@pytest.hookspec(firstresult=True)
def pytest_lmbackend_make_pipeline(
    config: pytest.Config, backend: str, model_dir: str, options: Mapping[str, Any]
) -> Any:
    """Build the pipeline ``lm_pipeline`` hands out for a registered third-party backend.

    Return None when ``backend`` is not yours. The value is shared per (model, backend, options) in a
    session and closed with its ``close()`` method, if any, when it is no longer needed.

    :param backend: the backend name the item runs on.
    :param model_dir: the model folder.
    :param options: engine options from ``lm_engine_options`` and ``lm_engine(...)``.
    """
    raise NotImplementedError
