"""Start-up benchmarks: phase accounting, failed and hung rounds, CLI, plot, pytest-benchmark glue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_lmbackend.bench.phases import OTHER, Phase, RoundResult, Stats, phase_sort_key, summarize
from pytest_lmbackend.bench.report import BenchReport, format_table
from pytest_lmbackend.bench.runner import (
    BenchError,
    BenchOptions,
    Overhead,
    measure_overhead,
    run_backend,
    run_in_process,
)
from pytest_lmbackend.commands.bench import backends_of

HEAVY = ("torch", "transformers", "lmdeploy", "numpy", "matplotlib")

# A round script whose behaviour each test picks through options; "at" is the iteration it acts on.
FAKE_ROUND = f"""
import os, signal, subprocess, sys, time

def run(ctx):
    mode = ctx.options.get("mode", "ok")
    acts = ctx.options.get("at", 0) == ctx.iteration
    ctx.info(pid=os.getpid(), heavy=[m for m in {HEAVY!r} if m in sys.modules])
    if mode == "unavailable":
        raise ctx.unavailable("backend unavailable: no such engine here")
    with ctx.phase("import torch"):
        time.sleep(0.03)
    with ctx.phase("engine construction"):
        with ctx.phase("model build", parent="engine construction"):
            time.sleep(0.03)
        time.sleep(0.02)
    with ctx.phase("first token"):
        if acts and mode == "raise":
            raise RuntimeError("boom")
        if acts and mode == "exit":
            os._exit(7)
        if acts and mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if acts and mode == "hang":
            helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            ctx.info(helper=helper.pid)
            if ctx.options.get("pidfile"):
                with open(ctx.options["pidfile"], "w") as f:
                    f.write(f"{{os.getpid()}} {{helper.pid}}")
            time.sleep(60)
