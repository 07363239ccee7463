"""The backend axis: choose each item's backend, decide run, skip or fail."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_lmbackend.backends import Registry, RunnerFacts
from pytest_lmbackend.markers import LMDEPLOY_ENGINES, ItemMarks, ModelBinding
from pytest_lmbackend.settings import BackendMode
from pytest_lmbackend.verdict import Verdict

if TYPE_CHECKING:
    from pytest_lmbackend.requirements import Requirement
    from pytest_lmbackend.rules import Detection

# Fixtures whose use makes an item backend-bound: it runs on a backend (ENGINE_FIXTURES), or needs to
# know which one LMDeploy would pick for its model (lm_detection).
ENGINE_FIXTURES: frozenset[str] = frozenset({"lm_backend", "lm_backend_config", "lm_pipeline"})
BACKEND_FIXTURES: frozenset[str] = ENGINE_FIXTURES | {"lm_detection"}


def check_backend_names(mode: BackendMode, registry: Registry, origin: str = "--lm-backend") -> None:
    """Raise ValueError naming the unknown backends of ``--lm-backend`` (or of ``origin``, the ini key)."""
    unknown = [n for n in mode.names if registry.get(n) is None]
    if unknown:
        raise ValueError(
            f"{origin}: unknown backend(s) {', '.join(unknown)}; known: {', '.join(registry.names)}"
        )


def is_backend_bound(fixturenames: Iterable[str], marks: ItemMarks) -> bool:
    """An item is backend-bound when it asks for it: it uses a backend fixture (``lm_backend``,
    ``lm_pipeline``, ``lm_detection``, ``lm_backend_config``) or carries ``lm_model`` / ``lm_backend``.
    Only those are parametrized; LMDeploy's ``turbomind`` / ``pytorch`` / ``not_*`` marks bind nothing."""
    return marks.backend_marked or marks.model is not None or not BACKEND_FIXTURES.isdisjoint(fixturenames)


def needs_engine(fixturenames: Iterable[str], marks: ItemMarks) -> bool:
    """A bound item runs on its backend (so needs it available, and ``--lm-backend=none`` skips it)
    when it uses an engine fixture or an ``lm_backend`` marker; one bound only by ``lm_model`` /
    ``lm_detection`` reads its model's detection and runs wherever the model reads."""
    return marks.backend_marked or not ENGINE_FIXTURES.isdisjoint(fixturenames)


def parametrize_ids(mode: BackendMode, marks: ItemMarks, registry: Registry) -> tuple[str, ...] | None:
    """The backends to parametrize a backend-bound function over, or None for no parametrization.

    Ids depend only on the option, the markers and the registered backends, never on the hardware, so
    every xdist worker and every runner collects the same node ids: with ``all`` a backend that cannot
    run here is still generated and skips at setup with its reason. ``auto`` and ``none`` add no ids.
    """
    if mode.mode in ("auto", "none"):
        return None
    wanted = registry.names if mode.mode == "all" else mode.names
    permitted = tuple(n for n in wanted if marks.permits(n))
    # Nothing permitted: keep the asked-for names so the items exist and skip with the reason.
    return permitted or tuple(wanted)


@dataclass(frozen=True)
class ItemOutcome:
    """What the plugin decided for one item under one hardware view."""

    backend: str | None
    detection: Detection | None
    verdict: Verdict | None


Detector = Callable[[ModelBinding], "Detection"]
RequirementEvaluator = Callable[["Requirement"], Verdict | None]


def choose_backend(
    mode: BackendMode,
    marks: ItemMarks,
    param: str | None,
    detected: str | None,
    facts: RunnerFacts,
    registry: Registry,
) -> str | None:
    """The backend a backend-bound item runs on; None under ``--lm-backend=none``.

    ``auto``: the backend detection picked for the item's model when the markers permit it; else the
    other LMDeploy engine the markers permit; else the best available of the permitted ones; else the
    first permitted (which then skips with its reason).
    """
    if param is not None:
        return param
    if mode.mode == "none":
        return None
    if mode.mode == "names":
        permitted_names = [n for n in mode.names if marks.permits(n)]
        return (registry.best_available(facts, among=permitted_names) or
                (permitted_names or list(mode.names))[0])
    if detected is not None and marks.permits(detected):
        return detected
    permitted = [n for n in (marks.allowed or registry.names) if marks.permits(n)]
    if detected is not None:
        # LMDeploy picked an engine the markers exclude: in LMDeploy's own suites `not_turbomind` means
        # "on the PyTorch engine", so the other LMDeploy engine answers (and skips where it cannot
        # run), not whichever backend happens to be available
        engines = [n for n in permitted if n in LMDEPLOY_ENGINES]
        if engines:
            return registry.best_available(facts, among=engines) or engines[0]
    return registry.best_available(facts, among=permitted) or (permitted or list(registry.names))[0]


