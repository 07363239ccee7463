"""``lm_isolated``: the spawned command line, and native reports for every way a test can end."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lmbackend import isolation, xdist


def test_forwarded_args_keep_what_shapes_the_test() -> None:
    args = ["tests/x.py", "-k", "slow", "--lm-hardware", "h100x2", "--lm-plan", "-p", "no:foo", "-pbar",
            "-o", "a=b", "--override-ini=c=d", "-n", "4", "--junitxml=out.xml", "--basetemp", "/t",
            "-W", "error", "--tb=short", "--runxfail", "-x", "--lm-backend=pytorch"]
    takes_value = {"--lm-hardware": True, "--lm-plan": False}
    assert isolation.forwarded_args(args, lambda name: takes_value.get(name, True)) == [
        "--lm-hardware", "h100x2", "--lm-plan", "-p", "no:foo", "-pbar", "-o", "a=b", "--override-ini=c=d",
        "-W", "error", "--tb=short", "--runxfail", "--lm-backend=pytorch",
    ]


def test_node_arg_selects_the_item_by_its_path() -> None:
    path = Path("/r/tests/test_a.py")
    assert (isolation.node_arg(path, "tests/test_a.py::TestK::test_b[1-x]")
            == "/r/tests/test_a.py::TestK::test_b[1-x]")
    assert isolation.node_arg(path, "tests/test_a.py") == "/r/tests/test_a.py"


def test_child_env_pins_the_mask() -> None:
    env = isolation.child_env({"A": "1", "CUDA_VISIBLE_DEVICES": "0,1,2"}, "/r.jsonl", "GPU-a")
    assert env["CUDA_VISIBLE_DEVICES"] == env[xdist.SLICE_ENV] == "GPU-a"
    assert env[isolation.CHILD_ENV] == "/r.jsonl" and env["A"] == "1"
    assert isolation.child_env({"CUDA_VISIBLE_DEVICES": "3"}, "/r", None)["CUDA_VISIBLE_DEVICES"] == "3"


@pytest.mark.parametrize("text", ["-1", "soon"])
def test_bad_timeout(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="--lm-isolated-timeout"):
        isolation.parse_timeout(text)


SUITE = """
import json, os, pathlib, time
import pytest

RECORD = pathlib.Path({record!r})


@pytest.fixture
def broken():
    raise RuntimeError("fixture went wrong")


@pytest.mark.lm_isolated
def test_passes():
    assert os.getpid() != int(os.environ["OUTER_PID"])


@pytest.mark.lm_isolated
def test_fails():
    value = 1
    assert value == 2, "the real traceback"


@pytest.mark.lm_isolated
def test_skips():
    pytest.skip("not on this box")


@pytest.mark.lm_isolated
@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfails():
    assert False


@pytest.mark.lm_isolated
def test_setup_error(broken):
    pass


@pytest.mark.lm_isolated(timeout={timeout})
def test_hangs():
    time.sleep(600)


@pytest.mark.lm_isolated
def test_crashes():
    print("about to go")
    os._exit(7)


@pytest.mark.lm_isolated
@pytest.mark.lm_requires(gpus=2)
def test_pinned():
    RECORD.write_text(json.dumps([os.environ.get("CUDA_VISIBLE_DEVICES"),
                                  os.environ.get("PYTEST_LM_WORKER_GPUS"), os.getpid()]))