"""


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return model


@pytest.fixture
def fake_script(tmp_path: Path) -> str:
    path = tmp_path / "fake_round.py"
    path.write_text(FAKE_ROUND)
    return str(path)


def _opts(mode: str = "ok", **kwargs: Any) -> BenchOptions:
    at = kwargs.pop("at", 0)
    return BenchOptions(script_options={"mode": mode, "at": at}, **kwargs)


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a killed process not yet reaped by its new parent still answers; look at its state
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# the phase model, pure


def _round(status: str = "ok", elapsed: float = 10.0, warmup: bool = False, **kw: Any) -> RoundResult:
    phases = kw.pop(
        "phases",
        (
            Phase("interpreter start", 0.0, 0.1),
            Phase("import torch", 0.1, 4.0),
            Phase("engine construction", 4.0, 9.0),
            Phase("model build", 5.0, 7.0, parent="engine construction"),
            Phase("first token", 9.0, 9.9),
        ),
    )
    return RoundResult("b", 0, "cold", status, elapsed, phases, warmup, **kw)  # type: ignore[arg-type]


def test_durations_give_unclaimed_parent_time_to_other() -> None:
    d = _round().durations()
    assert d["engine construction"] == pytest.approx(5.0)
    assert d["engine construction/model build"] == pytest.approx(2.0)
    assert d[f"engine construction/{OTHER}"] == pytest.approx(3.0)


def test_coverage_counts_top_level_phases_only() -> None:
    assert _round().coverage() == pytest.approx(9.9 / 10.0)
    assert _round(elapsed=20.0).coverage() == pytest.approx(9.9 / 20.0)


def test_summary_counts_failures_but_never_times_them() -> None:
    rounds = [
        _round(),
        _round(elapsed=12.0),
        _round("crashed", elapsed=3.0, error="RuntimeError: boom"),
        _round("timeout", elapsed=99.0, error="killed"),
        _round(elapsed=1.0, warmup=True),
    ]
    s = summarize("b", rounds)
    assert dict(s.counts) == {"ok": 2, "crashed": 1, "timeout": 1, "unavailable": 0}
    assert s.wall == Stats(n=2, min=10.0, median=11.0, max=12.0)
    assert s.phases["import torch"].n == 2
    assert s.errors == ("crashed: RuntimeError: boom", "timeout: killed")
    assert _round("crashed").wall_s is None and _round().wall_s == 10.0


def test_summary_of_no_finished_round_has_no_numbers() -> None:
    s = summarize("b", [_round("unavailable", error="backend unavailable: x")])
    assert s.wall is None and s.coverage_min is None and not s.phases


def test_phase_rows_follow_the_start_up_order() -> None:
    keys = ["close", "engine construction/other", "import torch", "engine construction/model build",
            "engine construction", "zzz custom", "interpreter start"]  # fmt: skip
    assert sorted(keys, key=phase_sort_key) == [
        "interpreter start", "import torch", "engine construction", "engine construction/model build",
        "engine construction/other", "close", "zzz custom",
    ]  # fmt: skip


def test_table_has_phases_as_rows_and_backends_as_columns() -> None:
    report = BenchReport(
        "m", BenchOptions(rounds=2), {"alpha": (_round(), _round(elapsed=11.0)), "beta": (_round("crashed"),)}
    )
    text = format_table(report)
    header = next(line for line in text.splitlines() if line.startswith("phase"))
    assert header.split()[-2:] == ["alpha", "beta"]
    assert "  model build" in text and f"  {OTHER} (engine construction)" in text
    wall = next(line for line in text.splitlines() if line.startswith("wall"))
    assert "10.500 (10.000-11.000)" in wall and wall.rstrip().endswith("-")
    assert "1 crashed" in text


def test_checks_flag_poor_coverage_and_costly_harness() -> None:
    poor = _round(elapsed=20.0)  # phases explain 9.9 of 20 s
    report = BenchReport(
        "m", BenchOptions(), {"b": (poor,)}, Overhead(bare_s=0.1, empty_round_s=0.6, samples=3)
    )
    checks = report.checks()
    assert any("cover only 49.5%" in c for c in checks)
    assert any("harness overhead 2.5%" in c for c in checks)
    fine = BenchReport("m", BenchOptions(), {"b": (_round(),)}, Overhead(0.1, 0.15, 3))
    assert fine.checks() == []


def test_options_are_validated() -> None:
    for bad in ({"rounds": 0}, {"warmup": -1}, {"timeout_s": 0}, {"mode": "hot"}):
        with pytest.raises(BenchError):
            BenchOptions(**bad)  # type: ignore[arg-type]


def test_backends_of_expands_all_and_commas() -> None:
    assert backends_of(None) == ["transformers", "pytorch", "turbomind"]
    assert backends_of(["pytorch,transformers", "pytorch"]) == ["pytorch", "transformers"]
    assert backends_of(["x.py", "all"]) == ["x.py", "transformers", "pytorch", "turbomind"]


# ---------------------------------------------------------------------------------------------
# real processes with a fake round script


def test_cold_rounds_record_every_phase_in_order(fake_model: Path, fake_script: str) -> None:
    rounds = run_backend(fake_model, fake_script, _opts(rounds=2))
    assert [r.status for r in rounds] == ["ok", "ok"]
    r = rounds[0]
    assert r.backend == "fake_round"
    assert [p.name for p in r.top_level()] == [
        "interpreter start", "import torch", "engine construction", "first token", "exit",
    ]  # fmt: skip
    sub = next(p for p in r.phases if p.parent is not None)
    assert (sub.name, sub.parent) == ("model build", "engine construction")
    starts = [p.start for p in r.top_level()]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert r.top_level()[-1].end == pytest.approx(r.elapsed_s)
    assert r.durations()["import torch"] >= 0.03
    assert r.info["heavy"] == []  # the measured process imports nothing heavy of its own


def test_a_raising_round_is_crashed_with_its_partial_phases(fake_model: Path, fake_script: str) -> None:
    rounds = run_backend(fake_model, fake_script, _opts("raise", rounds=3))
    assert len(rounds) == 1  # the remaining rounds are not spent on a broken engine
    r = rounds[0]
    assert (r.status, r.wall_s) == ("crashed", None)
    assert r.error == "RuntimeError: boom"
    failed = [p for p in r.phases if p.failed]
    assert [p.name for p in failed] == ["first token"]
    assert "exit" not in [p.name for p in r.phases]
    assert "boom" in r.info["log_tail"]


def test_keep_going_runs_every_round(fake_model: Path, fake_script: str) -> None:
    rounds = run_backend(fake_model, fake_script, _opts("raise", rounds=2, keep_going=True))
    assert [r.status for r in rounds] == ["crashed", "crashed"]


@pytest.mark.parametrize(("mode", "reason"), [("exit", "exit status 7"), ("kill", "killed by SIGKILL")])
def test_a_dying_process_is_crashed_with_the_reason(
    fake_model: Path, fake_script: str, mode: str, reason: str
) -> None:
    (r,) = run_backend(fake_model, fake_script, _opts(mode, rounds=1))
    assert r.status == "crashed"
    assert r.error is not None and reason in r.error
    assert summarize("fake_round", [r]).wall is None


def test_a_hung_round_is_killed_with_its_helpers(fake_model: Path, fake_script: str) -> None:
    t = time.monotonic()
    (r,) = run_backend(fake_model, fake_script, _opts("hang", rounds=1, timeout_s=2.0))
    assert time.monotonic() - t < 15
    assert r.status == "timeout" and r.wall_s is None
    assert "2 s timeout" in (r.error or "")
    assert 2.0 <= r.elapsed_s < 15
    assert _gone(int(r.info["pid"])) and _gone(int(r.info["helper"]))


def test_an_unavailable_backend_is_reported_once(fake_model: Path, fake_script: str) -> None:
    rounds = run_backend(fake_model, fake_script, _opts("unavailable", rounds=3))
    assert [(r.status, r.error) for r in rounds] == [
        ("unavailable", "backend unavailable: no such engine here")
    ]


def test_warm_rounds_repeat_in_one_process(fake_model: Path, fake_script: str) -> None:
    rounds = run_backend(fake_model, fake_script, BenchOptions(rounds=2, mode="warm"))
    assert [(r.warmup, r.status) for r in rounds] == [(True, "ok"), (False, "ok"), (False, "ok")]
    assert len({r.info["pid"] for r in rounds}) == 1
    assert all("interpreter start" not in r.durations() for r in rounds)
    assert all(r.phases[0].start >= 0 and r.coverage() > 0.5 for r in rounds)


@pytest.mark.parametrize(("mode", "status"), [("raise", "crashed"), ("hang", "timeout"), ("exit", "crashed")])
def test_warm_rounds_before_a_failure_still_count(
    fake_model: Path, fake_script: str, mode: str, status: str
) -> None:
    opts = BenchOptions(rounds=3, mode="warm", timeout_s=2.0, script_options={"mode": mode, "at": 2})
    rounds = run_backend(fake_model, fake_script, opts)
    assert [r.status for r in rounds] == ["ok", "ok", status]
    assert summarize("fake_round", rounds).counts["ok"] == 1  # the first is a warm-up


@pytest.mark.parametrize(("mode", "status", "error"), [
    ("ok", "ok", None),
    ("raise", "crashed", "RuntimeError: boom"),
    ("unavailable", "unavailable", "backend unavailable: no such engine here"),
])  # fmt: skip
def test_in_process_rounds_for_pytest_benchmark_warm_mode(
    fake_model: Path, fake_script: str, mode: str, status: str, error: str | None
) -> None:
    opts = BenchOptions(mode="warm", script_options={"mode": mode, "at": 0})
    r = run_in_process("fake", fake_script + ":run", fake_model, opts, index=0)
    assert (r.status, r.error, r.mode) == (status, error, "warm")
    assert r.info["pid"] == os.getpid()
    if status == "ok":
        assert [p.name for p in r.top_level()] == ["import torch", "engine construction", "first token"]
        assert r.coverage() > 0.9  # no process start or exit in between: nearly all of it is named


def test_harness_overhead_is_measured_against_a_bare_interpreter() -> None:
    ov = measure_overhead(samples=2)
    assert ov.bare_s > 0 and ov.empty_round_s > 0 and ov.samples == 2
    assert ov.overhead_s < 1.0  # the harness's child imports only the standard library


def test_unknown_backend_and_missing_model_are_usage_errors(fake_model: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no start-up round for backend 'vllm'"):
        run_backend(fake_model, "vllm", BenchOptions())
    with pytest.raises(BenchError, match=r"no config\.json"):
        run_backend(tmp_path / "nowhere", "transformers", BenchOptions())
    with pytest.raises(BenchError, match="does not exist"):
        run_backend(fake_model, str(tmp_path / "missing.py"), BenchOptions())


# ---------------------------------------------------------------------------------------------
# the command line


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_lmbackend", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds: must be at least 1"),
        (["--warmup", "-1"], "--warmup: must be at least 0"),
        (["--rounds", "two"], "expected a whole number, got 'two'"),
        (["--timeout", "-1"], "--timeout: must be positive"),
        (["--timeout", "inf"], "--timeout: must be positive and finite"),
        (["--timeout", "nan"], "--timeout: must be positive and finite"),
        (["--timeout", "\u0661\u0660"], "expected seconds, got"),
        (["--rounds", "\u0663"], "expected a whole number, got"),
        (["--rounds", "1_0"], "expected a whole number, got '1_0'"),
        (["--plot", "x.txt"], ".png or .svg"),
        (["--options", "[1]"], "must be a JSON object"),
        (["--cold", "--warm"], "not allowed with argument"),
        (["--backend", "vllm"], "no start-up round for backend 'vllm'"),
        (["--backend", "empty", "--python", "/no/such/python"], "cannot start the interpreter"),
    ],
)
def test_cli_usage_errors_exit_2(fake_model: Path, args: list[str], message: str) -> None:
    res = _cli(str(fake_model), *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr


def test_cli_reports_a_crashed_round_and_exits_1(fake_model: Path, fake_script: str, tmp_path: Path) -> None:
    save = tmp_path / "bench.json"
    res = _cli(str(fake_model), "--backend", fake_script, "--rounds", "2", "--options", '{"mode": "raise"}',
               "--no-overhead", "--save", str(save))  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "bench: fake_round cold round 1: crashed: RuntimeError: boom" in res.stderr
    assert "1 crashed" in res.stdout and "fake_round: crashed: RuntimeError: boom" in res.stdout
    data = json.loads(save.read_text())
    (r,) = data["backends"]["fake_round"]["rounds"]
    assert (r["status"], r["wall_s"]) == ("crashed", None)


def test_cli_stopped_by_sigterm_leaves_no_engine_behind(
    fake_model: Path, fake_script: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pids"
    options = json.dumps({"mode": "hang", "pidfile": str(pidfile)})
    cli = subprocess.Popen(
        [sys.executable, "-m", "pytest_lmbackend", "bench", str(fake_model), "--backend", fake_script,
         "--options", options, "--no-overhead"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child, helper = (int(x) for x in pidfile.read_text().split())
    cli.send_signal(signal.SIGTERM)
    assert cli.wait(timeout=20) == 128 + signal.SIGTERM
    assert _gone(child) and _gone(helper)
    assert cli.stderr is not None and "interrupted by SIGTERM" in cli.stderr.read()
    cli.stderr.close()
    assert cli.stdout is not None
    cli.stdout.close()


def test_cli_interrupted_by_ctrl_c_says_so_in_one_line_and_exits_130(
    fake_model: Path, fake_script: str, tmp_path: Path
) -> None:
    """Ctrl-C reaches the terminal's foreground group: the CLI, never the round (its own session)."""
    pidfile = tmp_path / "pids"
    save = tmp_path / "res.json"
    options = json.dumps({"mode": "hang", "pidfile": str(pidfile), "at": 0})
    cli = subprocess.Popen(
        [sys.executable, "-m", "pytest_lmbackend", "bench", str(fake_model), "--backend", fake_script,
         "--options", options, "--no-overhead", "--save", str(save)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child, helper = (int(x) for x in pidfile.read_text().split())
    os.killpg(cli.pid, signal.SIGINT)
    out, err = cli.communicate(timeout=20)
    assert cli.returncode == 130, err
    assert _gone(child) and _gone(helper)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    (last,) = [line for line in err.splitlines() if "interrupted" in line]
    assert last == (f"python -m pytest_lmbackend bench: error: interrupted by SIGINT: the running round and "
                    f"everything it started were killed; {save} holds the rounds that finished")
    assert out == ""


def test_cli_shows_each_phase_as_it_ends(fake_model: Path, fake_script: str) -> None:
    res = _cli(str(fake_model), "--backend", fake_script, "--rounds", "1", "--warmup", "1", "--no-overhead")
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("bench: fake_round")]
    assert lines[:4] == [line for line in lines if "warm-up 1" in line][:4]
    phases = [line.split(": ", 2)[2].rsplit(" ", 2)[0] for line in lines if "warm-up 1: " in line]
    assert phases[:4] == ["import torch", "engine construction / model build", "engine construction",
                          "first token"]
    # the round's own line comes after its phases
    first_token = next(i for i, line in enumerate(lines) if "cold round 1: first token" in line)
    round_line = next(i for i, line in enumerate(lines) if "cold round 1: " in line and "longest" in line)
    assert first_token < round_line


def test_cli_save_touches_no_file_it_did_not_create_and_follows_the_umask(
    fake_model: Path, fake_script: str, tmp_path: Path
) -> None:
    save = tmp_path / "res.json"
    unrelated = tmp_path / "res.json.tmp"
    unrelated.write_text("mine, not the benchmark's")
    before = sorted(p.name for p in tmp_path.iterdir())
    old = os.umask(0o027)
    try:
        res = _cli(str(fake_model), "--backend", fake_script, "--rounds", "1", "--no-overhead",
                   "--save", str(save))
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    assert unrelated.read_text() == "mine, not the benchmark's"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "res.json"])
    assert json.loads(save.read_text())["backends"]["fake_round"]["summary"]["counts"]["ok"] == 1
    assert save.stat().st_mode & 0o777 == 0o640


