"""Read a model source (folder, config.json, mapping, workspace, cached hub id) into a read-only view."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from types import MappingProxyType

TYPE_CHECKING = False  # typing stays unimported at run time: it alone costs more than these rules
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MAX_DEPTH",
    "ConfigDepthError",
    "ConfigEncodingError",
    "ConfigError",
    "ConfigJSONError",
    "ConfigNotFoundError",
    "ConfigPermissionError",
    "ConfigReadError",
    "ConfigTypeError",
    "ConfigValueError",
    "HubModelNotCachedError",
    "MissingArchitectureError",
    "MissingFieldError",
    "ModelConfig",
    "SymlinkLoopError",
    "clear_cache",
    "from_mapping",
    "hub_cache_dirs",
    "read_config",
]

# Deeper than any real config by far; a cap turns a pathological file into a typed error instead
# of a RecursionError from the JSON parser. LMDeploy itself answered for 150 levels (transformers
# copies the config recursively, so it gives up somewhere short of Python's recursion limit).
MAX_DEPTH = 400

MAPPING_LABEL = "<mapping>"


class ConfigError(ValueError):
    """A model source LMDeploy's rules cannot be applied to; names the file and the field."""

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        where = path if field is None else f"{path}: field {field!r}"
        super().__init__(f"{where}: {message}")


class ConfigNotFoundError(ConfigError):
    """No config.json (or no such folder/file)."""


class ConfigReadError(ConfigError):
    """The config.json (or the folder) exists but cannot be read (an I/O error, ``.errno``)."""

    def __init__(self, path: str, field: str | None, message: str, errno_: int | None = None) -> None:
        self.errno = errno_
        super().__init__(path, field, message)


class ConfigPermissionError(ConfigReadError):
    """The config.json (or the folder) is there, but this user may not read it."""


class ConfigJSONError(ConfigError):
    """config.json is not valid JSON."""


class ConfigEncodingError(ConfigError):
    """config.json is not UTF-8."""


class ConfigTypeError(ConfigError):
    """A field has the wrong type (e.g. ``architectures`` not a list of strings)."""


class ConfigValueError(ConfigError):
    """A field has a value the rules cannot use (e.g. zero attention heads)."""


class MissingFieldError(ConfigError):
    """A field a rule reads is absent and has no default."""


class MissingArchitectureError(ConfigError):
    """Neither ``architectures`` nor an ``auto_map`` names the model's architecture."""


class ConfigDepthError(ConfigError):
    """The config nests deeper than ``MAX_DEPTH``."""


class SymlinkLoopError(ConfigError):
    """config.json (or the folder) is a symlink loop."""


class HubModelNotCachedError(ConfigNotFoundError):
    """A hub id that is not in the local Hugging Face cache (nothing is ever downloaded)."""


# eq=False: identity hashing lets callers memoise per parsed file (the view is never mutated).
@dataclass(frozen=True, eq=False)
class ModelConfig:
    """A parsed config.json as LMDeploy sees it, plus the folder facts its rules look at."""

    source: str
    """What was asked for: the path or hub id as given, or ``<mapping>``."""
    path: str
    """The config.json read (or ``<mapping>``, or the folder when it has none)."""
    data: Mapping[str, Any] | None
    """The top-level JSON object, read-only; None for a TurboMind workspace without config.json."""
    folder: str | None = None
    triton_models: bool = False
    """``<folder>/triton_models`` exists: a TurboMind workspace."""
    workspace_weights: bool = False
    """``<folder>/triton_models/weights`` exists."""
    workspace_arch: str | None = None
    """``model_arch`` written by ``lmdeploy convert`` into the workspace, if readable."""
    bare: bool = False
    """Set by the rules' loading step: the release's transformers built no config class of the model
    type's own, so LMDeploy reads the values as they are (no class defaults, sub-configs as dicts)."""
    notes: tuple[str, ...] = ()
    """Set by the rules' loading step: what the release's transformers did with the file, and why."""

    @cached_property
    def quant_method(self) -> Any:
        """First ``quant_method`` found by a depth-first search, in file order (as LMDeploy searches
        a plain config).

        Computed on first use: most answers never need it, and the walk costs more than the rules.
        """
        return None if self.data is None else _search_quant(self.data, self.path)

    def quant_method_in_order(self, first: tuple[str, ...] = (), last: tuple[str, ...] = ()) -> Any:
        """The same search with the top-level keys ``first`` visited before the rest and ``last``
        after it (each in the order given), the rest in file order: how LMDeploy sees a composite
        config whose class sets its sub-configs before or after the file's keys (``rules.subconfigs``)."""
        data = self.data
        if data is None or not any(key in data for key in (*first, *last)):
            return self.quant_method
        ordered = {key: data[key] for key in first if key in data}
        ordered.update((key, value) for key, value in data.items() if key not in ordered and key not in last)
        ordered.update((key, data[key]) for key in last if key in data and key not in ordered)
        return _search_quant(ordered, self.path)

    def get(self, key: str, default: Any = None) -> Any:
        return default if self.data is None else self.data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return self.data is not None and key in self.data

    def sub(self, name: str) -> Mapping[str, Any] | None:
        """A nested sub-config (``llm_config``, ``text_config``, ...) if it is an object."""
        value = self.get(name)
        return value if isinstance(value, Mapping) else None


