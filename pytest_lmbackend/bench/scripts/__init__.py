"""Round scripts, one per backend: each defines ``run(ctx)`` and records its phases through ``ctx``."""

from __future__ import annotations

# backend name -> "module:function" run by the measured process
SCRIPTS: dict[str, str] = {
    "transformers": "pytest_lmbackend.bench.scripts.hf_round:run",
    "pytorch": "pytest_lmbackend.bench.scripts.lmdeploy_round:run_pytorch",
    "turbomind": "pytest_lmbackend.bench.scripts.lmdeploy_round:run_turbomind",
    # no work at all: what the harness itself costs over a bare interpreter
    "empty": "pytest_lmbackend.bench.scripts.empty_round:run",
}

# what ``--backend all`` means
ALL_BACKENDS: tuple[str, ...] = ("transformers", "pytorch", "turbomind")
