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

# the options each built-in round reads (``--options`` / ``lm_startup(options=...)``), with their type;
# checked before any round runs, so a typo does not cost a minute of start-up to be ignored
_LMDEPLOY_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "session_len": int, "cache_max_entry_count": (int, float), "eager_mode": bool, "log_level": str,
    "prompt": str, "max_new_tokens": int,
}
OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "transformers": {"device": str, "prompt": str, "max_new_tokens": int},
    "pytorch": _LMDEPLOY_OPTIONS,
    "turbomind": _LMDEPLOY_OPTIONS,
    "empty": {},
}


def check_options(backends: list[str], options: dict[str, object]) -> str | None:
    """Why ``options`` do not fit the built-in rounds of ``backends``, or None. An option no selected
    backend reads is a mistake (with a round script of your own among them, anything goes: it reads
    what it likes); one a backend reads must have the type it expects there."""
    reads = {b: OPTIONS[b] for b in backends if b in OPTIONS}
    if len(reads) == len(backends):
        unknown = sorted(k for k in options if not any(k in known for known in reads.values()))
        if unknown:
            every = sorted({k for known in reads.values() for k in known})
            return (f"no selected backend reads option {', '.join(map(repr, unknown))}; "
                    f"{', '.join(reads)} read {', '.join(every) or 'none'}")
    for backend, known in reads.items():
        for key, value in options.items():
            kind = known.get(key)
            if kind is None:
                continue
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
                return f"option {key!r} of backend {backend}: expected {_name(kind)}, got {value!r}"
    return None


def _name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
