"""pytest-benchmark glue: what the ``lm_startup`` fixture gives (``fixtures.lm_startup``), timing start-up
rounds as benchmark rounds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:  # only for annotations: loading this plugin imports no benchmark code
    from pytest_lmbackend.bench.phases import BackendSummary, Mode, RoundResult



class StartupBenchmark:
    """Times pipeline start-up with pytest-benchmark: each benchmark round is one start-up round.

    Cold rounds run in a fresh interpreter each (the timer sees spawn to exit); warm rounds run the
    round script inside this test process, after one warm-up round that pays the imports. Phase
    statistics, coverage and every round land in ``benchmark.extra_info``.
    """

    def __init__(self, benchmark: Any) -> None:
        self.benchmark = benchmark
        self.results: list[RoundResult] = []

    def __call__(
        self,
        model_dir: str | Path,
        backend: str = "transformers",
        *,
        rounds: int = 2,
        warmup: int = 0,
        timeout_s: float = 600.0,
        mode: Mode = "cold",
        options: Mapping[str, Any] | None = None,
    ) -> BackendSummary:
        from pytest_lmbackend.bench import runner
        from pytest_lmbackend.bench.phases import summarize
        from pytest_lmbackend.processes import Terminated

        try:
            opts = runner.BenchOptions(
                rounds=rounds,
                warmup=warmup,
                timeout_s=timeout_s,
                mode=mode,
                script_options=dict(options or {}),
            )
            name, target = runner.resolve_script(backend)
            model = runner.check_model_dir(model_dir)
            from pytest_lmbackend.bench.scripts import check_options

            problem = check_options([backend], dict(options or {}))
            if problem is not None:
                raise runner.BenchError(f"options: {problem}")
        except runner.BenchError as exc:
            pytest.fail(f"lm_startup: {exc}", pytrace=False)
        counter = iter(range(10**9))

        def one_round() -> None:
            i = next(counter)
            if mode == "cold":
                r = runner.run_cold_round(opts, name, target, model, index=i)
            else:
                r = runner.run_in_process(name, target, model, opts, index=i)
            self.results.append(r)
            if not r.ok:
                raise _RoundFailed(r)

        warmups = opts.warmup_rounds

        def every_round() -> None:
            for _ in range(warmups + rounds):
                one_round()

        try:
            if getattr(self.benchmark, "disabled", False):
                # --benchmark-disable, or xdist (pytest-benchmark turns itself off there): pedantic
                # calls the function once, untimed, so that one call runs every round and the
                # summary stays whole (and pytest-benchmark sees its fixture used)
                self.benchmark.pedantic(every_round, rounds=1)
            else:
                self.benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmups)
        except _RoundFailed as exc:
            # raised as a plain exception inside pedantic, so pytest-benchmark marks the benchmark
            # as errored and stores no number; the outcome is decided here
            _report(exc.result)
        except Terminated:
            # the round's process group is gone; stop the session as pytest stops for Ctrl-C
            raise pytest.exit.Exception("lm_startup: SIGTERM during a start-up round; killed the round "
                                        "and everything it started", returncode=143) from None
        counted = self.results[-rounds:]
        summary = summarize(name, counted)
        from pytest_lmbackend.bench.report import model_facts

        self.benchmark.extra_info.update(extra_info(summary, counted, mode), model=model_facts(model))
        return summary


def extra_info(summary: BackendSummary, rounds: list[RoundResult], mode: str) -> dict[str, Any]:
    """What a saved benchmark carries beside pytest-benchmark's own stats (JSON-ready)."""
    data = summary.to_json()
    return {
        "backend": summary.backend,
        "mode": mode,
        "phases": data["phases"],
        "coverage_min": data["coverage_min"],
        "rounds": [
            {
                "status": r.status,
                "wall_s": r.to_json()["wall_s"],
                "phases": {k: round(v, 4) for k, v in r.durations().items()},
            }
            for r in rounds
        ],
    }


class _RoundFailed(Exception):
    def __init__(self, result: RoundResult) -> None:
        super().__init__(result.error)
        self.result = result


def _report(r: RoundResult) -> NoReturn:
    """A round that did not finish is a skip (backend unavailable) or a failure, never a number."""
    if r.status == "unavailable":
        # located at the test, as pytest's own skip marks are, not at this line
        raise pytest.skip.Exception(r.error or "backend unavailable", _use_item_location=True)
    tail = str(r.info.get("log_tail", "")).strip()
    tail = "\n" + "\n".join(tail.splitlines()[-15:]) if tail else ""
    pytest.fail(f"{r.backend} {r.mode} round {r.index + 1} {r.status}: {r.error}{tail}", pytrace=False)
