"""Subcommands of ``python -m pytest_lmbackend``: one module each, with ``add_arguments`` and ``run``."""
