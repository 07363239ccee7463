"""``@pytest.mark.lm_isolated``: run a test in a freshly spawned interpreter pinned to its GPUs."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import pytest
from _pytest.reports import TestReport

from pytest_lmbackend import settings
from pytest_lmbackend.hardware.units import parse_seconds
from pytest_lmbackend.processes import ProcessGroup, Terminated, sigterm_interrupts
from pytest_lmbackend.xdist import (
    MASK_ENV,
    SLICE_ENV,
    device_id,
    item_devices,
    item_gpu_count,
    session_hardware,
)

_SUMMARY = re.compile(r"^(=+ )?\d+ (passed|failed|skipped|errors?|xfailed|xpassed|warnings?)\b.* in [\d.]+s"
                      r"( \(.*\))?( =+)?$")
_PROGRESS = re.compile(r"^[.sxXFE]+( +\[ *\d+%\])?$")

# Set in the spawned interpreter: where it writes its reports; also tells it not to isolate again.
CHILD_ENV = settings.ISOLATED_CHILD_ENV
# In the child's folder: the files fd capture writes the test's stdout and stderr to, which outlive
# a crash or a kill (pytest's own are anonymous and vanish with the process).
_CAPTURE_FILES = ("stdout.capture", "stderr.capture")
DEFAULT_TIMEOUT = settings.ISOLATED_TIMEOUT.default
OUTPUT_TAIL = 4000

# Options that shape how the test itself runs, forwarded to the spawned pytest; everything else
# (selection, xdist, reports, cache) belongs to the outer run.
_VALUE_OPTIONS = frozenset({
    "-p", "-o", "--override-ini", "-c", "--config-file", "--rootdir", "--confcutdir", "--import-mode",
    "-W", "--pythonwarnings", "--tb", "--capture",
})
_FLAG_OPTIONS = frozenset({
    "--noconftest", "--strict-markers", "--strict-config", "--runxfail", "-l", "--showlocals",
    "--full-trace", "-s",
})
# The spawned run gets its own temporary root: sharing the outer one would let it wipe the outer run's.
_DROPPED_WITH_VALUE = frozenset({"--basetemp"})


# --- pure functions -------------------------------------------------------------------------------


def parse_timeout(text: str) -> float:
    """argparse ``type=`` for ``--lm-isolated-timeout``: seconds > 0, or 0 for none."""
    return parse_seconds(text, "--lm-isolated-timeout")


def forwarded_args(args: Sequence[str], lm_takes_value: Callable[[str], bool]) -> list[str]:
    """The parts of the outer command line the spawned pytest needs: ``--lm-*`` options, plugins,
    ini overrides, rootdir/config, warning filters and traceback style; no paths, selection or xdist.

    :param lm_takes_value: whether a ``--lm-*`` option (without ``=value``) consumes the next argument.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, _ = arg.partition("=")
        if arg.startswith("--lm-"):
            out.append(arg)
            if not eq and lm_takes_value(name) and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif name in _VALUE_OPTIONS:
            out.append(arg)
            if not eq and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        elif name in _DROPPED_WITH_VALUE:
            if not eq:
                i += 1
        elif arg in _FLAG_OPTIONS:
            out.append(arg)
        elif arg[:2] in ("-p", "-o", "-W", "-c") and len(arg) > 2 and not arg.startswith("--"):
            out.append(arg)  # the attached form, -pNAME
        i += 1
    return out


def node_arg(path: Path, nodeid: str) -> str:
    """The command-line argument that selects exactly this item from any working directory."""
    _, sep, rest = nodeid.partition("::")
    return f"{path}::{rest}" if sep else str(path)


def child_env(environ: Mapping[str, str], reports: str, mask: str | None) -> dict[str, str]:
    env = dict(environ)
    env[CHILD_ENV] = reports
    if mask is not None:
        env[MASK_ENV] = mask
        env[SLICE_ENV] = mask
    return env


def tail(text: str, limit: int = OUTPUT_TAIL) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# --- the spawned side -----------------------------------------------------------------------------


WARNING_KEY = "$lm_warning"


