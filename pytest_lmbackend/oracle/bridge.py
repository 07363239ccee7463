"""Ask a real LMDeploy, in its own interpreter, what it decides for model configs, over a pipe."""

from __future__ import annotations

import base64
import json
import os
import selectors
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from .venv import (
    build,
    is_ready,
    oracle_home,
    spec_for,
    venv_python,
)

_WORKER = Path(__file__).with_name("worker.py")

#: A config to ask about: a dict (written to a scratch folder by the other side), a model
#: folder's path, or raw config.json bytes.
Item = Mapping[str, Any] | os.PathLike[str] | str | bytes


class OracleError(RuntimeError):
    """The LMDeploy interpreter could not be started, died, or did not answer in time."""


@dataclass(frozen=True)
class Answer:
    """What LMDeploy's own functions returned for one config (None where the step raised).

    ``error`` is what `pipeline()` would fail with (`autoget_backend`, then `get_task`);
    ``errors`` holds every step that raised, as ``"Type: message"``.
    """

    arch: str | None
    turbomind_supported: bool | None
    backend: str | None
    is_vl: bool | None
    task: str | None
    error: str | None
    errors: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        if "fault" in data:
            return cls(
                None, None, None, None, None, f"OracleFault: {data['fault']}", {"fault": str(data["fault"])}
            )
        return cls(
            data.get("arch"),
            data.get("turbomind_supported"),
            data.get("backend"),
            data.get("is_vl"),
            data.get("task"),
            data.get("error"),
            dict(data.get("errors") or {}),
        )

    def error_type(self, step: str | None = None) -> str | None:
        """The exception type name of `step` (default: the user-facing error), or None."""
        text = self.errors.get(step) if step else self.error
        return text.split(":", 1)[0] if text else None


def find_python(release: str, *, transformers: str | None = None, home: Path | None = None) -> Path | None:
    """The interpreter of a ready environment for `release`, or None if it is not built."""
    spec = spec_for(release, transformers)
    return venv_python(spec, home) if is_ready(spec, home) else None


