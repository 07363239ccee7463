"""Per-session state of the plugin: options, backends, hardware probed once, detections cached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lmbackend.backends import Registry, RunnerFacts, facts_from_hardware
from pytest_lmbackend.display import printable
from pytest_lmbackend.markers import ItemMarks, ModelBinding
from pytest_lmbackend.selection import ItemOutcome, evaluate_item
from pytest_lmbackend.settings import BackendMode
from pytest_lmbackend.verdict import SKIP_KIND_PROPERTY, Verdict

if TYPE_CHECKING:  # imported when first needed: a session that binds no model never loads the rules
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.hardware import Hardware
    from pytest_lmbackend.requirements import Requirement
    from pytest_lmbackend.rules import Detection

__all__ = ["SKIP_KIND_PROPERTY"]  # here too for the plugins that set it beside the session's keys


class SetupError(Exception):
    """Options or profiles that cannot be used; the plugin turns it into a usage error."""


@dataclass(frozen=True)
class Options:
    """The plugin's resolved command-line and ini options."""

    backend: BackendMode
    backend_origin: str = "--lm-backend"  # where the value came from, for messages
    lmdeploy: str | None = None
    hardware: tuple[str, ...] = ()
    hardware_origin: str = "--lm-hardware"
    plan: bool = False
    require: frozenset[str] = frozenset()
    strict_fallback: bool = True
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    pipeline_cache: int = 1
    group_by_engine: str = "parent"