def warning_to_json(message: warnings.WarningMessage, when: str, nodeid: str,
                    location: tuple[str, int, str] | None) -> dict[str, object]:
    """A warning the spawned test raised, as one JSON-able dict (its category by import path)."""
    category = message.category
    return {WARNING_KEY: {
        "message": str(message.message), "category": f"{category.__module__}:{category.__qualname__}",
        "filename": message.filename, "lineno": message.lineno, "when": when, "nodeid": nodeid,
        "location": list(location) if location is not None else None,
    }}


def warning_from_json(data: Mapping[str, object]) -> tuple[warnings.WarningMessage, str, str,
                                                             tuple[str, int, str] | None]:
    """``warning_to_json`` read back: the category re-imported where it can be (else UserWarning,
    the message then naming the original category), as ``pytest_warning_recorded`` takes it."""
    module_name, _, qualname = str(data["category"]).partition(":")
    category: type[Warning] = UserWarning
    text = str(data["message"])
    try:
        found: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
        if not (isinstance(found, type) and issubclass(found, Warning)):
            raise TypeError(qualname)
        category = found
    except Exception:
        text = f"{qualname}: {text}"
    location = data.get("location")
    where = (str(location[0]), int(location[1]), str(location[2])) if isinstance(location, list) else None
    lineno = data.get("lineno")
    message = warnings.WarningMessage(text, category, str(data["filename"]),
                                      int(lineno) if isinstance(lineno, int) else 0)
    return message, str(data["when"]), str(data["nodeid"]), where


class ReportWriter:
    """In the spawned interpreter: each test report, serialised as pytest-xdist does, and each
    warning, one JSON line each."""

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.config = config
        self.path = path

    def _write(self, data: object) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(data) + "\n")

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        self._write(self.config.hook.pytest_report_to_serializable(config=self.config, report=report))

    def pytest_warning_recorded(self, warning_message: warnings.WarningMessage, when: str, nodeid: str,
                                location: tuple[str, int, str] | None) -> None:
        if when == "runtest":  # the outer run collects too: its own config/collect warnings stand
            self._write(warning_to_json(warning_message, when, nodeid, location))


# --- the outer side -------------------------------------------------------------------------------


def _lm_takes_value(config: pytest.Config) -> Callable[[str], bool]:
    def takes_value(name: str) -> bool:
        dest = name[2:].replace("-", "_")
        return not isinstance(config.getoption(dest, None), bool)
    return takes_value


def child_command(config: pytest.Config, item: pytest.Item) -> list[str]:
    args = forwarded_args([str(a) for a in config.invocation_params.args], _lm_takes_value(config))
    if not any(a == "--rootdir" or a.startswith("--rootdir=") for a in args):
        args.append(f"--rootdir={config.rootpath}")
    if config.inipath is not None and not any(a in ("-c", "--config-file") or a.startswith(
            ("--config-file=", "-c")) for a in args):
        args += ["-c", str(config.inipath)]
    if hasattr(config.option, "numprocesses"):
        args.append("-n0")  # an addopts -n must not spread one test over workers
    # The same capture as here, so the test meets the same streams (fd capture: real file
    # descriptors, any bytes). Its output survives a crash through the capture files (below).
    capture = f"--capture={config.getoption('capture', 'fd')}"
    return [sys.executable, "-m", "pytest", "-qq", "-p", "no:cacheprovider", capture, *args,
            node_arg(item.path, item.nodeid)]


def _timeout(config: pytest.Config, item: pytest.Item) -> float:
    marker = item.get_closest_marker("lm_isolated")
    if marker is not None and "timeout" in marker.kwargs:
        value = marker.kwargs["timeout"]
        # None is "no limit"; anything else was checked at collection (markers._check_isolated)
        return 0.0 if value is None else parse_timeout(str(value))
    return settings.value(config, settings.ISOLATED_TIMEOUT)


def _synthetic(item: pytest.Item, when: Literal["setup", "call", "teardown"],
               outcome: Literal["passed", "failed", "skipped"], longrepr: str | None,
               duration: float = 0.0) -> TestReport:
    now = time.time()
    return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, outcome,
                      longrepr, when, duration=duration, start=now - duration, stop=now)