"""


def test_every_outcome_comes_back_as_a_native_report(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_lmbackend import hardware

    monkeypatch.setenv("OUTER_PID", str(os.getpid()))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    record = pytester.path / "record.json"
    pytester.makepyfile(test_iso=SUITE.format(record=str(record), timeout=15))
    result = pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x4", "-rA")
    result.assert_outcomes(passed=2, failed=3, skipped=1, xfailed=1, errors=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_setup_error*",
        "*RuntimeError: fixture went wrong*",
    ])
    result.stdout.fnmatch_lines([
        "*_ test_fails _*",
        ">       assert value == 2, \"the real traceback\"",
        "E       AssertionError: the real traceback",
    ])
    result.stdout.fnmatch_lines(["*test_iso.py::test_hangs: timed out after 15 s in an isolated process*"])
    result.stdout.fnmatch_lines(["*test_iso.py::test_crashes: the isolated process * ended with exit code 7 "
                                 "before reporting every phase*"])
    result.stdout.fnmatch_lines(["SKIPPED ?1? test_iso.py:*: not on this box",
                                 "XFAIL test_iso.py::test_xfails - known bug"])
    assert "INTERNALERROR" not in text
    mask, slice_env, pid = json.loads(record.read_text())
    uuids = [g.uuid for g in hardware.load_profile("h100x4").gpus]
    assert mask == slice_env == ",".join(uuids[:2])
    assert pid != os.getpid()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_timeout_from_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time, pytest

        @pytest.mark.lm_isolated
        def test_hangs():
            time.sleep(600)
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "--lm-isolated-timeout=12")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_hangs: timed out after 12 s in an isolated process*"])


def test_under_xdist_the_child_gets_the_items_gpus_of_its_worker(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    from pytest_lmbackend import hardware

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    out = pytester.mkdir("out")
    pytester.makepyfile(
        f"""
        import os, pathlib, pytest

        @pytest.mark.lm_isolated
        @pytest.mark.parametrize("i", range(2))
        def test_where(i):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            pathlib.Path({str(out)!r}, worker).write_text(os.environ["CUDA_VISIBLE_DEVICES"])
        """
    )
    result = pytester.runpytest("-n", "2", "--lm-gpus-per-worker=2", "--lm-hardware=h100x4")
    result.assert_outcomes(passed=2)
    uuids = [g.uuid for g in hardware.load_profile("h100x4").gpus]
    seen = {p.name: p.read_text() for p in out.iterdir()}
    assert seen == {"gw0": ",".join(uuids[0:2]), "gw1": ",".join(uuids[2:4])}


def test_warnings_of_the_isolated_test_reach_the_outer_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_warns="""
        import warnings, pytest

        class EngineWarning(UserWarning):
            pass

        @pytest.mark.lm_isolated
        def test_warns():
            warnings.warn("cache grows past 80%", EngineWarning)
            warnings.warn("old knob", DeprecationWarning)

        def local_category():
            class Hidden(RuntimeWarning):
                pass
            return Hidden

        @pytest.mark.lm_isolated
        def test_warns_with_a_class_made_in_a_function():
            warnings.warn("from a local class", local_category())
        """
    )
    result = pytester.runpytest("-p", "no:xdist", "-W", "always")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*warnings summary*",
        "test_warns.py::test_warns",
        "*test_warns.py:*: EngineWarning: cache grows past 80%*",
        "*DeprecationWarning: old knob*",
    ])
    # a category that cannot be imported back arrives as UserWarning and keeps its own name
    result.stdout.fnmatch_lines(["*UserWarning: local_category.<locals>.Hidden: from a local class*"])
    assert result.stdout.str().count("EngineWarning: cache grows past 80%") == 1


def test_warning_json_round_trip() -> None:
    import warnings

    message = warnings.WarningMessage(DeprecationWarning("old"), DeprecationWarning, "/t/x.py", 3)
    data = json.loads(json.dumps(isolation.warning_to_json(message, "runtest", "x.py::t", ("x.py", 2, "t"))))
    back, when, nodeid, location = isolation.warning_from_json(data[isolation.WARNING_KEY])
    assert (back.category, str(back.message), back.filename, back.lineno) == (DeprecationWarning, "old",
                                                                               "/t/x.py", 3)
    assert (when, nodeid, location) == ("runtest", "x.py::t", ("x.py", 2, "t"))


def test_an_isolated_test_last_in_its_module_tears_down_the_module_here(pytester: pytest.Pytester) -> None:
    """The module fixture an earlier in-process test set up is finished before the next module's
    tests, as pytest's own teardown phase would; the next test does not find the stack disordered."""
    pytester.makepyfile(
        test_a="""
        import pytest

        EVENTS = []

        @pytest.fixture(scope="module")
        def mod():
            EVENTS.append("setup a")
            yield
            EVENTS.append("teardown a")

        def test_first(mod):
            pass

        @pytest.mark.lm_isolated
        def test_iso():
            assert True
        """,
        test_b="""
        from test_a import EVENTS

        def test_plain():
            assert EVENTS == ["setup a", "teardown a"]
        """,
    )
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=3)
    assert "not torn down properly" not in result.stdout.str()


