"""Fleet mode's pytest hooks: options, the runner check, selection by runner, orphans, the plan, durations.

The hooks live on ``FleetPlugin``, registered only when a fleet is configured (``--lm-fleet`` or the
ini key ``lm_fleet``); the decisions are ``assignment``'s and ``check``'s pure functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_lmbackend import settings
from pytest_lmbackend.display import printable

if TYPE_CHECKING:
    from pytest_lmbackend.backends import RunnerFacts
    from pytest_lmbackend.fleet.assignment import Assignment, ItemVerdicts, Runner
    from pytest_lmbackend.markers import ItemMarks
    from pytest_lmbackend.selection import ItemOutcome
    from pytest_lmbackend.session import LmSession

ENV_RUNNER = settings.ENV_RUNNER
ORPHAN_KEY: pytest.StashKey[str] = pytest.StashKey()  # an orphan's reason, on the last runner's items


def parse_fleet_option(text: str) -> tuple[str, ...]:
    """argparse ``type=`` for ``--lm-fleet`` (see ``assignment.parse_fleet``)."""
    from pytest_lmbackend.fleet.assignment import parse_fleet

    return parse_fleet(text)


def parse_runner_option(text: str) -> str:
    """argparse ``type=`` for ``--lm-runner``: one runner's name."""
    name = text.strip()
    if not name or "," in name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected the name of one runner of the fleet")
    return name


def parse_path_option(text: str) -> str:
    """argparse ``type=`` for ``--lm-plan-json``: a file name."""
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("expected a file name")
    return name


@dataclass(frozen=True)
class FleetSettings:
    """Fleet mode's options as read: the fleet, this job's runner, where the plan's JSON goes."""

    specs: tuple[str, ...]
    origin: str
    base_dir: Path | None
    runner: str | None
    runner_origin: str
    plan_json: Path | None


def read_settings(config: pytest.Config) -> FleetSettings | None:
    """The fleet options, None when no fleet is configured (``--lm-runner`` or ``--lm-plan-json``
    without one is a usage error)."""
    specs = settings.value(config, settings.FLEET)
    origin = settings.origin(config, settings.FLEET)
    base_dir = None
    if origin.startswith("ini"):  # files named in the ini file are relative to it
        base_dir = config.inipath.parent if config.inipath is not None else config.rootpath
    runner, runner_origin = settings.value(config, settings.RUNNER), settings.origin(config, settings.RUNNER)
    plan_json = settings.value(config, settings.PLAN_JSON)
    plan_json_origin = settings.origin(config, settings.PLAN_JSON)
    if specs is None:
        for value, name in ((runner, runner_origin), (plan_json, plan_json_origin)):
            if value:
                raise pytest.UsageError(f"{name}={value}: no fleet is configured; give --lm-fleet="
                                        "PROFILE,PROFILE,... (cheapest first) or the ini key lm_fleet")
        return None
    path = Path(config.invocation_params.dir, plan_json) if plan_json else None
    return FleetSettings(tuple(specs), origin, base_dir, runner, runner_origin, path)


def configure(config: pytest.Config, state: LmSession) -> None:
    """Register ``FleetPlugin`` when a fleet is configured; check the runner this job claims to be."""
    settings = read_settings(config)
    if settings is None:
        return
    from pytest_lmbackend.fleet.assignment import FleetError, find_runner, load_fleet

    plan = bool(state.options.plan or settings.plan_json)
    if plan and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--lm-plan-json runs nothing, so it takes no -n: drop -n/--numprocesses")
    if plan and len(state.options.hardware) > 1:
        raise pytest.UsageError(f"{state.options.hardware_origin}={','.join(state.options.hardware)}: with a "
                                f"fleet ({settings.origin}) the plan's columns are its runners; drop the "
                                "several profiles")
    try:
        runners = load_fleet(settings.specs, origin=settings.origin, base_dir=settings.base_dir)
        index = (None if settings.runner is None
                 else find_runner(runners, settings.runner, origin=settings.runner_origin))
    except FleetError as exc:
        raise pytest.UsageError(printable(exc)) from None
    plugin = FleetPlugin(config, state, runners, index, settings, plan=plan)
    if index is not None and not plan and not hasattr(config, "workerinput"):
        plugin.check_runner()  # once, where the job starts; xdist workers hold a slice of it
    config.pluginmanager.register(plugin, "lmbackend-fleet")


