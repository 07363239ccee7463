"""Process groups the package starts: killed on every way out, SIGTERM turned into an exception."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_lmbackend.processes import ProcessGroup, Terminated, sigterm_interrupts

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# a process that starts a helper, prints the helper's pid, and waits
PARENT = ("import subprocess, sys, time\n"
          "h = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
          "print(h.pid, flush=True)\n"
          "time.sleep(600)\n")


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _helper_pid(group: ProcessGroup) -> int:
    assert group.process.stdout is not None
    return int(group.process.stdout.readline())


def test_an_exception_inside_kills_the_process_and_what_it_started() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ProcessGroup([sys.executable, "-c", PARENT], stdout=subprocess.PIPE) as group:
            helper = _helper_pid(group)
            raise RuntimeError("boom")
    assert _gone(group.pid) and _gone(helper)
    assert group.returncode == -signal.SIGKILL
    assert group.process.stdout is not None
    group.process.stdout.close()


def test_wait_reports_the_exit_and_kill_returns_its_code() -> None:
    with ProcessGroup([sys.executable, "-c", "raise SystemExit(3)"]) as group:
        assert group.wait(60)
        assert group.exited_at is not None and group.exited_at >= group.spawned
        assert group.kill() == 3
    with ProcessGroup([sys.executable, "-c", "import time; time.sleep(60)"]) as slow:
        assert not slow.wait(0.2)
    assert slow.returncode == -signal.SIGKILL


def test_sigterm_inside_raises_and_the_default_comes_back() -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(Terminated), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_someone_elses_sigterm_handler_is_left_alone() -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_interrupts():
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_process_that_used_a_group_exits_without_resource_warnings() -> None:
    code = ("import sys\nfrom pytest_lmbackend.processes import ProcessGroup\n"
            "with ProcessGroup([sys.executable, '-c', 'pass']) as group:\n    group.wait(60)\n")
    result = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "ResourceWarning" not in result.stderr, result.stderr
