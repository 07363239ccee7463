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
from typing import IO, Any

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
    """One worker process: a request line out, a reply line back."""

    def __init__(self, python: Path, timeout: float) -> None:
        self.timeout = timeout
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
        except OSError as exc:
            raise OracleError(f"cannot start {python}: {exc}") from exc
        self.buffer = b""
        self.next_id = 0
        hello = self._read_line(startup=True)
        if not hello.get("ready"):
            raise OracleError(
                f"{python}: LMDeploy did not load: {hello.get('error')}\n{hello.get('traceback', '')}"
            )
        self.info: dict[str, Any] = hello

    def _stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def _read_line(self, *, startup: bool = False) -> dict[str, Any]:
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        with selectors.DefaultSelector() as sel:
            sel.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                # importing torch + transformers + LMDeploy takes seconds; allow for a slow box
                if not sel.select(self.timeout * (4 if startup else 1)):
                    self.close()
                    raise OracleError(
                        f"no answer from LMDeploy within {self.timeout:.0f}s\n{self._stderr_tail()}"
                    )
                chunk = os.read(stdout.fileno(), 1 << 20)
                if not chunk:
                    code = self.proc.wait()
                    raise OracleError(f"LMDeploy's interpreter exited ({code})\n{self._stderr_tail()}")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def send(self, request: dict[str, Any]) -> int:
        self.next_id += 1
        request = dict(request, id=self.next_id)
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise OracleError(f"LMDeploy's interpreter is gone: {exc}\n{self._stderr_tail()}") from exc
        return self.next_id

    def receive(self, request_id: int) -> dict[str, Any]:
        reply = self._read_line()
        if reply.get("id") != request_id:
            raise OracleError(f"out-of-order answer: wanted {request_id}, got {reply.get('id')}")
        if "fault" in reply:
            raise OracleError(f"LMDeploy-side fault: {reply['fault']}\n{reply.get('traceback', '')}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout,):
            if stream:
                stream.close()
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

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels = []

    def _fan_out(self, op: str, items: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
        if not self._channels:
            raise OracleError("the oracle is closed")
        n = len(self._channels)
        size = -(-len(items) // n) if items else 0
        chunks = [items[i * size : (i + 1) * size] for i in range(n)] if size else [[]]
        sent = []
        for channel, chunk in zip(self._channels, chunks, strict=False):
            if chunk or len(chunks) == 1:
                sent.append((channel, channel.send({"op": op, "items": chunk, **extra})))
        results: list[dict[str, Any]] = []
        for channel, request_id in sent:
            results.extend(channel.receive(request_id)["results"])
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
        channel = self._channels[0]
        reply = channel.receive(channel.send({"op": "engine_fields"}))
        result: dict[str, list[dict[str, Any]]] = reply["result"]
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