_LEAVES = frozenset({str, int, float, bool, type(None)})


def _is_node(value: Any) -> bool:
    kind = type(value)
    return kind is dict or kind is list or (kind not in _LEAVES and isinstance(value, (Mapping, list)))


def _search_quant(root: Any, path: str) -> Any:
    """The first ``quant_method`` of a depth-first search (LMDeploy's ``search_nested_config``), and
    the depth cap, in one pass; iterative, so no depth can exhaust Python's stack."""
    # Exact-type checks first: parsed JSON holds only dict, list and scalars, and ABC checks cost 10x more.
    leaves = _LEAVES
    stack: list[Any] = [iter(root.items()) if type(root) is dict or not isinstance(root, list)
                        else iter(enumerate(root))]
    while stack:
        for key, value in stack[-1]:
            if key == "quant_method":  # list positions are ints: never equal
                return value
            if type(value) not in leaves and _is_node(value):
                if len(stack) >= MAX_DEPTH:
                    raise ConfigDepthError(path, None, f"nesting deeper than {MAX_DEPTH} levels")
                stack.append(iter(enumerate(value)) if type(value) is list or isinstance(value, list)
                             else iter(value.items()))
                break
        else:
            stack.pop()
    return None


def from_mapping(data: Mapping[str, Any], label: str = MAPPING_LABEL) -> ModelConfig:
    """A ModelConfig over an already-parsed config (no copy: the caller keeps it unchanged).

    Values of the wrong type are kept: what each LMDeploy release does with them is the rules' to say.
    """
    if not isinstance(data, Mapping):
        raise ConfigTypeError(label, None, f"a config must be a JSON object, got {type(data).__name__}")
    return ModelConfig(source=label, path=label, data=data)