_DECIDING: dict[type, tuple[str, ...]] = {}  # per class: the fields a decision reads
_NOT_DECIDING = ("engine_options", "where", "requirements")  # requirements are keyed one by one


def _deciding(value: Any) -> tuple[Any, ...]:
    """A frozen value's fields but those that only describe it (engine options, the test's name)."""
    names = _DECIDING.get(type(value))
    if names is None:
        names = _DECIDING[type(value)] = tuple(f.name for f in dataclasses.fields(value)
                                               if f.name not in _NOT_DECIDING)
    return tuple(getattr(value, name) for name in names)


def _decision_key(marks: ItemMarks, param: str | None, bound: Hashable) -> Hashable | None:
    """Everything of an item the plugin's decision reads (its markers but their engine options, its
    requirements but the test they name, its backend parameter, whether it is bound): items alike in
    these are decided once. None when a part cannot be hashed (a model given as a mapping)."""
    requirements = tuple(_deciding(r) if dataclasses.is_dataclass(r) else r for r in marks.requirements)
    key = (_deciding(marks), requirements, param, bound)
    try:
        hash(key)
    except TypeError:
        return None
    return key


class FleetPlugin:
    """The hooks of fleet mode for one session."""

    def __init__(self, config: pytest.Config, state: LmSession, runners: Sequence[Runner], index: int | None,
                 settings: FleetSettings, *, plan: bool) -> None:
        self.config = config
        self.state = state
        self.runners = tuple(runners)
        self.index = index
        self.settings = settings
        self.plan = plan
        self.shares: dict[str, int] | None = None  # tests per runner, once assigned (or from a worker)
        self.orphans: list[str] = []
        self._facts: list[RunnerFacts] | None = None
        self._releases: list[str] | None = None
        self._decided: dict[Hashable, tuple[ItemOutcome, ...]] = {}  # one decision per kind of item
        self._phases: dict[str, float] = {}
        self._ran: set[str] = set()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.runners)

    @property
    def runner(self) -> Runner | None:
        return None if self.index is None else self.runners[self.index]

    # -- the runner check ---------------------------------------------------------------------------
    def check_runner(self) -> None:
        """A usage error naming what is missing when this machine is less than its runner's profile."""
        from pytest_lmbackend.backends import BackendCheckError
        from pytest_lmbackend.fleet.check import missing
        from pytest_lmbackend.session import SetupError

        runner = self.runner
        assert runner is not None
        try:
            actual = self.state.hardware
            availability = self.state.registry.availability(self.state.facts())
        except (SetupError, BackendCheckError) as exc:
            raise pytest.UsageError(printable(exc)) from None
        problems = missing(runner.hardware, actual, [n for n, why in availability.items() if why is None])
        if problems:
            where = (f"profile {actual.profile!r}, faked" if actual.source == "profile"
                     else f"read through {actual.source}")
            raise pytest.UsageError(
                f"{self.settings.runner_origin}={runner.name}: this machine is not what runner "
                f"{runner.name!r} of the fleet claims ({runner.spec}); its hardware ({where}) lacks:\n  "
                + "\n  ".join(problems))

    # -- assignment ---------------------------------------------------------------------------------
    @property
    def facts(self) -> list[RunnerFacts]:
        """Each runner's facts as backend checks read them, from its profile alone."""
        if self._facts is None:
            from pytest_lmbackend.backends import facts_from_hardware

            self._facts = [facts_from_hardware(r.hardware) for r in self.runners]
        return self._facts

    @property
    def releases(self) -> list[str]:
        """Each runner's LMDeploy release (``assignment.runner_release``); read only for tests bound to
        a model, so the rules are not loaded otherwise."""
        if self._releases is None:
            from pytest_lmbackend.fleet.assignment import runner_release
            from pytest_lmbackend.rules import UnknownReleaseError

            try:
                chosen = self.state.options.lmdeploy
                self._releases = [runner_release(r.hardware, chosen) for r in self.runners]
            except UnknownReleaseError as exc:
                raise pytest.UsageError(f"{self.settings.origin}: {exc}") from None
        return self._releases

    def judge(self, item: pytest.Item) -> tuple[ItemVerdicts, tuple[ItemOutcome, ...]]:
        """The plugin's decision for ``item`` on every runner, by the evaluation the run uses."""
        from pytest_lmbackend.fleet.assignment import ItemVerdicts
        from pytest_lmbackend.session import BOUND_KEY, ENGINE_KEY, MARKS_KEY, PARAM_KEY, SUITE_BACKEND_KEY
        from pytest_lmbackend.skipping import pytest_skip

        skipped = pytest_skip(item)
        marks = item.stash.get(MARKS_KEY, None)
        if marks is None:  # not a test function the plugin reads: nothing to ask of a runner
            outcomes = self._anything
        else:
            param, bound = item.stash[PARAM_KEY], item.stash[BOUND_KEY]
            engine, suite = item.stash[ENGINE_KEY], item.stash[SUITE_BACKEND_KEY]
            key = _decision_key(marks, param, (bound, engine, suite))
            cached = self._decided.get(key) if key is not None else None
            if cached is None:
                # the release matters only where a model is detected; None keeps the rules unloaded
                releases = self.releases if marks.model is not None else [None] * len(self.runners)
                cached = tuple(self.state.evaluate_on(r.hardware, f, marks, param=param, backend_bound=bound,
                                                      release=release, engine=engine, suite_backend=suite)
                               for r, f, release in zip(self.runners, self.facts, releases, strict=True))
                if key is not None:
                    self._decided[key] = cached
            outcomes = cached
        verdicts = ItemVerdicts(item.nodeid, tuple(o.verdict for o in outcomes), skipped)
        return verdicts, outcomes

    @property
    def _anything(self) -> tuple[ItemOutcome, ...]:
        from pytest_lmbackend.selection import ItemOutcome

        return tuple(ItemOutcome(None, None, None) for _ in self.runners)

    def assign(self, items: Sequence[pytest.Item]) -> tuple[Assignment, list[tuple[ItemVerdicts,
                                                                                  tuple[ItemOutcome, ...]]]]:
        """The assignment of ``items``, and what it was made from (per item: verdicts and outcomes)."""
        from pytest_lmbackend.backends import BackendCheckError
        from pytest_lmbackend.fleet.assignment import assign
        from pytest_lmbackend.session import SetupError

        try:
            judged = [self.judge(item) for item in items]
        except (SetupError, BackendCheckError) as exc:
            raise pytest.UsageError(printable(exc)) from None
        return assign((j for j, _ in judged), self.names), judged

    @pytest.hookimpl(trylast=True)  # after -m / -k and the plugin's own reading of markers
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.plan or self.index is None:
            return
        assignment, _ = self.assign(items)
        mine = set(assignment.indices(self.index))
        keep = [item for n, item in enumerate(items) if n in mine]
        drop = [item for n, item in enumerate(items) if n not in mine]
        for n in mine:
            if assignment.placements[n].orphan:
                items[n].stash[ORPHAN_KEY] = assignment.reason(n) or "can run on no runner of the fleet"
        self.shares = {name: len(assignment.runner_tests(n)) for n, name in enumerate(self.names)}
        self.orphans = assignment.orphans
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        reason = item.stash.get(ORPHAN_KEY, None)
        if reason is None:
            return
        from pytest_lmbackend.fleet.assignment import FLEET_KIND
        from pytest_lmbackend.session import SKIP_KIND_PROPERTY

        if FLEET_KIND in self.state.options.require:
            pytest.fail(f"{reason} (--lm-require={FLEET_KIND})", pytrace=False)
        item.user_properties.append((SKIP_KIND_PROPERTY, FLEET_KIND))
        pytest.skip(reason)

    # -- the plan -----------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if not self.plan:
            return None
        from pytest_lmbackend.fleet.assignment import estimate
        from pytest_lmbackend.plan import PlanRow, fleet_lines, format_plan

        items = list(session.items)
        assignment, judged = self.assign(items)
        rows = []
        for item, placement, (verdicts, cells) in zip(items, assignment.placements, judged, strict=True):
            skipped = verdicts.pytest_skip  # pytest's own marks show in every column, as in a plain plan
            shown = tuple(skipped.outcome() for _ in cells) if skipped else cells
            runner = self.names[placement.runner] + (" (orphan)" if placement.orphan else "")
            rows.append(PlanRow(item.nodeid, shown, runner))
        rules = ", ".join(dict.fromkeys(self.releases))
        lines = [f"lm-plan: {len(items)} tests, --lm-backend={self.state.options.backend}, LMDeploy rules "
                 f"{rules}; fleet (cheapest first): {', '.join(self.names)}; nothing was run", "",
                 *format_plan(rows, self.names, require=self.state.options.require), "",
                 *fleet_lines(assignment, estimate(assignment, self._recorded()))]
        if self.settings.plan_json is not None:
            self._write_json(assignment)
            lines.append(f"lm-plan: the assignment is in {self.settings.plan_json}")
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.section("lm-plan", sep="=")
            for line in lines:
                reporter.write_line(line)
        # tests no runner can run make the plan fail, as they would otherwise stay green forever
        session.testsfailed += len(assignment.orphans)
        return True

    def _write_json(self, assignment: Assignment) -> None:
        path = self.settings.plan_json
        assert path is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(assignment.to_json(), indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            message = f"--lm-plan-json={path}: cannot write it: {exc.strerror or exc}"
            raise pytest.UsageError(message) from None

    # -- durations ----------------------------------------------------------------------------------
    def _recorded(self) -> dict[str, dict[str, float]]:
        """Durations this plugin recorded in the pytest cache: ``""`` for runs outside the fleet, else
        per runner."""
        from pytest_lmbackend.fleet.assignment import cache_key

        cache = getattr(self.config, "cache", None)
        if cache is None:
            return {}
        found: dict[str, dict[str, float]] = {}
        for source, key in (("", cache_key(None)), *((n, cache_key(n)) for n in self.names)):
            value = cache.get(key, None)
            if isinstance(value, dict):
                found[source] = value
        return found

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if hasattr(self.config, "workerinput") or self.plan:
            return  # under xdist the controller records what its workers report
        self._phases[report.nodeid] = self._phases.get(report.nodeid, 0.0) + report.duration
        if report.when == "call":
            self._ran.add(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["lm_fleet"] = {"shares": self.shares, "orphans": self.orphans}
            return
        cache = getattr(self.config, "cache", None)
        if cache is None or not self._ran:
            return
        from pytest_lmbackend.fleet.assignment import cache_key

        key = cache_key(None if self.runner is None else self.runner.name)
        known = cache.get(key, None)
        durations = dict(known) if isinstance(known, dict) else {}
        durations.update({n: round(self._phases[n], 6) for n in self._ran})  # only tests that ran
        cache.set(key, durations)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}).get("lm_fleet")
        if self.shares is None and isinstance(output, dict) and output.get("shares") is not None:
            self.shares = dict(output["shares"])
            self.orphans = list(output.get("orphans") or [])

    # -- text ---------------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        runner = self.runner
        doing = ("planning" if self.plan else "no --lm-runner: this job runs every test" if runner is None
                 else f"this job is runner {runner.name!r} ({self.settings.runner_origin})")
        fleet = ", ".join(self.names)
        lines = [f"lmbackend: fleet (cheapest first, {self.settings.origin}): {fleet}; {doing}"]
        if self.plan:  # the plan's columns: every runner in brief
            from pytest_lmbackend.backends import BackendCheckError
            from pytest_lmbackend.plan import profile_lines

            for runner, fact, release in zip(self.runners, self.facts, self.releases, strict=True):
                try:
                    availability = self.state.registry.availability(fact)
                except BackendCheckError as exc:
                    return [*lines, f"lmbackend: ERROR: {exc}"]
                described = profile_lines(runner.hardware, availability)
                described[0] += f"; LMDeploy rules {release}"
                lines += [f"lmbackend:   {line}" for line in described]
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        runner = self.runner
        if runner is None or self.plan or self.shares is None:
            return
        from pytest_lmbackend.plan import runner_summary_lines

        terminalreporter.section("lmbackend fleet", sep="-")
        for line in runner_summary_lines(runner.name, self.names, self.shares, self.orphans):
            terminalreporter.write_line(line)