def test_bad_lm_isolated_arguments_are_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.lm_isolated(timeout="abc")
        def test_word(): pass

        @pytest.mark.lm_isolated(timeout=-1)
        def test_negative(): pass

        @pytest.mark.lm_isolated(5)
        def test_positional(): pass

        @pytest.mark.lm_isolated(timout=5)
        def test_typo(): pass
        """
    )
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines_random([
        "*test_word: lm_isolated(timeout=...) must be seconds >= 0, got 'abc'*",
        "*test_negative: lm_isolated(timeout=...) must be seconds >= 0, got '-1'*",
        "*test_positional: lm_isolated takes timeout=SECONDS as a keyword*",
        "*test_typo: lm_isolated got unknown keyword(s) [[]'timout'[]]*",
    ])


def test_timeout_none_means_no_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.lm_isolated(timeout=None)\ndef test_a(): pass\n")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


def test_what_an_isolated_test_prints_is_not_lost(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.lm_isolated
        def test_crash():
            print("about to crash")
            os._exit(7)

        @pytest.mark.lm_isolated
        def test_pass():
            print("OUT-pass")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-rP")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ended with exit code 7*", "--- its output ---", "about to crash"])
    result.stdout.fnmatch_lines(["*Captured stdout call*", "OUT-pass"])
    shown = pytester.runpytest_subprocess("-p", "no:xdist", "-s", "-k", "test_pass")
    shown.assert_outcomes(passed=1)
    assert "OUT-pass" in shown.stdout.str() and "1 passed" in shown.stdout.str()
    assert shown.stdout.str().count("passed") == 1  # the child's own summary line is not echoed


def test_an_isolated_test_may_change_its_own_mask(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Its process runs this one test and exits: the change reaches no other test."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.lm_isolated
        def test_sets_it():
            os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        """
    )
    pytester.runpytest("-p", "no:xdist", "--lm-hardware=h100x4").assert_outcomes(passed=1)


