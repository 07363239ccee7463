"""Per-session state of the plugin: options, backends, hardware probed once, detections cached."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lmbackend.backends import Registry, RunnerFacts, facts_from_hardware
from pytest_lmbackend.markers import ItemMarks, ModelBinding
from pytest_lmbackend.selection import ItemOutcome, evaluate_item
from pytest_lmbackend.settings import BackendMode
from pytest_lmbackend.verdict import Verdict

if TYPE_CHECKING:  # imported when first needed: a session that binds no model never loads the rules
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.hardware import Hardware
    from pytest_lmbackend.requirements import Requirement
    from pytest_lmbackend.rules import Detection

SKIP_KIND_PROPERTY = "lm_skip_kind"  # user property on skipped items; travels with xdist reports


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

    def detect(self, model: ModelBinding, release: str | None = None) -> Detection:
        """The model's detection under ``release`` (default: the session's), computed once per pair.

        :raises ConfigError: the model cannot be read (the same error again for every item bound to it).
        """
        release = release or self.release
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
                 gpus: Sequence[int] | None = None) -> ItemOutcome:
        return self.evaluate_on(self.hardware_views()[view], self.facts(view), marks, param=param,
                                backend_bound=backend_bound, gpus=gpus)

    def evaluate_on(self, hardware: Hardware, facts: RunnerFacts, marks: ItemMarks, *, param: str | None,
                    backend_bound: bool, gpus: Sequence[int] | None = None,
                    release: str | None = None) -> ItemOutcome:
        """The same decision for hardware that is not this session's (a runner of a fleet), with
        that runner's LMDeploy release for detection (default: the session's)."""
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
        )


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
