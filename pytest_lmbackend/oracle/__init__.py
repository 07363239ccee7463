"""The bridge to real LMDeploy: its releases in environments of their own, asked over a pipe.

``bridge`` talks to a worker (``worker.py``, run by the environment's interpreter, standard library
only); ``venv`` builds and finds those environments; ``python -m pytest_lmbackend.oracle`` is the CLI.
"""

from __future__ import annotations

from .bridge import Answer, Item, Oracle, OracleError, find_python, shared_oracle
from .venv import HOME_ENV, TRANSFORMERS_PINS, VenvError, build

__all__ = [
    "HOME_ENV",
    "TRANSFORMERS_PINS",
    "Answer",
    "Item",
    "Oracle",
    "OracleError",
    "VenvError",
    "build",
    "find_python",
    "shared_oracle",
]