def test_worker_id_in_an_isolated_test_is_its_workers(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(xdist.SLICE_ENV, raising=False)
    out = pytester.mkdir("out")
    pytester.makepyfile(
        f"""
        import os, pathlib, pytest

        @pytest.mark.lm_isolated
        @pytest.mark.parametrize("i", range(2))
        def test_where(i, worker_id):
            assert worker_id == os.environ["PYTEST_XDIST_WORKER"] != "master"
            pathlib.Path({str(out)!r}, worker_id).write_text(worker_id)
        """
    )
    pytester.runpytest("-n", "2", "--lm-hardware=h100x2").assert_outcomes(passed=2)
    assert {p.name for p in out.iterdir()} <= {"gw0", "gw1"} and any(out.iterdir())


# --- nothing an isolated test started outlives it -------------------------------------------------

HANGING = """
import os, pathlib, subprocess, sys, time
import pytest

RECORD = pathlib.Path(os.environ["LM_TEST_RECORD"])


@pytest.mark.lm_isolated(timeout=None)
def test_starts_a_helper_and_hangs():
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    RECORD.write_text(f"{os.getpid()} {helper.pid}")
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a parent that never reaps it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_for(predicate: object, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _outer_run(pytester: pytest.Pytester, tmp: Path, record: Path) -> subprocess.Popen[bytes]:
    """The outer pytest in its own session, as a CI job or a terminal would run it."""
    pytester.makepyfile(test_hang=HANGING)
    env = {**os.environ, "LM_TEST_RECORD": str(record), "TMPDIR": str(tmp)}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider",
                             "test_hang.py"], cwd=pytester.path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(("how", "code"), [("SIGINT", 2), ("SIGTERM", 143), ("SIGKILL", -9)])
def test_stopping_the_outer_run_kills_the_isolated_test_and_its_helpers(
        pytester: pytest.Pytester, how: str, code: int) -> None:
    """Ctrl-C (SIGINT to the terminal's group), a CI timeout (SIGTERM to the job's group) or SIGKILL:
    the child, in its own session, gets none of these; it must die anyway, with what it started, and
    the temporary folder must go (except after SIGKILL, which leaves no chance to remove it)."""
    import signal

    tmp = pytester.mkdir("tmp")
    record = pytester.path / "pids"
    outer = _outer_run(pytester, tmp, record)
    try:
        assert _wait_for(lambda: record.exists() and len(record.read_text().split()) == 2, 120), \
            outer.communicate(timeout=5)[0] if outer.poll() is not None else "the test never started"
        child, helper = map(int, record.read_text().split())
        assert _alive(child) and _alive(helper)
        os.killpg(outer.pid, getattr(signal, how))
        out = outer.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if outer.poll() is None:
            os.killpg(outer.pid, signal.SIGKILL)
            outer.wait()
    assert outer.returncode == code, out
    assert _wait_for(lambda: not _alive(child) and not _alive(helper), 10), (child, helper, out)
    if how != "SIGKILL":
        assert not list(tmp.glob("lm-isolated-*")), out
        assert "Traceback" not in out and "INTERNALERROR" not in out, out
    if how == "SIGTERM":
        assert "SIGTERM while it ran in an isolated process" in out, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_helper_an_isolated_test_leaves_running_dies_with_it(pytester: pytest.Pytester) -> None:
    record = pytester.path / "helper.pid"
    pytester.makepyfile(f"""
        import os, pathlib, subprocess, sys, time
        import pytest

        RECORD = pathlib.Path({str(record)!r})

        @pytest.mark.lm_isolated
        def test_a_leaves_a_helper():
            helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            RECORD.write_text(str(helper.pid))

        def gone(stat):
            try:
                return stat.read_text().rpartition(")")[2].split()[0] == "Z"
            except OSError:
                return True

        def test_b_finds_it_gone():
            stat = pathlib.Path(f"/proc/{{RECORD.read_text()}}/stat")
            for _ in range(50):  # a SIGKILL takes effect soon, not at once
                if gone(stat):
                    return
                time.sleep(0.1)
            raise AssertionError("the helper still runs")
    """)
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(passed=2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_error_while_waiting_still_kills_the_group(pytester: pytest.Pytester) -> None:
    record = pytester.path / "pids"
    pytester.makeconftest(f"""
        import pathlib, time
        from pytest_lmbackend import processes

        RECORD = pathlib.Path({str(record)!r})

        def failing_wait(self, timeout=None):
            while not (RECORD.exists() and len(RECORD.read_text().split()) == 2):
                time.sleep(0.05)
            raise RuntimeError("something went wrong in this process")

        processes.ProcessGroup.wait = failing_wait
    """)
    pytester.makepyfile(test_hang=HANGING.replace('os.environ["LM_TEST_RECORD"]', repr(str(record))))
    tmp = pytester.mkdir("tmp")
    result = pytester.runpytest_subprocess("-p", "no:xdist", f"--basetemp={tmp / 'base'}",
                                           timeout=120)
    assert "something went wrong in this process" in result.stdout.str() + result.stderr.str()
    child, helper = map(int, record.read_text().split())
    assert _wait_for(lambda: not _alive(child) and not _alive(helper), 10)


def test_bytes_that_are_not_utf8_and_real_file_descriptors_work_as_without_isolation(
        pytester: pytest.Pytester) -> None:
    """The child captures as the outer run does (fd by default): output is bytes on a real file."""
    pytester.makepyfile("""
        import subprocess, sys
        import pytest

        def body():
            sys.stdout.buffer.write(b"\\xff\\xfe not utf-8 \\x80\\n")
            sys.stdout.flush()
            subprocess.run([sys.executable, "-c", "print('from a subprocess')"], stdout=sys.stdout,
                           check=True)

        def test_plain():
            body()

        @pytest.mark.lm_isolated
        def test_isolated():
            body()
    """)
    result = pytester.runpytest("-p", "no:xdist", "-rP")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*_ test_isolated _*", "*Captured stdout call*", "*not utf-8*",
                                 "from a subprocess"])