def backend_verdict(
    mode: BackendMode, marks: ItemMarks, backend: str | None, facts: RunnerFacts, registry: Registry
) -> Verdict | None:
    if backend is None:
        return Verdict("backend", "--lm-backend=none: backend-bound tests do not run")
    if not marks.permits(backend):
        return Verdict(
            "backend", f"test is marked for {marks.restriction()}; --lm-backend={mode} gives {backend}"
        )
    known = registry.get(backend)
    if known is None:
        return Verdict("backend", f"backend {backend} is not registered; known: {', '.join(registry.names)}")
    reason = known.unavailable_reason(facts)
    return None if reason is None else Verdict("backend", reason)


def needed_backends_verdict(marks: ItemMarks, suite_backend: str | None, facts: RunnerFacts,
                            registry: Registry) -> Verdict | None:
    """Why an item that is not bound cannot run for want of a backend: the one its own backend parameter
    names is excluded by its ``not_<backend>`` marker, or not available; or an engine its ``turbomind``
    / ``pytorch`` mark names is not available. None when every one it needs is there."""
    if suite_backend is not None and suite_backend in marks.excluded:
        return Verdict("backend", f"its backend parameter is {suite_backend}, which its not_{suite_backend} "
                                  "marker excludes")
    for name in dict.fromkeys((*(() if suite_backend is None else (suite_backend,)), *sorted(marks.engines))):
        known = registry.get(name)
        reason = None if known is None else known.unavailable_reason(facts)
        if reason is not None:
            return Verdict("backend", reason)
    return None


def evaluate_item(
    *,
    mode: BackendMode,
    marks: ItemMarks,
    param: str | None,
    backend_bound: bool,
    facts: RunnerFacts,
    registry: Registry,
    detect: Detector,
    evaluate_requirement: RequirementEvaluator,
    suite_backend: str | None = None,
    engine: bool = True,
) -> ItemOutcome:
    """Decide one item: its backend, its model's detection, and the first reason it cannot run.

    Order: the model must be readable; then the backend must be permitted and available (a bound
    item's, else the one the suite's own backend parameter names, ``suite_backend``, and the engines
    its ``turbomind`` / ``pytorch`` marks name); then every ``lm_requires`` must hold. Detection errors
    are bad input and fail the item. A bound item that runs no engine (``engine`` False: bound by
    ``lm_model`` / ``lm_detection`` only) gets its backend but needs it neither available nor chosen.
    """
    detection: Detection | None = None
    if marks.model is not None and backend_bound and mode.mode == "auto" and param is None:
        from pytest_lmbackend.config import ConfigError

        try:
            detection = detect(marks.model)
        except ConfigError as exc:  # the message names file and field; a bug in rules/ is not caught
            return ItemOutcome(None, None, Verdict("model", f"{marks.model.describe()}: {exc}", True))
    backend: str | None = None
    if backend_bound:
        detected = None if detection is None else detection.backend
        backend = choose_backend(mode, marks, param, detected, facts, registry)
        verdict = backend_verdict(mode, marks, backend, facts, registry) if engine else None
        if verdict is not None:
            return ItemOutcome(backend, detection, verdict)
    else:
        backend = suite_backend
    if not (backend_bound and engine):
        verdict = needed_backends_verdict(marks, None if backend_bound else suite_backend, facts, registry)
        if verdict is not None:
            return ItemOutcome(backend, detection, verdict)
    for requirement in marks.requirements:
        verdict = evaluate_requirement(requirement)
        if verdict is not None:
            return ItemOutcome(backend, detection, verdict)
    return ItemOutcome(backend, detection, None)


def group_by_engine(keys: Sequence[Hashable | None]) -> list[int]:
    """A stable order that brings together the items sharing an engine (``key``; None = no engine).

    Each group moves to where its first member stood; every other item keeps its place relative to
    the rest. Starting an LMDeploy engine costs about a minute, so interleaved models would otherwise
    rebuild one engine per test when only a few stay alive. Deterministic, so every xdist worker
    collects the same order.
    """
    first: dict[Hashable, int] = {}
    anchors: list[int] = []
    for index, key in enumerate(keys):
        anchors.append(index if key is None else first.setdefault(key, index))
    return sorted(range(len(keys)), key=lambda index: (anchors[index], index))