@dataclass
class LmSession:
    """Everything the hooks and fixtures share in one pytest process; hardware is read lazily, once."""

    options: Options
    registry: Registry
    _hardware: list[Hardware] | None = None
    _facts: list[RunnerFacts] | None = None
    _release: str | None = None
    _view_releases: dict[int, str] = field(default_factory=dict)
    _detections: dict[tuple[str, str], Detection | ConfigError] = field(default_factory=dict)

    # -- hardware -------------------------------------------------------------------------------
    def hardware_views(self) -> list[Hardware]:
        """One Hardware per ``--lm-hardware`` profile, else the probe's single answer."""
        if self._hardware is None:
            self._hardware = load_hardware(self.options.hardware, several=self.options.plan,
                                           origin=self.options.hardware_origin)
            self._facts = [facts_from_hardware(hw) for hw in self._hardware]
        return self._hardware

    @property
    def hardware(self) -> Hardware:
        return self.hardware_views()[0]

    def facts(self, index: int = 0) -> RunnerFacts:
        self.hardware_views()
        assert self._facts is not None
        return self._facts[index]

    # -- detection ------------------------------------------------------------------------------
    @property
    def release(self) -> str:
        if self._release is None:
            from pytest_lmbackend.rules import UnknownReleaseError, resolve_release

            try:
                self._release = str(resolve_release(self.options.lmdeploy))
            except UnknownReleaseError as exc:
                raise SetupError(f"--lm-lmdeploy={self.options.lmdeploy}: {exc}") from exc
        return self._release

    def release_for(self, view: int = 0) -> str:
        """The release whose rules decide on hardware ``view``: ``--lm-lmdeploy`` when given; on a
        fake profile the LMDeploy it states (``h100x8+lmdeploy=0.14.0``), else the newest known, as
        for a runner of a fleet; on the probed machine the installed release, else the newest."""
        if self.options.lmdeploy or not self.options.hardware:
            return self.release
        if view not in self._view_releases:  # asked per item and view: resolved once
            hardware = self.hardware_views()[view]
            # a profile without [packages] borrows this interpreter's: the installed release decides
            self._view_releases[view] = (self._stated_release(hardware) if hardware.packages_stated
                                         else self.release)
        return self._view_releases[view]

    def _stated_release(self, hardware: Hardware) -> str:
        from pytest_lmbackend.rules import UnknownReleaseError
        from pytest_lmbackend.rules.releases import stated_release

        try:
            return stated_release(None, hardware.packages.get("lmdeploy"))
        except UnknownReleaseError as exc:
            raise SetupError(f"{self.options.hardware_origin}: profile {hardware.name}: {exc}") from exc

    def detect(self, model: ModelBinding, release: str | None = None) -> Detection:
        """The model's detection under ``release`` (default: the one that decides on this session's
        hardware, ``release_for(0)``), computed once per pair.

        :raises ConfigError: the model cannot be read (the same error again for every item bound to it).
        """
        release = release or self.release_for(0)
        key = (model.key, release)
        if key not in self._detections:
            from pytest_lmbackend.config import ConfigError
            from pytest_lmbackend.rules import detect

            try:
                self._detections[key] = detect(model.source, lmdeploy=release)
            except ConfigError as exc:  # bad input, named by file and field; a bug in rules/ is not
                self._detections[key] = exc
        found = self._detections[key]
        if isinstance(found, Exception):
            raise found
        return found

    # -- decisions ------------------------------------------------------------------------------
    def evaluate(self, marks: ItemMarks, *, param: str | None, backend_bound: bool, view: int = 0,
                 gpus: Sequence[int] | None = None, suite_backend: str | None = None,
                 engine: bool = True) -> ItemOutcome:
        if not backend_bound and not marks.requirements and not marks.engines and suite_backend is None:
            return ItemOutcome(None, None, None)  # nothing to judge: the hardware is not read for it
        return self.evaluate_on(self.hardware_views()[view], self.facts(view), marks, param=param,
                                backend_bound=backend_bound, gpus=gpus, suite_backend=suite_backend,
                                engine=engine, release=self.release_for(view))

    def forget_hardware(self) -> None:
        """Read the hardware again when next needed: this process's ``CUDA_VISIBLE_DEVICES`` changed (an
        xdist worker pinned itself after collection)."""
        self._hardware = None
        self._facts = None
        self._view_releases.clear()

    @property
    def probed(self) -> bool:
        """Whether the hardware has been read (probed, or the profiles loaded) in this session."""
        return self._hardware is not None

    def evaluate_on(self, hardware: Hardware, facts: RunnerFacts, marks: ItemMarks, *, param: str | None,
                    backend_bound: bool, gpus: Sequence[int] | None = None,
                    release: str | None = None, suite_backend: str | None = None,
                    engine: bool = True) -> ItemOutcome:
        """The same decision for hardware that is not this session's (a runner of a fleet), with
        that runner's LMDeploy release for detection (default: the session's).

        :param suite_backend: the backend the suite's own parameter (``lm_backend_param``) gives the
            item (``SUITE_BACKEND_KEY``): then the outcome's backend, which must be available.
        :param engine: a bound item runs on its backend (``ENGINE_KEY``; ``selection.needs_engine``).
        """
        from pytest_lmbackend.requirements import evaluate

        def requirement(req: Requirement) -> Verdict | None:
            return evaluate(req, hardware, gpus)

        return evaluate_item(
            mode=self.options.backend,
            marks=marks,
            param=param,
            backend_bound=backend_bound,
            facts=facts,
            registry=self.registry,
            detect=self.detect if release is None else (lambda model: self.detect(model, release)),
            evaluate_requirement=requirement,
            suite_backend=suite_backend,
            engine=engine,
        )


def session_state(config: pytest.Config) -> LmSession:
    """The session's state, made on first use: at configure when the session states a setting (so a bad
    option or profile is a usage error at once), else when a test first asks for the plugin.

    :raises pytest.UsageError: options, backends or profiles that cannot be used.
    """
    state = config.stash.get(SESSION_KEY, None)
    if state is None:
        state = config.stash[SESSION_KEY] = _make_state(config)
    return state