def test_cli_warm_json_counts_the_warm_up_that_ran(fake_model: Path, fake_script: str) -> None:
    res = _cli(str(fake_model), "--backend", fake_script, "--warm", "--rounds", "2", "--json",
               "--no-overhead")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    rounds = data["backends"]["fake_round"]["rounds"]
    assert [r["warmup"] for r in rounds] == [True, False, False]
    assert data["warmup"] == 1


# ---------------------------------------------------------------------------------------------
# the picture


def _report() -> BenchReport:
    return BenchReport("m", BenchOptions(), {"alpha": (_round(),), "beta": (_round("unavailable"),)})


def test_svg_is_drawn_by_hand_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_lmbackend.bench.plot import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = plot(_report(), tmp_path / "p.svg")
    text = out.read_text()
    assert text.startswith("<svg") and text.rstrip().endswith("</svg>")
    assert "import torch: 3.900 s" in text and ">alpha<" in text and ">beta<" not in text
    fallback = plot(_report(), tmp_path / "q.png")  # no PNG without matplotlib: the SVG beside it
    assert fallback == tmp_path / "q.svg" and fallback.read_text().startswith("<svg")
    assert not (tmp_path / "q.png").exists()


def test_png_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pytest_lmbackend.bench.plot import plot

    out = plot(_report(), tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# a real transformers start-up on the CPU (one cold round on a tiny model)


@pytest.fixture(scope="module")
def transformers_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pytest_lmbackend.modeldir import tiny_llama

    work = tmp_path_factory.mktemp("hf")
    model = tiny_llama(work / "tiny", vocab_size=512, hidden_size=64, intermediate_size=128, num_heads=1)
    res = _cli(
        str(model), "--backend", "transformers", "--rounds", "1", "--json", "--plot", str(work / "p.svg")
    )
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    data["_stderr"] = res.stderr
    data["_plot"] = (work / "p.svg").read_text()
    return data


def test_transformers_cold_round_has_every_phase(transformers_run: dict[str, Any]) -> None:
    b = transformers_run["backends"]["transformers"]
    (r,) = b["rounds"]
    assert r["status"] == "ok"
    assert [p["name"] for p in r["phases"]] == [
        "interpreter start", "import torch", "import transformers", "config load", "tokenizer load",
        "weight load", "first token", "second request", "close", "exit",
    ]  # fmt: skip
    assert (r["info"]["first_new_tokens"], r["info"]["second_new_tokens"]) == (1, 8)
    assert r["info"]["device"] == "cpu"
    assert "bench: transformers cold round 1: " in transformers_run["_stderr"]


def test_transformers_phases_account_for_the_round(transformers_run: dict[str, Any]) -> None:
    s = transformers_run["backends"]["transformers"]["summary"]
    assert s["coverage_min"] >= 0.95
    ov = transformers_run["overhead"]
    assert ov["overhead_s"] <= 0.02 * s["wall"]["median"]
    assert transformers_run["checks_failed"] == []
    assert "import transformers" in transformers_run["_plot"]


def test_machine_facts_name_versions(transformers_run: dict[str, Any]) -> None:
    machine = transformers_run["machine"]
    assert machine["versions"]["transformers"] and machine["python"] == sys.version.split()[0]
    assert "gpus" in machine or "gpu_error" in machine


# ---------------------------------------------------------------------------------------------
# pytest-benchmark glue


BENCH_TEST = """
import pytest

def test_startup(lm_startup):
    summary = lm_startup({model!r}, {script!r}, rounds=2, options={{"mode": {mode!r}}})
    assert summary.counts["ok"] == 2
"""


def _bench_args(pytester: pytest.Pytester) -> list[str]:
    from importlib.metadata import entry_points

    registered = any(e.value == "pytest_lmbackend.plugin" for e in entry_points(group="pytest11"))
    return [] if registered else ["-p", "pytest_lmbackend.plugin"]


def test_lm_startup_saves_phases_and_machine_info_and_compares(
    pytester: pytest.Pytester, fake_model: Path, fake_script: str
) -> None:
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(test_it=BENCH_TEST.format(model=str(fake_model), script=fake_script, mode="ok"))
    storage = f"file://{pytester.path / 'store'}"
    res = pytester.runpytest(*_bench_args(pytester), "--benchmark-autosave", f"--benchmark-storage={storage}")
    res.assert_outcomes(passed=1)
    (saved,) = (pytester.path / "store").rglob("*.json")
    data = json.loads(saved.read_text())
    (bench,) = data["benchmarks"]
    assert bench["stats"]["rounds"] == 2
    info = bench["extra_info"]
    assert info["backend"] == "fake_round" and info["mode"] == "cold"
    assert info["phases"]["first token"]["n"] == 2
    assert [r["status"] for r in info["rounds"]] == ["ok", "ok"]
    assert info["model"] == {"path": str(fake_model.resolve()), "arch": "LlamaForCausalLM"}
    machine = data["machine_info"]["lmbackend"]
    assert "versions" in machine and machine["host"]
    assert "when" not in machine  # nothing that changes from run to run: a comparison must match
    again = pytester.runpytest(
        *_bench_args(pytester), f"--benchmark-storage={storage}", "--benchmark-compare",
        "--benchmark-compare-fail=min:100000%", "-o", "filterwarnings=error",
    )  # fmt: skip
    again.assert_outcomes(passed=1)
    assert "machine_info is different" not in again.stdout.str() + again.stderr.str()


@pytest.mark.parametrize(("mode", "outcome", "text"), [
    ("raise", "failed", "fake_round cold round 1 crashed: RuntimeError: boom"),
    ("unavailable", "skipped", "backend unavailable: no such engine here"),
])  # fmt: skip
def test_lm_startup_fails_or_skips_a_round_that_gives_no_number(
    pytester: pytest.Pytester, fake_model: Path, fake_script: str, mode: str, outcome: str, text: str
) -> None:
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(test_it=BENCH_TEST.format(model=str(fake_model), script=fake_script, mode=mode))
    storage = f"file://{pytester.path / 'store'}"
    res = pytester.runpytest(
        *_bench_args(pytester), "-rs", "--benchmark-autosave", f"--benchmark-storage={storage}"
    )
    res.assert_outcomes(**{outcome: 1})
    res.stdout.fnmatch_lines([f"*{text}*"])
    if outcome == "skipped":  # located at the test, not inside the plugin
        res.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_it.py:*: backend unavailable*"])
    for saved in (pytester.path / "store").rglob("*.json"):
        assert json.loads(saved.read_text())["benchmarks"] == []


def test_lm_startup_skips_without_pytest_benchmark(pytester: pytest.Pytester, fake_model: Path) -> None:
    pytester.makepyfile(test_it="def test_startup(lm_startup):\n    pass\n")
    res = pytester.runpytest(*_bench_args(pytester), "-p", "no:benchmark", "-rs")
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines(["*lm_startup needs pytest-benchmark*"])


def test_loading_the_bench_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, pytest_lmbackend.bench.plugin, pytest_lmbackend.bench.runner\n"
        "import pytest_lmbackend.commands.bench\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_warm_round_that_skips_or_exits_costs_no_other_result(pytester: pytest.Pytester, fake_model: Path,
                                                                fake_script: str) -> None:
    """pytest.importorskip or sys.exit inside a warm round (run in this process) is a skip or a
    crash of that test, and the session still saves the other benchmarks."""
    pytest.importorskip("pytest_benchmark")
    scripts = pytester.path / "scripts"
    scripts.mkdir()
    (scripts / "skipper.py").write_text(
        "import pytest\ndef run(ctx):\n    pytest.importorskip('no_such_engine')\n")
    (scripts / "quitter.py").write_text("import sys\ndef run(ctx):\n    sys.exit(0)\n")
    pytester.makepyfile(test_it=f"""
        def test_ok(lm_startup):
            lm_startup({str(fake_model)!r}, {fake_script!r}, rounds=1)

        def test_skips(lm_startup):
            lm_startup({str(fake_model)!r}, {str(scripts / 'skipper.py')!r}, rounds=1, mode="warm")

        def test_quits(lm_startup):
            lm_startup({str(fake_model)!r}, {str(scripts / 'quitter.py')!r}, rounds=1, mode="warm")
        """)
    storage = pytester.path / "store"
    res = pytester.runpytest(*_bench_args(pytester), "--benchmark-autosave",
                             f"--benchmark-storage=file://{storage}", "-rs")
    res.assert_outcomes(passed=1, skipped=1, failed=1)
    res.stdout.fnmatch_lines(["*quitter warm round 1 crashed: SystemExit(0) before the round finished*"])
    res.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_it.py:*no_such_engine*"])
    (saved,) = storage.rglob("*.json")
    assert [b["name"] for b in json.loads(saved.read_text())["benchmarks"]] == ["test_ok"]


