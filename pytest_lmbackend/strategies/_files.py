"""Model folders on disk: well-formed ones from config dicts, and hostile `config.json` files."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hypothesis import strategies as st
from hypothesis.control import _current_build_context, cleanup, note

from pytest_lmbackend.modeldir import workspace_yaml, write_model_dir

from ._configs import _names, hf_configs

__all__ = ["MALFORMED_KINDS", "MalformedConfig", "malformed_configs", "model_dirs", "workspace_yaml",
           "write_model_dir"]

Layout = Literal["file", "missing", "directory", "symlink_loop", "dangling_symlink"]


@dataclass(frozen=True)
class MalformedConfig:
    """A hostile `config.json`: its bytes (for ``layout == "file"``) or a broken file-system layout."""

    kind: str
    data: bytes | None = None
    layout: Layout = "file"

    def __repr__(self) -> str:
        # the payload can be megabytes: a failure report shows its kind, size and first bytes
        if self.data is None:
            return f"MalformedConfig({self.kind!r}, layout={self.layout!r})"
        head = self.data[:40] + (b"..." if len(self.data) > 40 else b"")
        return f"MalformedConfig({self.kind!r}, {len(self.data)} bytes: {head!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints dataclasses field by field: keep the short form in failure reports
        printer.text(repr(self))

    def write(self, folder: Path) -> Path:
        """Lay this config out in `folder` (which must exist); returns the folder."""
        target = folder / "config.json"
        if self.layout == "file":
            target.write_bytes(self.data or b"")
        elif self.layout == "directory":
            target.mkdir()
        elif self.layout == "symlink_loop":
            os.symlink("config.json", target)  # points at itself: opening it fails with ELOOP
        elif self.layout == "dangling_symlink":
            os.symlink("no-such-file.json", target)
        return folder


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _deep(depth: int) -> bytes:
    return b'{"architectures": ["LlamaForCausalLM"], "x": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


_MALFORMED: tuple[Callable[[], MalformedConfig], ...] = (
    # Simplest first, so a shrunk failure shows the plainest hostile file.
    lambda: MalformedConfig("empty_file", b""),
    lambda: MalformedConfig("truncated_json", b'{"architectures": ["LlamaForCausalLM"'),
    lambda: MalformedConfig("not_json", b"architectures = LlamaForCausalLM\n"),
    lambda: MalformedConfig("single_quotes", b"{'architectures': ['LlamaForCausalLM']}"),
    lambda: MalformedConfig("trailing_comma", b'{"architectures": ["LlamaForCausalLM"],}'),
    lambda: MalformedConfig("json_list", _j([{"architectures": ["LlamaForCausalLM"]}])),
    lambda: MalformedConfig("json_string", _j("LlamaForCausalLM")),
    lambda: MalformedConfig("json_number", b"42"),
    lambda: MalformedConfig("json_null", b"null"),
    lambda: MalformedConfig("empty_object", b"{}"),
    lambda: MalformedConfig("empty_architectures", _j({"architectures": [], "model_type": "llama"})),
    lambda: MalformedConfig(
        "string_architectures", _j({"architectures": "LlamaForCausalLM", "model_type": "llama"})
    ),
    lambda: MalformedConfig("null_architectures", _j({"architectures": None})),
    lambda: MalformedConfig("number_architecture", _j({"architectures": [7]})),
    lambda: MalformedConfig(
        "wrong_type_sizes",
        _j({"architectures": ["LlamaForCausalLM"], "hidden_size": "4096", "num_attention_heads": "32"}),
    ),
    lambda: MalformedConfig(
        "zero_heads",
        _j({"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_attention_heads": 0}),
    ),
    lambda: MalformedConfig(
        "section_not_object",
        _j({"architectures": ["InternVLChatModel"], "llm_config": [], "vision_config": "x"}),
    ),
    lambda: MalformedConfig("auto_map_not_object", _j({"auto_map": ["modeling_x.XForCausalLM"]})),
    lambda: MalformedConfig(
        "nan_and_infinity",
        b'{"architectures": ["LlamaForCausalLM"], "hidden_size": NaN, "num_attention_heads": Infinity}',
    ),
    lambda: MalformedConfig(
        "huge_integer", b'{"architectures": ["LlamaForCausalLM"], "hidden_size": ' + b"9" * 5000 + b"}"
    ),
    lambda: MalformedConfig(
        "duplicate_keys", b'{"architectures": ["QWenLMHeadModel"], "architectures": ["LlamaForCausalLM"]}'
    ),
    lambda: MalformedConfig("utf8_bom", b"\xef\xbb\xbf" + _j({"architectures": ["LlamaForCausalLM"]})),
    lambda: MalformedConfig("utf16", json.dumps({"architectures": ["LlamaForCausalLM"]}).encode("utf-16")),
    lambda: MalformedConfig("non_utf8", b'{"architectures": ["Llama\xff\xfeForCausalLM"]}'),
    lambda: MalformedConfig("nul_bytes", b'{"architectures": ["Llama\x00ForCausalLM"]}\x00'),
    lambda: MalformedConfig("lone_surrogate", b'{"architectures": ["\\ud800LlamaForCausalLM"]}'),
    lambda: MalformedConfig("deep_nesting", _deep(100_000)),
    lambda: MalformedConfig(
        "wide_object", _j({"architectures": ["LlamaForCausalLM"], **{f"k{i}": i for i in range(200_000)}})
    ),
    lambda: MalformedConfig(
        "huge_string", _j({"architectures": ["LlamaForCausalLM"], "blob": "x" * (16 << 20)})
    ),
    lambda: MalformedConfig("missing", None, "missing"),
    lambda: MalformedConfig("directory", None, "directory"),
    lambda: MalformedConfig("symlink_loop", None, "symlink_loop"),
    lambda: MalformedConfig("dangling_symlink", None, "dangling_symlink"),
)


@functools.cache
def _build(index: int) -> MalformedConfig:
    # built on first use: the huge and deep ones cost memory and time to make
    return _MALFORMED[index]()


#: Names of the hostile shapes `malformed_configs()` draws from.
MALFORMED_KINDS: tuple[str, ...] = (
    "empty_file",
    "truncated_json",
    "not_json",
    "single_quotes",
    "trailing_comma",
    "json_list",
    "json_string",
    "json_number",
    "json_null",
    "empty_object",
    "empty_architectures",
    "string_architectures",
    "null_architectures",
    "number_architecture",
    "wrong_type_sizes",
    "zero_heads",
    "section_not_object",
    "auto_map_not_object",
    "nan_and_infinity",
    "huge_integer",
    "duplicate_keys",
    "utf8_bom",
    "utf16",
    "non_utf8",
    "nul_bytes",
    "lone_surrogate",
    "deep_nesting",
    "wide_object",
    "huge_string",
    "missing",
    "directory",
    "symlink_loop",
    "dangling_symlink",
)


def malformed_configs(kinds: str | Iterable[str] | None = None) -> st.SearchStrategy[MalformedConfig]:
    """Hostile `config.json` files: bad JSON, wrong types, hostile encodings, sizes and layouts.

    :param kinds: restrict to these names from ``MALFORMED_KINDS``; None draws all of them.
    """
    named = _names(kinds, "kinds", "malformed_configs")
    if named is None:
        chosen = tuple(range(len(MALFORMED_KINDS)))
    else:
        kinds = named
        if not kinds:
            raise ValueError(f"malformed_configs(kinds=()): name at least one of {list(MALFORMED_KINDS)}")
        unknown = [k for k in kinds if k not in MALFORMED_KINDS]
        if unknown:
            raise ValueError(f"malformed_configs: unknown kind {unknown!r}; known: {list(MALFORMED_KINDS)}")
        chosen = tuple(i for i, k in enumerate(MALFORMED_KINDS) if k in kinds)
    return st.sampled_from(chosen).map(_build)


_fallback_root: list[str] = []


def _remove_fallback_folders() -> None:
    for path in _fallback_root:
        shutil.rmtree(path, ignore_errors=True)


def _fresh_folder() -> Path:
    """A new empty folder, removed when the current Hypothesis example ends (else at exit)."""
    folder = tempfile.mkdtemp(prefix="lmbackend-model-")
    if _current_build_context.value is not None:
        cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    else:
        # Drawn outside a test (e.g. `.example()`): there is no end-of-example hook to use.
        if not _fallback_root:
            atexit.register(_remove_fallback_folders)
        _fallback_root.append(folder)
    return Path(folder)


@st.composite
def _model_dir(draw: st.DrawFn, configs: st.SearchStrategy[Any], workspace: bool | None) -> Path:
    config = draw(configs)
    with_workspace = draw(st.booleans()) if workspace is None else workspace
    folder = write_model_dir(_fresh_folder(), config, workspace=with_workspace)
    if _current_build_context.value is not None:
        # the folder is gone once the example ends: a failure report must show what it held
        note(f"model_dirs: {folder} held config {config!r:.2000}"
             + (" and a TurboMind workspace" if with_workspace else ""))
    return folder


def model_dirs(
    configs: st.SearchStrategy[Mapping[str, Any] | MalformedConfig] | None = None,
    *,
    workspace: bool | None = False,
) -> st.SearchStrategy[Path]:
    """Fresh model folders holding a drawn `config.json`, one new folder per example.

    Unlike pytest's ``tmp_path`` (shared by every example of a Hypothesis test), each folder is
    new and is removed when its example ends.

    :param configs: what to write: config dicts or `MalformedConfig` values; default `hf_configs()`.
    :param workspace: True adds a TurboMind workspace (``triton_models/weights/config.yaml``),
        None draws with or without one.
    """
    if configs is not None and not isinstance(configs, st.SearchStrategy):
        raise TypeError(f"model_dirs(configs=...): a Hypothesis strategy of configs (such as hf_configs()), "
                        f"not {configs!r:.80}; for one fixed config use st.just(config)")
    if not (workspace is None or isinstance(workspace, bool)):
        raise TypeError(f"model_dirs(workspace=...): True, False or None, not {workspace!r}")
    return _model_dir(hf_configs() if configs is None else configs, workspace)
