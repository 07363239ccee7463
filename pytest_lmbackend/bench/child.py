"""The measured process: runs a round script, writing each phase as a JSON line the moment it ends."""

from __future__ import annotations

import time

# Taken before anything else this process does for the benchmark: where "interpreter start" ends.
# time.monotonic is CLOCK_MONOTONIC on Linux, one clock for every process, so the parent's spawn
# time and these marks can be subtracted.
T0 = time.monotonic()

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, Any  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_UNAVAILABLE = 0, 1, 3


class Unavailable(Exception):
    """Raised by a round script when its backend cannot run here; the reason is reported, not a time."""


class Events:
    """Append-only JSON lines, flushed per line, so a crash or a kill still leaves every finished phase."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] = open(path, "a", encoding="utf-8")

    def emit(self, ev: str, **data: Any) -> None:
        self._file.write(json.dumps({"ev": ev, **data}, default=repr) + "\n")
        self._file.flush()


class MemoryEvents:
    """The same events kept in a list, for a round run inside the calling process."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def emit(self, ev: str, **data: Any) -> None:
        self.items.append({"ev": ev, **data})


class RoundContext:
    """What a round script sees: the model folder, options, and ways to record phases and facts."""

    def __init__(self, events: Events | MemoryEvents, model_dir: str, options: dict[str, Any]) -> None:
        self.events = events
        self.model_dir = model_dir
        self.options = options
        self.iteration = 0
        # set by a script once a GPU is in use: called before a phase's end time is taken
        self.sync: Callable[[], None] | None = None
        # survives the iterations of a warm run (hooks installed once, for example)
        self.state: dict[str, Any] = {}
        self._open: list[str] = []

    @contextmanager
    def phase(self, name: str, parent: str | None = None) -> Iterator[None]:
        # a phase opened inside another is its sub-phase (of the outermost open one): top-level phases
        # never overlap, so they add up to the wall time instead of counting a stretch twice
        if parent is None and self._open:
            parent = self._open[0]
        start = time.monotonic()
        failed = True
        # said when it starts too: a round killed inside it (timeout, signal) still names it
        self.events.emit("phase-start", i=self.iteration, name=name, parent=parent, start=start)
        self._open.append(name)
        try:
            yield
            failed = False
        finally:
            self._open.pop()
            if self.sync is not None and not failed:
                self.sync()
            end = time.monotonic()
            self.events.emit(
                "phase", i=self.iteration, name=name, parent=parent, start=start, end=end, failed=failed
            )

    def info(self, **data: Any) -> None:
        self.events.emit("info", i=self.iteration, data=data)

    def unavailable(self, reason: str) -> Unavailable:
        return Unavailable(reason)

    def require_installed(self, *names: str) -> None:
        """Metadata only: an absent package is reported before paying for any heavy import."""
        for name in names:
            if importlib.util.find_spec(name) is None:
                raise self.unavailable(f"backend unavailable: {name} is not installed")

    def timed_import(self, phase: str, module: str, *names: str) -> tuple[Any, ...]:
        """``module`` and its attributes ``names``, imported inside phase ``phase`` (lazy attributes
        resolve there too); an import that fails makes the backend unavailable, not the round crash."""
        with self.phase(phase):
            try:
                imported = importlib.import_module(module)
                return (imported, *(getattr(imported, name) for name in names))
            except ImportError as exc:
                raise self.unavailable(f"backend unavailable: {module} is not importable ({exc})") from exc

    def wrap(self, module: str, attr: str, name: str, parent: str) -> str | None:
        """Record calls of ``module.attr`` (``Class.method`` allowed) as sub-phase ``name`` of ``parent``.

        Returns ``None`` when installed, else why not: a missing hook costs its sub-phase, never the round.
        """
        try:
            owner: Any = importlib.import_module(module)
            *path, leaf = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            if isinstance(owner, type):  # the class's own descriptor, so classmethods stay classmethods
                raw = next(k.__dict__[leaf] for k in owner.__mro__ if leaf in k.__dict__)
            else:
                raw = getattr(owner, leaf)
        except Exception as exc:  # the hooked module may differ between releases
            return f"{module}.{attr}: {type(exc).__name__}: {exc}"
        kind = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
        func = raw.__func__ if kind is not None else raw
        if not callable(func):
            return f"{module}.{attr}: not callable"
        ctx = self

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if name in ctx._open or parent not in ctx._open:  # nested call, or outside the parent
                return func(*args, **kwargs)
            with ctx.phase(name, parent=parent):
                return func(*args, **kwargs)

        setattr(owner, leaf, kind(timed) if kind is not None else timed)
        return None


def load_target(spec: str) -> Callable[[RoundContext], None]:
    """``package.module:function`` or ``path/to/file.py[:function]`` (function defaults to ``run``)."""
    if ":" in spec and not spec.endswith(".py"):
        target, _, func_name = spec.rpartition(":")
    else:
        target, func_name = spec, "run"
    if target.endswith(".py"):
        path = Path(target)
        mod_spec = importlib.util.spec_from_file_location(f"_lmbench_round_{path.stem}", path)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot load round script {path}")
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    func: Callable[[RoundContext], None] = getattr(module, func_name)
    return func


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest_lmbackend.bench.child")
    parser.add_argument("--script", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--options", default="{}", help="JSON object handed to the script")
    args = parser.parse_args(argv)
    events = Events(args.events)
    events.emit("start", t=T0, pid=os.getpid(), python=sys.version.split()[0])
    ctx = RoundContext(events, args.model, json.loads(args.options))
    code = EXIT_OK
    try:
        run = load_target(args.script)
    except Exception as exc:
        events.emit("error", i=0, type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
        return EXIT_ERROR
    for i in range(args.iterations):
        ctx.iteration = i
        events.emit("round", i=i, t=time.monotonic())
        try:
            run(ctx)
        except Unavailable as exc:
            events.emit("unavailable", i=i, reason=str(exc))
            code = EXIT_UNAVAILABLE
            break
        except BaseException as exc:  # report any failure of the measured code, even SystemExit
            tb = traceback.format_exc()
            events.emit("error", i=i, type=type(exc).__name__, message=str(exc)[:2000], traceback=tb[-6000:])
            sys.stderr.write(tb)
            code = EXIT_ERROR
            break
        events.emit("end", i=i, t=time.monotonic())
    return code


if __name__ == "__main__":
    # round scripts import this module by name: let them find this instance, not a second copy
    sys.modules.setdefault("pytest_lmbackend.bench.child", sys.modules[__name__])
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Engines leave threads and helper processes behind; interpreter teardown is not start-up, so
    # the process ends here and the parent reaps whatever is left in its process group.
    os._exit(status)