@pytest.mark.parametrize("how", [["--benchmark-disable"], ["-n", "2"]])
def test_rounds_still_run_when_pytest_benchmark_is_disabled(pytester: pytest.Pytester, fake_model: Path,
                                                           fake_script: str, how: list[str]) -> None:
    """pytest-benchmark turns itself off under xdist: the rounds run, and it does not warn that its
    fixture went unused."""
    pytest.importorskip("pytest_benchmark")
    if how[0] == "-n":
        pytest.importorskip("xdist")
    pytester.makepyfile(test_it=BENCH_TEST.format(model=str(fake_model), script=fake_script, mode="ok"))
    result = pytester.runpytest_subprocess(*_bench_args(pytester), *how, "-W", "error::UserWarning")
    result.assert_outcomes(passed=1)
    assert "not used at all" not in result.stdout.str() + result.stderr.str()


def test_cli_refuses_two_scripts_of_one_name_and_an_unwritable_save(tmp_path: Path, fake_model: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "round.py").write_text("def run(ctx):\n    pass\n")
    res = _cli(str(fake_model), "--backend", str(tmp_path / "a" / "round.py"),
               "--backend", str(tmp_path / "b" / "round.py"))
    assert res.returncode == 2 and "would both be reported as 'round'" in res.stderr
    res = _cli(str(fake_model), "--backend", str(tmp_path / "a" / "round.py"), "--save",
               str(tmp_path / "nodir" / "x.json"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    res = _cli(str(fake_model), "--backend", str(tmp_path / "a" / "round.py"), "--save", str(tmp_path))
    assert res.returncode == 2 and "is a folder" in res.stderr


def test_a_script_function_after_a_dot_slash_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_lmbackend.bench.runner import resolve_script

    (tmp_path / "fast.py").write_text("def run(ctx):\n    pass\ndef other(ctx):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    name, target = resolve_script("./fast.py:other")
    assert name == "fast:other" and target == f"{tmp_path / 'fast.py'}:other"


def test_a_failed_warm_up_is_reported(fake_model: Path, fake_script: str) -> None:
    from pytest_lmbackend.bench.phases import summarize
    from pytest_lmbackend.bench.runner import run_backend

    rounds = run_backend(fake_model, fake_script, _opts("unavailable", rounds=1, warmup=1))
    summary = summarize("fake_round", rounds)
    assert summary.counted == 0 or summary.counts.get("unavailable")
    assert any("no such engine here" in e for e in summary.errors)


def test_a_phase_inside_another_is_its_sub_phase(tmp_path: Path, fake_model: Path) -> None:
    from pytest_lmbackend.bench.runner import run_backend

    script = tmp_path / "nested.py"
    script.write_text(
        "import time\n"
        "def run(ctx):\n"
        "    with ctx.phase('engine construction'):\n"
        "        with ctx.phase('weight load'):\n"
        "            time.sleep(0.2)\n"
        "        time.sleep(0.05)\n"
        "    time.sleep(0.3)  # in no phase\n"
    )
    (r,) = run_backend(fake_model, str(script), BenchOptions(rounds=1))
    assert r.ok, r.error
    keys = r.durations()
    assert "engine construction/weight load" in keys and "weight load" not in keys
    assert r.coverage() < 0.9  # the 0.3 s outside every phase shows; nothing is counted twice


def test_a_round_killed_inside_a_phase_names_it(tmp_path: Path, fake_model: Path) -> None:
    from pytest_lmbackend.bench.runner import run_backend

    script = tmp_path / "hang.py"
    script.write_text("import time\ndef run(ctx):\n"
                      "    with ctx.phase('weight load'):\n        time.sleep(60)\n")
    (r,) = run_backend(fake_model, str(script), BenchOptions(rounds=1, timeout_s=2))
    assert r.status == "timeout"
    (hung,) = [p for p in r.phases if p.name == "weight load"]
    assert hung.failed and hung.seconds > 1.0


def test_the_plot_title_counts_the_rounds_behind_its_medians() -> None:
    from pytest_lmbackend.bench.phases import Phase, RoundResult
    from pytest_lmbackend.bench.plot import _title
    from pytest_lmbackend.bench.report import BenchReport

    def result(i: int, status: str) -> RoundResult:
        return RoundResult("transformers", i, "cold", status, 1.0, (Phase("import torch", 0.0, 1.0),), False,
                           None if status == "ok" else "boom", {})

    rounds = (result(0, "ok"), result(1, "crashed"), result(2, "ok"), result(3, "crashed"))
    report = BenchReport("m", BenchOptions(rounds=4), {"transformers": rounds}, None, {})
    assert _title(report) == "cold start-up by phase (median of 2 ok rounds)"


def test_options_no_selected_backend_reads_or_of_the_wrong_type_are_refused(fake_model: Path) -> None:
    from pytest_lmbackend.bench.scripts import check_options

    assert check_options(["transformers", "pytorch"], {"device": "cpu", "session_len": 256}) is None
    assert check_options(["transformers"], {"max_new_token": 4}) == (
        "no selected backend reads option 'max_new_token'; transformers read device, max_new_tokens, prompt")
    assert check_options(["pytorch"], {"max_new_tokens": "abc"}) == (
        "option 'max_new_tokens' of backend pytorch: expected int, got 'abc'")
    assert check_options(["pytorch"], {"eager_mode": 1}) is not None
    assert check_options(["my_round.py"], {"anything": object()}) is None  # a script of your own
    res = _cli(str(fake_model), "--backend", "transformers", "--options", '{"max_new_tokens": "abc"}')
    assert res.returncode == 2 and "expected int, got 'abc'" in res.stderr


def test_lm_startup_stopped_by_sigterm_kills_the_round_and_stops_the_session(
    pytester: pytest.Pytester, fake_model: Path, fake_script: str, tmp_path: Path
) -> None:
    """A CI timeout's SIGTERM reaches the pytest run's group, never the round (its own session)."""
    pytest.importorskip("pytest_benchmark")
    pidfile = tmp_path / "pids"
    pytester.makepyfile(test_it=f"""
        def test_startup(lm_startup):
            lm_startup({str(fake_model)!r}, {fake_script!r}, rounds=1,
                       options={{"mode": "hang", "pidfile": {str(pidfile)!r}}})
    """)
    outer = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                              *_bench_args(pytester), "test_it.py"], cwd=pytester.path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child, helper = (int(x) for x in pidfile.read_text().split())
        os.killpg(outer.pid, signal.SIGTERM)
        out = outer.communicate(timeout=30)[0]
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait()
    assert outer.returncode == 143, out
    assert "SIGTERM during a start-up round" in out
    assert _gone(child) and _gone(helper)