class _Channel:
    """One worker process: a request line out, a reply line back.

    Every way this can fail (no start, no "ready", a hang, a line that is not a JSON object, an
    answer out of order, a death) is an ``OracleError``, and the worker is killed first: none
    outlives the error.
    """

    def __init__(self, python: Path, timeout: float) -> None:
        self.timeout = timeout
        self.python = python
        self.log = tempfile.TemporaryFile(mode="w+b")
        env = dict(
            os.environ,
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            TRANSFORMERS_VERBOSITY="error",
        )
        try:
            self.proc = subprocess.Popen(
                [str(python), "-I", str(_WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                env=env,
            )
        except (OSError, ValueError) as exc:
            self.log.close()
            raise OracleError(f"cannot start {python}: {exc}") from exc
        self.buffer = b""
        self.next_id = 0
        try:
            hello = self._read_line(startup=True)
        except BaseException:
            self.kill()
            raise
        if not hello.get("ready"):
            self._fail(
                f"{python}: LMDeploy did not load: {hello.get('error')}\n{hello.get('traceback', '')}",
                with_stderr=False,
            )
        self.info: dict[str, Any] = hello

    def _stderr_tail(self) -> str:
        if self.log.closed:
            return ""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def _fail(self, message: str, *, with_stderr: bool = True) -> NoReturn:
        """Kill the worker and raise OracleError (with what it wrote to stderr)."""
        tail = self._stderr_tail() if with_stderr else ""
        self.kill()
        raise OracleError(f"{message}\n{tail}" if tail else message)

    def _read_line(self, *, startup: bool = False) -> dict[str, Any]:
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                # importing torch + transformers + LMDeploy takes seconds; allow for a slow box
                if not sel.select(self.timeout * (4 if startup else 1)):
                    waited = self.timeout * (4 if startup else 1)
                    self._fail(f"no answer from LMDeploy ({self.python}) within {waited:.0f}s")
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    code = self.proc.wait()
                    self._fail(f"LMDeploy's interpreter ({self.python}) exited ({code})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 alike
            self._fail(f"LMDeploy's interpreter ({self.python}) wrote a line that is not JSON "
                       f"({exc}): {line[:200]!r}")
        if not isinstance(reply, dict):
            self._fail(f"LMDeploy's interpreter ({self.python}) wrote {type(reply).__name__}, "
                       f"not a JSON object: {line[:200]!r}")
        return reply

    def send(self, request: dict[str, Any]) -> int:
        if self.proc.poll() is not None and self.log.closed:
            raise OracleError(f"LMDeploy's interpreter ({self.python}) is closed")
        self.next_id += 1
        request = dict(request, id=self.next_id)
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError) as exc:  # a broken pipe, or a closed stream
            self._fail(f"LMDeploy's interpreter ({self.python}) is gone: {exc}")
        return self.next_id

    def receive(self, request_id: int) -> dict[str, Any]:
        reply = self._read_line()
        if reply.get("id") != request_id:
            self._fail(f"out-of-order answer: wanted {request_id}, got {reply.get('id')!r:.40}")
        if "fault" in reply:
            # the worker survived its own error and keeps serving: no need to kill it
            raise OracleError(f"LMDeploy-side fault: {reply['fault']}\n{reply.get('traceback', '')}")
        return reply

    def kill(self) -> None:
        """End the worker now (it may be hung) and release its streams."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def close(self) -> None:
        """End the worker politely (stdin closed, it exits), killing it if it does not."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # unkillable (a stuck NFS read): leave it to the OS
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        self.log.close()


def _encode(item: Item) -> dict[str, Any]:
    if isinstance(item, bytes):
        return {"raw": base64.b64encode(item).decode()}
    if isinstance(item, (str, os.PathLike)):
        return {"path": os.fspath(item)}
    return {"config": dict(item)}


class Oracle:
    """Real LMDeploy of one release, running in its own environment, answering batches.

    ``workers`` processes share each batch (LMDeploy's detection is CPU-bound and single-threaded).
    Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        release: str,
        *,
        python: Path | None = None,
        transformers: str | None = None,
        workers: int = 1,
        timeout: float = 60.0,
    ) -> None:
        self.release = release
        interpreter = python or find_python(release, transformers=transformers)
        if interpreter is None:
            raise OracleError(
                f"no environment for lmdeploy {release} under {oracle_home()}: "
                f"run `python -m pytest_lmbackend.oracle setup {release}`"
            )
        self.python = interpreter
        self._channels: list[_Channel] = []
        try:
            for _ in range(max(1, workers)):
                self._channels.append(_Channel(interpreter, timeout))
        except BaseException:
            self.close()
            raise
        self.info: dict[str, Any] = dict(self._channels[0].info)

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once closed, or after a failure ended its workers."""
        return not self._channels

    def close(self) -> None:
        channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()

    def _fan_out(self, op: str, items: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
        if not self._channels:
            raise OracleError("the oracle is closed")
        n = len(self._channels)
        size = -(-len(items) // n) if items else 0
        chunks = [items[i * size : (i + 1) * size] for i in range(n)] if size else [[]]
        sent = []
        results: list[dict[str, Any]] = []
        try:
            for channel, chunk in zip(self._channels, chunks, strict=False):
                if chunk or len(chunks) == 1:
                    sent.append((channel, chunk, channel.send({"op": op, "items": chunk, **extra})))
            for channel, chunk, request_id in sent:
                got = channel.receive(request_id).get("results")
                if not isinstance(got, list) or len(got) != len(chunk) or not all(
                    isinstance(r, dict) for r in got
                ):
                    channel._fail(f"LMDeploy's interpreter answered {len(chunk)} items with {got!r:.200}")
                results.extend(got)
        except BaseException:
            # A failure, or Ctrl-C, mid-batch: the other workers hold answers nobody will read, and
            # the next batch would read them as its own. End them all; shared_oracle starts afresh.
            self.close()
            raise
        return results

    def detect(
        self, items: Iterable[Item], *, workspace: bool = False, language_model_only: bool = False
    ) -> list[Answer]:
        """LMDeploy's answer for each item, in order."""
        encoded = [_encode(item) for item in items]
        replies = self._fan_out(
            "detect", encoded, workspace=workspace, language_model_only=language_model_only
        )
        return [Answer.from_json(r) for r in replies]

    def detect_one(self, item: Item, **kwargs: bool) -> Answer:
        return self.detect([item], **kwargs)[0]

    def convert(
        self, configs: Sequence[Mapping[str, Any]], *, engine: str = "turbomind", model: str = "pytorch"
    ) -> list[dict[str, Any]]:
        """Run LMDeploy's `autoget_backend_config(model, EngineConfig(**kwargs))` for each kwargs.

        :param engine: the user's config class: "turbomind" or "pytorch" (…EngineConfig).
        :param model: "pytorch" for a model TurboMind does not take, "turbomind" for one it takes.

        Each result holds ``input_error`` (the user's class rejected the kwargs), ``backend``,
        ``result_class``, ``result`` (the returned config's fields), ``same_object`` (the user's
        object came back), ``validation_error`` (the returned class rejects its own fields when
        rebuilt from them) and ``error``.
        """
        return self._fan_out("convert", [{engine: dict(k), "model": model} for k in configs])

    def engine_fields(self) -> dict[str, list[dict[str, Any]]]:
        """Field names, type strings and defaults of TurbomindEngineConfig and PytorchEngineConfig."""
        if not self._channels:
            raise OracleError("the oracle is closed")
        channel = self._channels[0]
        try:
            reply = channel.receive(channel.send({"op": "engine_fields"}))
            result = reply.get("result")
            if not isinstance(result, dict):
                channel._fail(f"LMDeploy's interpreter answered engine_fields with {result!r:.200}")
        except BaseException:
            self.close()
            raise
        return result


_SHARED: dict[tuple[str, str | None], Oracle] = {}


def shared_oracle(
    release: str, *, transformers: str | None = None, build_env: bool = True, workers: int = 1
) -> Oracle:
    """One `Oracle` per release for the whole process (built on first use, closed at exit).

    :param build_env: build the release's environment when it is missing (minutes, once).
    """
    key = (release, transformers)
    found = _SHARED.get(key)
    if found is not None and found.closed:  # a failure ended its workers: start afresh
        found = None
    if found is None:
        python = find_python(release, transformers=transformers)
        if python is None and build_env:
            python = build(release, transformers=transformers)
        found = Oracle(release, python=python, transformers=transformers, workers=workers)
        if not _SHARED:
            import atexit

            atexit.register(_close_shared)
        _SHARED[key] = found
    return found


def _close_shared() -> None:
    for oracle in _SHARED.values():
        oracle.close()
    _SHARED.clear()