def run_isolated(item: pytest.Item) -> list[TestReport]:
    """Run one item in a new interpreter; its reports, completed with failures for a timeout or crash.

    Whatever way this ends (the test's end, a timeout, Ctrl-C, SIGTERM, an error here), the child's
    whole process group is killed: nothing the test started outlives it.
    """
    config = item.config
    hardware = session_hardware(config)
    gpus = item_devices(hardware, item_gpu_count(item))
    mask = ",".join(device_id(g) for g in gpus) if hardware.gpus else None
    timeout = _timeout(config, item)
    with tempfile.TemporaryDirectory(prefix="lm-isolated-") as folder:
        reports_path = os.path.join(folder, "reports.jsonl")
        output_path = os.path.join(folder, "output.txt")
        command = child_command(config, item)
        start = time.monotonic()
        try:
            with open(output_path, "wb") as output, sigterm_interrupts(), ProcessGroup(
                command, cwd=config.invocation_params.dir, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env=child_env(os.environ, reports_path, mask),
            ) as group:  # fmt: skip
                timed_out = not group.wait(timeout or None)
                returncode = group.kill()  # also what the test left running after it ended
        except Terminated:
            # the group is gone and the folder is removed on the way out; stop the run as pytest does
            raise pytest.exit.Exception(f"{item.nodeid}: SIGTERM while it ran in an isolated process; "
                                        "killed that process and everything it started",
                                        returncode=128 + signal.SIGTERM) from None
        duration = time.monotonic() - start
        text = _crash_output(folder, output_path)
        reports = _read_reports(config, item, reports_path)
    where = f"isolated process (pid {group.pid}, CUDA_VISIBLE_DEVICES={mask!r})"
    problem = None
    if timed_out:
        problem = f"{item.nodeid}: timed out after {timeout:g} s in an {where}; killed it"
    elif not reports or reports[-1].when != "teardown":
        problem = (f"{item.nodeid}: the {where} ended with exit code {returncode} before "
                   "reporting every phase")
    if problem is not None:
        shown = f"\n--- its output ---\n{tail(text)}" if text.strip() else " (it wrote no output)"
        reports = _complete(item, reports, problem + shown, duration)
    elif config.getoption("capture", "fd") == "no":
        printed = _test_output(text)
        if printed:  # -s: what the test printed shows, as it would have had it run here
            sys.stdout.write(printed + "\n")
            sys.stdout.flush()
    return reports


def _read_reports(config: pytest.Config, item: pytest.Item, path: str) -> list[TestReport]:
    """The item's reports from the child's file; its warnings go to this run's warnings summary. A
    line the child was writing when it died is left out."""
    reports: list[TestReport] = []
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return reports
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        if WARNING_KEY in data:
            message, when, nodeid, location = warning_from_json(data[WARNING_KEY])
            # into the outer run's warnings summary, as pytest-xdist does for its workers
            config.hook.pytest_warning_recorded.call_historic(kwargs=dict(
                warning_message=message, when=when, nodeid=nodeid, location=location))
            continue
        report = config.hook.pytest_report_from_serializable(config=config, data=data)
        if isinstance(report, TestReport) and report.nodeid == item.nodeid:
            longrepr: object = report.longrepr
            if isinstance(longrepr, list):
                # a skip's (path, line, reason) is a tuple to pytest; JSON made it a list
                report.longrepr = (str(longrepr[0]), int(longrepr[1]), str(longrepr[2]))
            reports.append(report)
    return reports


