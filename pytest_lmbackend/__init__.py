"""pytest-lmbackend: test LLM-inference code per backend, per GPU, per LMDeploy release."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
