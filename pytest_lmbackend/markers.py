"""Read an item's pytest-lmbackend and LMDeploy markers into one frozen value, or a MarkerError."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: markers are read before anything else is needed
    from pytest import Mark

    from pytest_lmbackend.requirements import Requirement

# LMDeploy's own marker names, read only where a suite opts in with the ini line ``lm_markers = lmdeploy``
# (other suites use the same common words with their own meaning): its engines, which a test marked with
# one needs available; the engines a ``not_*`` mark excludes; ``gpu_num_N`` (N accelerators) and
# ``gpu_num_distributed_<layout>`` (a layout spread over nodes).
BACKEND_ALIASES: Mapping[str, str] = MappingProxyType({"turbomind": "turbomind", "pytorch": "pytorch"})
# LMDeploy's engines, each named by one of its own markers above
LMDEPLOY_ENGINES: tuple[str, ...] = tuple(BACKEND_ALIASES.values())
EXCLUDE_ALIASES: Mapping[str, str] = MappingProxyType(
    {"not_turbomind": "turbomind", "not_pytorch": "pytorch"}
)
# LMDeploy's engine-config classes, which its suites also pass as their own backend parameter
# (autotest's pipeline tests: ``parametrize('backend', [TurbomindEngineConfig, PytorchEngineConfig])``)
ENGINE_CONFIG_CLASSES: Mapping[str, str] = MappingProxyType(
    {"TurbomindEngineConfig": "turbomind", "PytorchEngineConfig": "pytorch"}
)
GPU_NUM_MARKERS: tuple[str, ...] = tuple(f"gpu_num_{n}" for n in range(1, 17))
_GPU_NUM = re.compile(r"gpu_num_([0-9]+)\Z")  # ASCII digits: gpu_num_٣ is not LMDeploy's
DISTRIBUTED_PREFIX = "gpu_num_distributed_"
MARKER_SETS: tuple[str, ...] = ("lmdeploy",)  # what ``lm_markers`` may name


def suite_backend(value: object) -> str | None:
    """The backend a suite's own test parameter names (ini ``lm_backend_param``), or None: text as it
    is (``'turbomind'``); one of LMDeploy's engine-config classes, a subclass or an instance of one
    (``TurbomindEngineConfig`` is ``turbomind``); a mapping's ``'backend'`` entry, read the same way
    (autotest's ``run_config``). Classes are recognised by name, so LMDeploy is never imported."""
    if isinstance(value, str):
        return str.__str__(value)  # a plain copy: a subclass's own __eq__/__hash__ never run here
    if isinstance(value, Mapping):
        try:
            inner = value.get("backend")
        except Exception:  # the suite's own mapping type, failing in its own code: it names nothing here
            return None
        return None if isinstance(inner, Mapping) else suite_backend(inner)
    cls = value if isinstance(value, type) else type(value)
    for klass in cls.__mro__:
        name = ENGINE_CONFIG_CLASSES.get(klass.__name__)
        if name is not None:
            return name
    return None


def is_lmdeploy_marker(name: str) -> bool:
    """One of LMDeploy's own marker names: ``turbomind``, ``pytorch``, ``not_*``, ``gpu_num_N``,
    ``gpu_num_distributed_*``."""
    return (name in BACKEND_ALIASES or name in EXCLUDE_ALIASES or _GPU_NUM.match(name) is not None
            or name.startswith(DISTRIBUTED_PREFIX))


def lmdeploy_marker_help() -> dict[str, str]:
    """Help lines of LMDeploy's marker names, registered where a suite opts in (``lm_markers =
    lmdeploy``); its distributed layouts are those LMDeploy's own autotest uses."""
    from pytest_lmbackend.requirements import DISTRIBUTED_LAYOUTS

    return {
        "turbomind": "turbomind: LMDeploy marker; needs the turbomind backend (bound: only turbomind).",
        "pytorch": "pytorch: LMDeploy marker; needs the pytorch backend (bound: only pytorch).",
        "not_turbomind": "not_turbomind: LMDeploy marker; never run this test on turbomind.",
        "not_pytorch": "not_pytorch: LMDeploy marker; never run this test on pytorch.",
        **{n: f"{n}: LMDeploy marker; same as lm_requires(gpus={n[8:]})." for n in GPU_NUM_MARKERS},
        **{f"{DISTRIBUTED_PREFIX}{layout}": f"{DISTRIBUTED_PREFIX}{layout}: LMDeploy marker; the {layout} "
           "layout, on one node when it holds all of its GPUs, else spread over nodes."
           for layout in DISTRIBUTED_LAYOUTS},
    }


class MarkerError(ValueError):
    """A marker with arguments that cannot be used; the message names the test and the marker."""


@dataclass(frozen=True)
class ModelBinding:
    """The model a test is bound to: ``source`` as detection reads it, ``given`` as the marker said."""

    source: str | Mapping[str, Any]
    given: str
    synthetic: bool = False
    looked_in: tuple[str, ...] = ()
    """For a relative source found under none of them: the folders it was looked for in."""

    def describe(self) -> str:
        """``lm_model('x')`` and, where a relative path was not found, where it was looked for."""
        text = f"lm_model({self.given!r})"
        if self.looked_in:
            text += f" (not found under {', '.join(self.looked_in)}; then tried as a hub id)"
        return text

    @property
    def key(self) -> str:
        """A stable text key for sharing per-model resources: the path, or a mapping's content (two
        different mappings must never share a detection or an engine)."""
        if isinstance(self.source, str):
            return self.source
        import json

        try:
            content = json.dumps(self.source, sort_keys=True, separators=(",", ":"), default=repr)
        except (TypeError, ValueError):  # keys that are not strings, cycles: fall back to identity
            content = f"id:{id(self.source)}"
        return f"mapping:{content}"


@dataclass(frozen=True)
class ItemMarks:
    """Everything this plugin reads from one item's markers.

    ``allowed`` is None when no marker restricts the backend; ``backend_marked`` says whether an
    ``lm_backend`` marker binds the item to backends it runs on (it is backend-bound then even without
    a backend fixture; ``lm_model`` binds it too, ``selection.is_backend_bound``); ``engines`` are the
    LMDeploy engines its ``turbomind`` / ``pytorch`` marks name, which an item that is not bound needs
    available.
    """

    model: ModelBinding | None = None
    allowed: tuple[str, ...] | None = None
    excluded: frozenset[str] = frozenset()
    requirements: tuple[Requirement, ...] = ()
    engine_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    isolated: bool = False
    backend_marked: bool = False
    engines: frozenset[str] = frozenset()

    def permits(self, backend: str) -> bool:
        return backend not in self.excluded and (self.allowed is None or backend in self.allowed)

    def restriction(self) -> str:
        parts = []
        if self.allowed is not None:
            parts.append("only " + ", ".join(self.allowed))
        if self.excluded:
            parts.append("not " + ", ".join(sorted(self.excluded)))
        return "; ".join(parts) or "any backend"


RequirementParser = Callable[[tuple[Any, ...], dict[str, Any]], "Requirement"]


def parse_marks(
    marks: Iterable[Mark],
    *,
    where: str,
    backend_names: Sequence[str],
    base_dirs: Sequence[Path] = (),
    parse_requirement: RequirementParser | None = None,
    lmdeploy: bool = False,
) -> ItemMarks:
    """Fold an item's markers (closest first, as ``item.iter_markers()`` yields them) into ItemMarks.

    :param where: the test's node id, used in every error message.
    :param backend_names: every registered backend, for checking ``lm_backend`` names.
    :param base_dirs: folders a relative ``lm_model`` path is looked up in, in order.
    :param parse_requirement: turns ``lm_requires`` args/kwargs into a ``Requirement`` (default:
        ``requirements.parse_requirement`` for the test ``where``).
    :param lmdeploy: read LMDeploy's marker names too (the suite's ``lm_markers = lmdeploy``); else
        they are other markers, not the plugin's business.
    """
    model: ModelBinding | None = None
    closest_backend: tuple[str, ...] | None = None
    aliases: set[str] = set()
    excluded: set[str] = set()
    requirements: list[Requirement] = []
    options: dict[str, Any] = {}
    isolated = False
    marked = False
    for mark in marks:
        name = mark.name
        if name == "lm_model":
            if model is None:  # closest wins
                model = _parse_model(mark, where, base_dirs)
        elif name == "lm_backend":
            marked = True
            if closest_backend is None:
                closest_backend = _parse_backend_names(mark, where, backend_names)
        elif name == "lm_requires":
            requirements.append(_parse_requirement(parse_requirement, mark.args, dict(mark.kwargs), where))
        elif name == "lm_engine":
            if mark.args:
                raise MarkerError(f"{where}: lm_engine takes keyword options only, got {mark.args!r}")
            for key, value in mark.kwargs.items():
                options.setdefault(key, value)  # closest wins
        elif name == "lm_isolated":
            _check_isolated(mark, where)
            isolated = True
        elif not lmdeploy:
            continue
        elif name in BACKEND_ALIASES:
            _no_args(mark, where)
            aliases.add(BACKEND_ALIASES[name])
        elif name in EXCLUDE_ALIASES:
            _no_args(mark, where)
            excluded.add(EXCLUDE_ALIASES[name])
        elif (m := _GPU_NUM.match(name)) is not None:
            _no_args(mark, where)
            requirements.append(_parse_requirement(parse_requirement, (), {"gpus": int(m.group(1))}, where))
        elif name.startswith(DISTRIBUTED_PREFIX):
            _no_args(mark, where)
            requirements.append(_distributed(name, where))
    allowed = _combine(closest_backend, aliases, where)
    if allowed is not None and not [b for b in allowed if b not in excluded]:
        raise MarkerError(f"{where}: backend markers leave no backend: only {', '.join(allowed)}, "
                          f"but not {', '.join(sorted(excluded))}")
    return ItemMarks(
        model=model,
        allowed=allowed,
        excluded=frozenset(excluded),
        requirements=tuple(requirements),
        engine_options=MappingProxyType(options),
        isolated=isolated,
        backend_marked=marked,
        engines=frozenset(aliases),
    )


def _distributed(name: str, where: str) -> Requirement:
    """``gpu_num_distributed_<layout>``: the layout's GPUs, on one node or spread over several."""
    from pytest_lmbackend.requirements import distributed_layout

    try:
        return distributed_layout(name)
    except ValueError as exc:
        raise MarkerError(f"{where}: the {name} marker: {exc}") from None


def _combine(closest: tuple[str, ...] | None, aliases: set[str], where: str) -> tuple[str, ...] | None:
    if closest is None:
        return tuple(sorted(aliases)) if aliases else None
    if not aliases:
        return closest
    both = tuple(b for b in closest if b in aliases)
    if not both:
        raise MarkerError(f"{where}: lm_backend({', '.join(map(repr, closest))}) and the "
                          f"{', '.join(sorted(aliases))} marker leave no backend")
    return both


def _no_args(mark: Mark, where: str) -> None:
    if mark.args or mark.kwargs:
        raise MarkerError(f"{where}: the {mark.name} marker takes no arguments")


def _parse_backend_names(mark: Mark, where: str, known: Sequence[str]) -> tuple[str, ...]:
    if mark.kwargs:
        raise MarkerError(f"{where}: lm_backend takes backend names only, got keywords {sorted(mark.kwargs)}")
    if not mark.args:
        raise MarkerError(f"{where}: lm_backend needs at least one backend name ({', '.join(known)})")
    names: list[str] = []
    for arg in mark.args:
        if not isinstance(arg, str):
            raise MarkerError(f"{where}: lm_backend names must be strings, got {arg!r}")
        if arg not in known:
            raise MarkerError(f"{where}: lm_backend({arg!r}): unknown backend; known: {', '.join(known)}")
        if arg not in names:
            names.append(arg)
    return tuple(names)


def _parse_model(mark: Mark, where: str, base_dirs: Sequence[Path]) -> ModelBinding:
    extra = set(mark.kwargs) - {"synthetic", "source"}
    if extra:
        raise MarkerError(f"{where}: lm_model got unknown keyword(s) {sorted(extra)}; "
                          "takes source, synthetic")
    args = list(mark.args)
    if "source" in mark.kwargs:
        args.insert(0, mark.kwargs["source"])
    if len(args) != 1:
        raise MarkerError(f"{where}: lm_model takes exactly one source, got {len(args)}")
    synthetic = mark.kwargs.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise MarkerError(f"{where}: lm_model(synthetic=...) must be True or False, got {synthetic!r}")
    source = args[0]
    if isinstance(source, Mapping):
        return ModelBinding(MappingProxyType(dict(source)), given="<mapping>", synthetic=synthetic)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source:
        raise MarkerError(f"{where}: lm_model source must be a path, an id or a mapping, got {source!r}")
    resolved = resolve_source(source, base_dirs)
    missing = resolved == source and not Path(source).expanduser().is_absolute()
    looked_in = tuple(str(b) for b in base_dirs) if missing else ()
    return ModelBinding(resolved, given=source, synthetic=synthetic, looked_in=looked_in)


def _check_isolated(mark: Mark, where: str) -> None:
    """``lm_isolated(timeout=SECONDS)``: checked at collection, so a bad value is a usage error
    naming the test, not an error in the middle of the run."""
    if mark.args:
        raise MarkerError(f"{where}: lm_isolated takes timeout=SECONDS as a keyword, got {mark.args!r}")
    extra = set(mark.kwargs) - {"timeout"}
    if extra:
        raise MarkerError(f"{where}: lm_isolated got unknown keyword(s) {sorted(extra)}; takes timeout")
    if "timeout" in mark.kwargs and mark.kwargs["timeout"] is not None:
        import argparse

        from pytest_lmbackend.hardware.units import parse_seconds

        try:
            parse_seconds(str(mark.kwargs["timeout"]), "lm_isolated(timeout=...)")
        except argparse.ArgumentTypeError as exc:
            raise MarkerError(f"{where}: {exc} (0 or None: no limit)") from None


def resolve_source(source: str, base_dirs: Sequence[Path]) -> str:
    """An absolute path for a relative source found under one of ``base_dirs``, else ``source`` as is."""
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    for base in base_dirs:
        candidate = base / path
        if candidate.exists():
            return str(candidate.resolve())
    return source


def _parse_requirement(parser: RequirementParser | None, args: tuple[Any, ...], kwargs: dict[str, Any],
                       where: str) -> Requirement:
    from pytest_lmbackend.requirements import parse_requirement

    try:
        if parser is None:
            return parse_requirement(args, kwargs, where=where)
        return parser(args, kwargs)
    except MarkerError:
        raise
    except (TypeError, ValueError) as exc:
        text = str(exc)
        raise MarkerError(text if where in text else f"{where}: {text}") from exc
