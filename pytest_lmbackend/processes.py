"""Child processes in their own session whose whole process group never outlives the run that started it.

A command the package spawns (an ``lm_isolated`` test, a start-up round) runs in a new session, so
that a timeout can kill everything it started, engine helpers included. A new session also puts it
out of reach of the signals that stop the run itself: Ctrl-C reaches the terminal's foreground
group, a CI ``timeout`` the runner's group. So every way out of ``ProcessGroup`` kills the group:
normal end, timeout, an exception, ``KeyboardInterrupt``; SIGTERM of this process is turned into an
exception while a group runs (``sigterm_interrupts``); and a guard process, started once per
process, kills the groups still registered when this process vanishes without a word (SIGKILL).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

# The guard: reads "+PGID" / "-PGID" lines until end of file (the process that started it is gone,
# however it ended), then kills every group still registered. Its own session and ignored signals
# keep it alive through the Ctrl-C or SIGTERM that stopped its owner.
_GUARD_CODE = """
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
sys.stdout.write("ready\\n")
sys.stdout.flush()
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guard:
    """This process's guard (one per process id: a fork gets its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stdin: IO[str] | None = None

    def _start(self) -> IO[str] | None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-I", "-c", _GUARD_CODE], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
            )  # fmt: skip
        except OSError:
            return None  # no guard: the other ways out still kill the groups
        assert proc.stdout is not None and proc.stdin is not None
        # waited for, so that its start-up never overlaps a measured round
        proc.stdout.readline()
        proc.stdout.close()
        # it is never waited for here: it ends when this process does; a zombie until then is harmless
        proc.returncode = 0  # keeps Popen.__del__ from warning about a running child
        atexit.register(self._close)  # at a normal exit, its end of file comes from here
        return proc.stdin

    def _close(self) -> None:
        with self._lock:
            if self._stdin is not None and self._pid == os.getpid():
                with contextlib.suppress(OSError, ValueError):
                    self._stdin.close()
            self._stdin = None

    def ensure(self) -> None:
        """Start the guard unless this process has one."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._stdin = self._start()

    def send(self, line: str) -> None:
        self.ensure()
        with self._lock:
            if self._stdin is None:
                return
            try:
                self._stdin.write(line + "\n")
                self._stdin.flush()
            except (OSError, ValueError):
                self._stdin = None  # the guard died: the other ways out remain


_guard = _Guard()


class ProcessGroup:
    """``command`` started in a new session, as a context manager; leaving it kills the group.

    The process is not reaped before its group is killed, so the group id cannot have been reused
    by then. ``exited`` is set, and ``exited_at`` (``time.monotonic()``) taken, the moment it exits.
    """

    def __init__(self, command: Sequence[str], **popen: Any) -> None:
        _guard.ensure()  # before the clock starts: its start-up must not overlap a measured round
        self.exited = threading.Event()
        self.exited_at: float | None = None
        self.spawned = time.monotonic()
        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            list(command), start_new_session=True, **popen)
        self.pid = self.process.pid
        self._killed = False
        _guard.send(f"+{self.pid}")
        threading.Thread(target=self._watch, name=f"lmbackend-wait-{self.pid}", daemon=True).start()

    def _watch(self) -> None:
        try:
            if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # exits, stays unreaped
            else:  # pragma: no cover - not Linux
                self.process.wait()
        except ChildProcessError:  # reaped elsewhere
            pass
        self.exited_at = time.monotonic()
        self.exited.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the process exited within ``timeout`` seconds (None: no limit)."""
        return self.exited.wait(timeout)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def kill(self) -> int | None:
        """Kill the whole group (the process and everything it started), reap, and return the exit code."""
        if not self._killed:
            self._killed = True
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            code = self.process.wait()
            _guard.send(f"-{self.pid}")
            return code
        return self.process.returncode

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a process group ran; raised so every ``finally`` runs on the way out."""


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside: SIGTERM raises ``Terminated`` rather than ending the process on the spot (which would
    skip the kill of the groups it started and leave their temporary folders behind). Only in the
    main thread, and only where SIGTERM has its default action (someone else's handler stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):  # pragma: no cover
        yield
        return
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(f"received {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def current_umask() -> int:
    """This process's umask, for files written through a private temporary file (``mkstemp`` makes
    them 0600) that should end up as any other file the user creates."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(mask)
    return mask