def _crash_output(folder: str, output_path: str) -> str:
    """What the child wrote outside any capture, then what the phase it was in had captured so far
    (kept in ``folder`` by ``_keep_capture_files``): all a crash or a kill leaves of its output."""
    parts = [Path(output_path).read_text(encoding="utf-8", errors="replace")]
    for name in _CAPTURE_FILES:
        try:
            captured = Path(folder, name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if captured.strip():
            parts.append(f"--- captured {name.partition('.')[0]} of the unfinished phase ---\n{captured}")
    return "\n".join(p.rstrip("\n") for p in parts if p.strip())


def _test_output(text: str) -> str:
    """The child's output without pytest's own progress and summary lines (it runs with ``-qq``)."""
    lines = text.rstrip("\n").splitlines()
    while lines and (not lines[-1].strip() or _SUMMARY.match(lines[-1].strip())):
        lines.pop()
    if lines and _PROGRESS.match(lines[-1].strip()):
        lines.pop()
    return "\n".join(lines)


def _complete(item: pytest.Item, reports: list[TestReport], message: str,
              duration: float) -> list[TestReport]:
    """Reports for the phases a killed or crashed process never reported: the phase it was in fails
    (the test itself when setup had not finished: no setup report is invented), the rest are absent."""
    done = {r.when for r in reports}
    if "call" not in done and all(r.passed for r in reports):
        reports.append(_synthetic(item, "call", "failed", message, duration))
    elif "teardown" not in done:
        reports.append(_synthetic(item, "teardown", "failed", message, duration))
    if "teardown" not in {r.when for r in reports}:
        reports.append(_synthetic(item, "teardown", "passed", None))
    return reports


# --- hooks ----------------------------------------------------------------------------------------


class _OuterWorker:
    """In a child spawned by an xdist worker: ``worker_id`` is that worker's, as the test would have
    seen it there (pytest-xdist's own fixture answers "master" in a process that is no worker)."""

    @pytest.fixture(scope="session")
    def worker_id(self) -> str:
        return os.environ.get("PYTEST_XDIST_WORKER", "master")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None]:
    """In the spawned interpreter: the global fd capture, started inside this hook, writes to files
    in the reports' folder instead of anonymous ones (``_CAPTURE_FILES``)."""
    reports = os.environ.get(CHILD_ENV)
    if not reports:
        return (yield)
    import _pytest.capture as capture

    original: Callable[..., IO[bytes]] | None = getattr(capture, "TemporaryFile", None)
    names = iter(_CAPTURE_FILES)
    folder = os.path.dirname(reports)

    def kept_file(*args: Any, **kwargs: Any) -> IO[bytes]:
        name = next(names, None)
        if name is None and original is not None:  # a capfd fixture's: anonymous, as usual
            return original(*args, **kwargs)
        return open(os.path.join(folder, name or "extra.capture"), "w+b", buffering=0)

    if original is not None:  # the global capture's stdout, then stderr
        setattr(capture, "TemporaryFile", kept_file)  # noqa: B010 - not exported by pytest
    try:
        return (yield)
    finally:
        if original is not None:
            setattr(capture, "TemporaryFile", original)  # noqa: B010


def pytest_configure(config: pytest.Config) -> None:
    reports = os.environ.get(CHILD_ENV)
    if reports:
        config.pluginmanager.register(ReportWriter(config, reports), "lmbackend_isolated_reports")
        if os.environ.get("PYTEST_XDIST_WORKER"):
            config.pluginmanager.register(_OuterWorker(), "lmbackend_isolated_worker_id")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if os.environ.get(CHILD_ENV) or item.get_closest_marker("lm_isolated") is None:
        return None
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = run_isolated(item)
    local = _teardown_here(item, nextitem)
    if local is not None:  # a finalizer of this process failed: the item's teardown carries it
        reports = [r for r in reports if r.when != "teardown"] + [local]
    for report in reports:
        ihook.pytest_runtest_logreport(report=report)
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def _teardown_here(item: pytest.Item, nextitem: pytest.Item | None) -> TestReport | None:
    """What pytest's teardown phase does in this process: finish the fixtures of the nodes above the
    item (module, class, session) that ``nextitem`` does not share. The item ran elsewhere, but an
    earlier test of its module may have set up module fixtures here; left alone, the next test would
    find the stack out of order. A failed finalizer comes back as a failed teardown report."""
    if item.session.shouldfail or item.session.shouldstop:
        nextitem = None
    call = pytest.CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem),
                                     when="teardown", reraise=(pytest.exit.Exception, KeyboardInterrupt))
    if call.excinfo is None:
        return None
    return TestReport.from_item_and_call(item, call)