def _make_state(config: pytest.Config) -> LmSession:
    from pytest_lmbackend.backends import build_registry
    from pytest_lmbackend.selection import check_backend_names

    try:
        options = _options(config)
        extra: list[Any] = config.hook.pytest_lmbackend_register_backends(config=config)
        registry = build_registry(extra)
        check_backend_names(options.backend, registry, options.backend_origin)
    except ValueError as exc:
        raise pytest.UsageError(printable(exc)) from exc
    state = LmSession(options=options, registry=registry)
    try:
        if options.hardware:  # a bad profile is a usage error now, not a failure in every test
            for n, hw in enumerate(state.hardware_views()):
                _check_stated_backends(hw, registry.names, options.hardware_origin)
                state.release_for(n)  # an LMDeploy it states is one the rules know
        if options.lmdeploy is not None:
            _ = state.release
    except SetupError as exc:
        raise pytest.UsageError(printable(exc)) from exc
    return state


def _options(config: pytest.Config) -> Options:
    from pytest_lmbackend import settings as s

    backend = s.value(config, s.BACKEND)
    hardware = s.value(config, s.HARDWARE)
    plan = s.value(config, s.PLAN)
    if plan and getattr(config.option, "numprocesses", None):
        raise ValueError("--lm-plan runs nothing, so it takes no -n: drop -n/--numprocesses")
    if len(hardware) > 1 and not plan:
        raise ValueError(f"{s.origin(config, s.HARDWARE)}={','.join(hardware)}: several profiles are for "
                         "--lm-plan only")
    strict = s.value(config, s.STRICT_FALLBACK)
    return Options(
        backend=backend,
        backend_origin=s.origin(config, s.BACKEND),
        lmdeploy=s.value(config, s.LMDEPLOY),
        hardware=hardware,
        hardware_origin=s.origin(config, s.HARDWARE),
        plan=plan,
        require=s.value(config, s.REQUIRE),
        strict_fallback=backend.mode == "auto" if strict is None else strict,
        engine_options=s.value(config, s.ENGINE_OPTIONS),
        pipeline_cache=s.value(config, s.PIPELINE_CACHE),
        group_by_engine=s.value(config, s.GROUP_BY_ENGINE),
    )


def _check_stated_backends(hardware: Hardware, names: tuple[str, ...], origin: str) -> None:
    """A profile's ``backends`` must name registered backends: a typo would silently make every
    test of that backend skip as unavailable."""
    unknown = [b for b in (hardware.backends or ()) if b not in names]
    if unknown:
        raise SetupError(f"{origin}: hardware profile {hardware.profile!r}: field 'backends': "
                         f"{', '.join(map(repr, unknown))} is not a registered backend "
                         f"(registered: {', '.join(names)})")


def load_hardware(specs: Sequence[str], *, several: bool = False,
                  origin: str = "--lm-hardware") -> list[Hardware]:
    """The profiles named (by ``origin``: the option, ``$PYTEST_LM_HARDWARE`` or the ini key), or
    one real probe when none is.

    Several profiles are for ``--lm-plan`` only (``several=True``); a session runs on one.
    """
    from pytest_lmbackend import hardware as hw

    spec = ",".join(s.strip() for s in specs if s.strip()) or None
    try:
        if several:
            return list(hw.probe_many(profile=spec))
        return [hw.probe(profile=spec)]
    except (ValueError, OSError) as exc:  # ProfileError is a ValueError naming profile and field
        raise SetupError(f"{origin}: {exc}") from exc


SESSION_KEY: pytest.StashKey[LmSession] = pytest.StashKey()
MARKS_KEY: pytest.StashKey[ItemMarks] = pytest.StashKey()
BOUND_KEY: pytest.StashKey[bool] = pytest.StashKey()
PARAM_KEY: pytest.StashKey[str | None] = pytest.StashKey()
OUTCOME_KEY: pytest.StashKey[ItemOutcome] = pytest.StashKey()
# whether a bound item runs on its backend (an engine fixture or lm_backend marker), not only reads its
# model's detection (selection.needs_engine)
ENGINE_KEY: pytest.StashKey[bool] = pytest.StashKey()
# the registered backend the suite's own parameter (ini lm_backend_param) names for the item
SUITE_BACKEND_KEY: pytest.StashKey[str | None] = pytest.StashKey()