def _parse(raw: bytes, path: str) -> Mapping[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigEncodingError(path, None, f"not UTF-8 (byte {exc.start}: {exc.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigJSONError(path, None, f"malformed JSON: {exc.msg} at {where}") from None
    except RecursionError:
        raise ConfigDepthError(path, None, "nesting too deep for the JSON parser") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts (4300 digits)
        raise ConfigJSONError(path, None, f"unreadable JSON value: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigTypeError(path, None, f"top level must be a JSON object, got {type(data).__name__}")
    return data


_MODEL_ARCH = re.compile(r"^\s*model_arch\s*[:=]\s*['\"]?([A-Za-z0-9_.]+)", re.MULTILINE)


def _workspace_arch(weights: str) -> str | None:
    # ``lmdeploy convert`` writes config.yaml (0.6+) or config.ini (earlier); only model_arch is needed,
    # so a line match avoids a YAML dependency.
    for name in ("config.yaml", "config.ini"):
        try:
            with open(os.path.join(weights, name), encoding="utf-8", errors="replace") as fh:
                match = _MODEL_ARCH.search(fh.read())
        except OSError:
            continue
        if match:
            return match.group(1)
    return None


# key: folder -> (config stat key, workspace flags, parsed ModelConfig)
_CACHE: dict[str, tuple[tuple[int, int, int] | None, bool, bool, ModelConfig]] = {}


def clear_cache() -> None:
    """Forget every parsed file (tests; files are re-read anyway when mtime or size change)."""
    _CACHE.clear()


def _os_error(path: str, doing: str, exc: OSError) -> ConfigError:
    """The typed error for an OSError met while reading ``path``."""
    if exc.errno == errno.ELOOP:
        return SymlinkLoopError(path, None, "symlink loop")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ConfigPermissionError(path, None, f"{doing}: permission denied", exc.errno)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return ConfigNotFoundError(path, None, f"{doing}: {exc.strerror}")
    return ConfigReadError(path, None, f"{doing}: {exc.strerror or exc}", exc.errno)


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise _os_error(path, "cannot stat", exc) from None
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # reading a FIFO or a device would wait forever or never end
        raise ConfigNotFoundError(path, None, "not a regular file (a FIFO, socket or device)")
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _why_no_config(folder: str, config_path: str) -> str:
    if os.path.islink(config_path):
        return (f"config.json is a dangling symlink (to {os.readlink(config_path)!r}): an unfinished "
                "download?")
    base = os.path.basename(os.path.normpath(folder))
    if base.startswith("models--") and os.path.isdir(os.path.join(folder, "snapshots")):
        repo_id = base[len("models--"):].replace("--", "/", 1)
        return (f"no config.json in this folder: it is a Hugging Face cache repo; pass "
                f"snapshots/<revision> or the id {repo_id!r}")
    return "no config.json in this folder"


def _read_folder(folder: str, source: str, config_path: str, key: tuple[int, int, int] | None,
                 *, workspace: bool = True) -> ModelConfig:
    # LMDeploy looks for ``<model_path>/triton_models``: given a config.json file, that is never there
    triton = workspace and os.path.exists(os.path.join(folder, "triton_models"))
    weights = triton and os.path.exists(os.path.join(folder, "triton_models", "weights"))
    cached = _CACHE.get(config_path)
    if cached is not None and cached[0] == key and cached[1] == triton and cached[2] == weights:
        cfg = cached[3]
        return cfg if cfg.source == source else _with_source(cfg, source)
    arch = _workspace_arch(os.path.join(folder, "triton_models", "weights")) if weights else None
    if key is None:
        if not triton:
            raise ConfigNotFoundError(folder, "config.json", _why_no_config(folder, config_path))
        cfg = ModelConfig(source, folder, None, folder, triton, weights, arch)
    else:
        try:
            with open(config_path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise _os_error(config_path, "cannot read", exc) from None
        data = _parse(raw, config_path)
        cfg = ModelConfig(source, config_path, MappingProxyType(data), folder, triton, weights, arch)
    _CACHE[config_path] = (key, triton, weights, cfg)
    return cfg


def _with_source(cfg: ModelConfig, source: str) -> ModelConfig:
    return replace(cfg, source=source)


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def hub_cache_dirs() -> list[str]:
    """Where cached hub snapshots are looked for, in the order Hugging Face uses."""
    if os.environ.get("HF_HUB_CACHE"):
        return [os.environ["HF_HUB_CACHE"]]
    if os.environ.get("HF_HOME"):
        return [os.path.join(os.environ["HF_HOME"], "hub")]
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg else os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(base, "huggingface", "hub")]


def _resolve_hub_id(repo_id: str) -> str:
    """The snapshot folder ``refs/main`` names, as huggingface_hub resolves it offline (the file's
    text exactly, no fallback to another snapshot: LMDeploy fails there too)."""
    dirs = hub_cache_dirs()
    name = "models--" + repo_id.replace("/", "--")
    problems: list[str] = []
    for cache in dirs:
        repo = os.path.join(cache, name)
        if not os.path.isdir(repo):
            continue
        ref = os.path.join(repo, "refs", "main")
        try:
            with open(ref, encoding="utf-8") as fh:
                revision = fh.read()
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise _os_error(ref, "cannot read the cached revision", exc) from None
            problems.append(f"{ref}: {exc.strerror or exc}")
            continue
        snapshot = os.path.join(repo, "snapshots", revision)
        if revision and os.sep not in revision and os.path.isdir(snapshot):
            return snapshot
        snapshots = os.path.join(repo, "snapshots")
        problems.append(f"{ref} names {revision!r}, which is not a folder in {snapshots}")
    if problems:
        raise HubModelNotCachedError(
            repo_id, None,
            "in the local Hugging Face cache without a usable revision (" + "; ".join(problems)
            + "); huggingface_hub offline, and so LMDeploy, cannot resolve it either: "
            "pass the snapshot folder",
        )
    raise HubModelNotCachedError(
        repo_id,
        None,
        f"not a local path, and not in the local Hugging Face cache (looked in {', '.join(dirs)}); "
        "nothing is downloaded: fetch it first or pass a folder",
    )


def read_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> ModelConfig:
    """Read a model source: a folder, a config.json path, a parsed mapping, a TurboMind workspace
    folder, or a hub id found in the local Hugging Face cache (never the network).

    Files are cached by (path, mtime_ns, size, inode): a warm read of a folder costs two ``stat`` calls.
    """
    if isinstance(source, Mapping):
        return from_mapping(source)
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise ConfigTypeError(repr(source)[:80], None, "a model source is a folder or config.json path, "
                              f"a hub id or a config mapping, not {type(source).__name__}")
    text = os.fspath(source)
    if not isinstance(text, str):
        raise ConfigTypeError(repr(text), None, "a path must be text, not bytes")
    if not text.strip():
        raise ConfigNotFoundError(repr(text), None, "an empty path names no model")
    if "\x00" in text:
        # the operating system takes no NUL inside a path (os.stat raises a bare ValueError)
        raise ConfigNotFoundError(repr(text), None, "a path cannot hold a NUL character: no such file")
    # The common case first: a folder holding config.json.
    config_path = os.path.join(text, "config.json")
    key = _stat_key(config_path)
    if key is not None:
        return _read_folder(text, text, config_path, key)
    try:
        st = os.stat(text)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise _os_error(text, "cannot stat", exc) from None
        if _HUB_ID.match(text) and not text.startswith((".", "/")):
            snapshot = _resolve_hub_id(text)
            config_path = os.path.join(snapshot, "config.json")
            return _read_folder(snapshot, text, config_path, _stat_key(config_path))
        raise ConfigNotFoundError(text, None, "no such file or folder") from None
    if stat.S_ISDIR(st.st_mode):
        return _read_folder(text, text, config_path, None)
    return _read_folder(os.path.dirname(text) or ".", text, text, _stat_key(text), workspace=False)
