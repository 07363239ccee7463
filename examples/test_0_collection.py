"""Runs first: collecting this suite imported no engine and left CUDA alone."""

from __future__ import annotations

import sys


def test_collection_imported_no_engine() -> None:
    # pytest-benchmark and friends may import nothing heavy either; what matters is LMDeploy and
    # transformers, whose import costs seconds and may touch CUDA.
    assert "lmdeploy" not in sys.modules
    assert "transformers" not in sys.modules


def test_collection_left_cuda_alone() -> None:
    torch = sys.modules.get("torch")
    assert torch is None or not torch.cuda.is_initialized()
