"""Which runner of a fleet takes each test, what the plan's JSON says, and what each runner costs; pure."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_lmbackend.hardware import Hardware
    from pytest_lmbackend.skipping import PytestSkip
    from pytest_lmbackend.verdict import Verdict

FLEET_KIND = "fleet"  # the skip kind of an orphan; --lm-require=fleet makes orphans fail
DURATIONS_KEY = "lmbackend/durations"  # pytest cache key; a runner's own under DURATIONS_KEY/NAME


class FleetError(ValueError):
    """A fleet that cannot be used (a bad profile, two runners of one name, an unknown runner)."""


@dataclass(frozen=True)
class Runner:
    """One runner of the fleet: its name (the profile's), the profile as given, and what it claims."""

    name: str
    spec: str
    hardware: Hardware


def parse_fleet(text: str) -> tuple[str, ...]:
    """argparse ``type=`` for ``--lm-fleet`` (and the ini key): profiles or files, separated by commas
    or line breaks, cheapest first."""
    specs = tuple(s.strip() for s in re.split(r"[,\n]", text) if s.strip())
    if not specs:
        raise argparse.ArgumentTypeError(f"{text!r}: expected profile names or files, cheapest first, "
                                         "separated by commas")
    return specs


def load_fleet(specs: Sequence[str], *, origin: str, base_dir: Path | None = None) -> tuple[Runner, ...]:
    """The runners ``specs`` name, in order.

    A profile's ``[packages]`` is all a runner has: one that states none has none, so that every
    runner computes the same assignment whatever is installed where it runs.

    :param base_dir: where relative profile files are looked up first (the ini file's folder).
    :raises FleetError: a bad profile, or two runners with one name; the message names ``origin``.
    """
    from pytest_lmbackend.hardware import load_profile

    runners: list[Runner] = []
    for spec in specs:
        given = spec
        if base_dir is not None and _is_relative_file(spec) and (base_dir / spec).is_file():
            given = str(base_dir / spec)
        try:
            hardware = load_profile(given, local_packages={})
        except ValueError as exc:  # ProfileError names the file and the field
            raise FleetError(f"{origin}: {exc}") from None
        runners.append(Runner(hardware.name, spec, dataclasses.replace(hardware, packages_stated=True)))
    names = [r.name for r in runners]
    for runner in runners:
        if names.count(runner.name) > 1:
            twins = ", ".join(r.spec for r in runners if r.name == runner.name)
            raise FleetError(f"{origin}: {names.count(runner.name)} runners are named {runner.name!r} "
                             f"({twins}); give each profile its own name")
    return tuple(runners)


def _is_relative_file(spec: str) -> bool:
    return spec.endswith((".toml", ".json")) or "/" in spec or "\\" in spec


def find_runner(runners: Sequence[Runner], name: str, *, origin: str) -> int:
    """The index of the runner called ``name`` (or given as ``name``); FleetError listing the fleet."""
    for index, runner in enumerate(runners):
        if name in (runner.name, runner.spec):
            return index
    raise FleetError(f"{origin}={name}: no such runner in the fleet; its runners: "
                     f"{', '.join(r.name for r in runners)}")


def runner_release(hardware: Hardware, chosen: str | None) -> str:
    """The LMDeploy release whose rules decide for a runner: ``--lm-lmdeploy`` when given, else the
    LMDeploy its profile states, else the newest known; never what this machine has installed."""
    from pytest_lmbackend.rules.releases import stated_release

    return stated_release(chosen, hardware.packages.get("lmdeploy"))


@dataclass(frozen=True)
class ItemVerdicts:
    """One test as the fleet judges it: the plugin's verdict on each runner (None: runs there), and
    what pytest's own marks say."""

    nodeid: str
    verdicts: tuple[Verdict | None, ...]
    pytest_skip: PytestSkip | None = None


@dataclass(frozen=True)
class Placement:
    """Where one test goes: the runner's index and whether no runner can run it; ``note`` is why it is
    on the first runner whatever its requirements (pytest skips it, its input is bad), ``passed`` the
    verdicts of the cheaper runners it passed over (every runner's, for an orphan)."""

    runner: int
    orphan: bool = False
    note: str | None = None
    passed: tuple[Verdict | None, ...] = ()

    def reason(self, names: Sequence[str]) -> str | None:
        """Why the test is where it is, naming the runners it passed over; None when it plainly runs
        on the first. Built on demand: a runner's job needs the text of its orphans only."""
        if self.note is not None:
            return self.note
        if self.orphan:
            return f"can run on no runner of the fleet: {_passed_over(names, self.passed)}"
        return _passed_over(names[:len(self.passed)], self.passed) or None


def _passed_over(names: Sequence[str], verdicts: Sequence[Verdict | None]) -> str:
    by_reason: dict[str, list[str]] = {}
    for name, verdict in zip(names, verdicts, strict=True):
        if verdict is not None:
            by_reason.setdefault(verdict.reason, []).append(name)
    return "; ".join(f"{', '.join(who)}: {reason}" for reason, who in by_reason.items())


def place(item: ItemVerdicts, runners: int) -> Placement:
    """The assignment rule over ``runners`` runners: the first runner whose verdict is None takes the
    test. A test pytest skips whatever the machine, and a test whose input is bad (it fails anywhere),
    go to the first runner; a test no runner can run is an orphan of the last. A skip decided by a
    condition (``skipif``) is the runner's to evaluate: such a test goes where its requirements say."""
    if len(item.verdicts) != runners:
        raise ValueError(f"{item.nodeid}: {len(item.verdicts)} verdicts for {runners} runners")
    skipped = item.pytest_skip
    if skipped is not None and not skipped.local:
        return Placement(0, note=skipped.reason)
    bad = next((v for v in item.verdicts if v is not None and v.error), None)
    if bad is not None:
        return Placement(0, note=bad.reason)
    for index, verdict in enumerate(item.verdicts):
        if verdict is None:
            return Placement(index, passed=item.verdicts[:index])
    return Placement(runners - 1, orphan=True, passed=item.verdicts)


@dataclass(frozen=True)
class Assignment:
    """Every test of the session and its placement, in collection order."""

    fleet: tuple[str, ...]
    nodeids: tuple[str, ...]
    placements: tuple[Placement, ...]

    def indices(self, runner: int) -> list[int]:
        """Where the tests ``runner`` runs stand in the session (its orphans included, for the last
        one); a job for that runner deselects every other test."""
        return [n for n, p in enumerate(self.placements) if p.runner == runner]

    def runner_tests(self, runner: int) -> list[str]:
        """The node ids of the tests ``runner`` runs, in collection order."""
        return [self.nodeids[n] for n in self.indices(runner)]

    @property
    def orphans(self) -> list[str]:
        return [n for n, p in zip(self.nodeids, self.placements, strict=True) if p.orphan]

    def reason(self, index: int) -> str | None:
        """Why the test at ``index`` is where it is (see ``Placement.reason``)."""
        return self.placements[index].reason(self.fleet)

    def reasons(self) -> dict[str, str]:
        """node id -> why it is where it is, for every test not plainly run by the first runner."""
        found = ((n, self.reason(i)) for i, n in enumerate(self.nodeids))
        return {nodeid: reason for nodeid, reason in found if reason}

    def to_json(self) -> dict[str, Any]:
        """``{"fleet": [names], "runners": {name: [node ids]}, "orphans": [node ids],
        "reasons": {node id: text}}``, for a CI matrix (a job per runner that has work)."""
        return {
            "fleet": list(self.fleet),
            "runners": {name: self.runner_tests(n) for n, name in enumerate(self.fleet)},
            "orphans": self.orphans,
            "reasons": self.reasons(),
        }


def assign(items: Iterable[ItemVerdicts], names: Sequence[str]) -> Assignment:
    """Place every test (see ``place``)."""
    listed = list(items)
    placements = tuple(place(i, len(names)) for i in listed)
    return Assignment(tuple(names), tuple(i.nodeid for i in listed), placements)


@dataclass(frozen=True)
class RunnerCost:
    """What one runner's share is estimated to take, from the durations last recorded."""

    name: str
    tests: int
    orphans: int
    timed: int
    seconds: float


def estimate(assignment: Assignment, durations: Mapping[str, Mapping[str, float]]) -> list[RunnerCost]:
    """Each runner's tests, and the seconds they took when last run.

    :param durations: where they were recorded (a runner's name, or ``""`` for a run outside the
        fleet) -> node id -> seconds; a test's own runner's record is preferred, then any other.
    """
    costs = []
    for index, name in enumerate(assignment.fleet):
        nodeids = assignment.runner_tests(index)
        seconds, timed = 0.0, 0
        for nodeid in nodeids:
            found = _duration(nodeid, name, durations)
            if found is not None:
                seconds, timed = seconds + found, timed + 1
        orphans = sum(1 for n, p in zip(assignment.nodeids, assignment.placements, strict=True)
                      if p.orphan and p.runner == index)
        costs.append(RunnerCost(name, len(nodeids) - orphans, orphans, timed, seconds))
    return costs


def _duration(nodeid: str, runner: str, durations: Mapping[str, Mapping[str, float]]) -> float | None:
    for source in (runner, "", *durations):
        found = durations.get(source, {}).get(nodeid)
        if isinstance(found, (int, float)) and not isinstance(found, bool) and found >= 0:
            return float(found)
    return None


def cache_key(runner: str | None) -> str:
    """The pytest cache key a run records its durations under: the runner's own, else the general one."""
    if runner is None:
        return DURATIONS_KEY
    return f"{DURATIONS_KEY}/{re.sub(r'[^A-Za-z0-9_.-]', '_', runner)}"
