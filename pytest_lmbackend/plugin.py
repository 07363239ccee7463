"""pytest hooks of pytest-lmbackend: options, markers, parametrization, setup-time skips, reports."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Fixtures must be attributes of the plugin module; fixtures.py itself imports nothing heavy. Every
# other module of the package is imported inside the hooks, so loading the plugin costs next to nothing.
from pytest_lmbackend.fixtures import (
    _lm_synthetic_models,
    lm_backend,
    lm_backend_config,
    lm_detection,
    lm_hardware,
    lm_model_dir,
    lm_pipeline,
    lm_pipeline_cache,
    lm_startup,
)

if TYPE_CHECKING:
    from pytest_lmbackend.markers import ItemMarks
    from pytest_lmbackend.selection import ItemOutcome
    from pytest_lmbackend.session import LmSession

__all__ = [
    "_lm_synthetic_models",
    "lm_backend",
    "lm_backend_config",
    "lm_detection",
    "lm_hardware",
    "lm_model_dir",
    "lm_pipeline",
    "lm_pipeline_cache",
    "lm_startup",
]


# The plugin's own markers, and the fixtures that read an item's markers: a test that uses none of them
# (and, where the suite opted in, no LMDeploy marker) is not the plugin's business: its markers are not
# even read. (Here, not in markers.py, so that a session that uses nothing does not load the reader.)
OWN_MARKERS: frozenset[str] = frozenset({"lm_requires", "lm_backend", "lm_model", "lm_engine", "lm_isolated"})
ITEM_FIXTURES: frozenset[str] = frozenset({"lm_backend", "lm_detection", "lm_backend_config", "lm_pipeline"})

# name -> help line, signature style, for ``pytest --markers`` and ``--strict-markers``.
MARKER_HELP: dict[str, str] = {
    "lm_requires": (
        "lm_requires(*, gpus=N, nodes=N, capability='>=8.0', vram='40GiB', free_vram='20GiB', "
        "dtype='bf16', packages=[...], turbomind_kernels=True): skip at setup, with wanted/found/device, "
        "unless the GPU(s) this test gets meet every requirement."
    ),
    "lm_backend": (
        "lm_backend(*names): bind this test to these backends (turbomind, pytorch, transformers or a "
        "registered one); the others are not generated, or skip."
    ),
    "lm_model": (
        "lm_model(source, *, synthetic=False): bind this test to a model (folder, config.json, "
        "mapping or local cache id; relative paths from the test file's folder, then the rootdir). "
        "With --lm-backend=auto it runs on the backend LMDeploy picks for it; synthetic=True builds "
        "tiny random weights from its config for lm_pipeline."
    ),
    "lm_engine": (
        "lm_engine(**options): engine options for lm_backend_config and lm_pipeline "
        "(e.g. session_len=512, cache_max_entry_count=0.1), over the lm_engine_options ini lines."
    ),
    "lm_isolated": (
        "lm_isolated(*, timeout=SECONDS): run this test in a freshly spawned interpreter pinned to its "
        "GPUs; a timeout fails it (default --lm-isolated-timeout)."
    ),
}


def asks(marker_names: Iterable[str], fixturenames: Iterable[str], *, lmdeploy: bool = False) -> bool:
    """Whether a test asks anything of the plugin: one of its markers (or, with ``lmdeploy``, one of
    LMDeploy's), or a fixture that reads them."""
    if not ITEM_FIXTURES.isdisjoint(fixturenames):
        return True
    names = list(marker_names)
    if any(name in OWN_MARKERS for name in names):
        return True
    if not lmdeploy or not names:
        return False
    from pytest_lmbackend.markers import is_lmdeploy_marker

    return any(is_lmdeploy_marker(name) for name in names)


_ISOLATION = "lmbackend_isolation"
_XDIST = "lmbackend_xdist"
_ASKED_KEY = pytest.StashKey[bool]()  # some collected test asks something of the plugin
_JOINED_KEY = pytest.StashKey[set[str]]()  # functions whose lm_backend fixture the plugin added


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    import os

    from pytest_lmbackend import hookspec, settings

    pluginmanager.add_hookspecs(hookspec)
    if os.environ.get(settings.ISOLATED_CHILD_ENV):
        # the process lm_isolated spawned for one test: its capture is set up before options are read
        _register(pluginmanager, _ISOLATION, "pytest_lmbackend.isolation")


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    # Before pytest-xdist counts -n auto (in its own pytest_cmdline_main) and before any configure:
    # GPU pinning is loaded when asked, and in a process an xdist worker pinned (or its lm_isolated child)
    import os

    from pytest_lmbackend import settings

    if os.environ.get(settings.WORKER_GPUS_ENV) or settings.value(config, settings.GPUS_PER_WORKER) != ():
        _register(config.pluginmanager, _XDIST, "pytest_lmbackend.xdist")
    return (yield)


def _register(pluginmanager: pytest.PytestPluginManager, name: str, module: str) -> None:
    """Register one part of the plugin (a module of hooks) unless ``-p no:NAME`` blocks it or it is
    registered already. ``-p no:lmbackend`` blocks the plugin, so none of its parts is registered."""
    if pluginmanager.is_blocked(name) or pluginmanager.has_plugin(name):
        return
    import importlib

    loaded = importlib.import_module(module)
    if not pluginmanager.is_registered(loaded):
        pluginmanager.register(loaded, name)


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_lmbackend import settings

    settings.add_all(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before Hypothesis's own pytest_configure loads `--hypothesis-profile=lmbackend-*`, which it can
    # only do once the profiles are registered; hypothesis is imported only when one is asked for.
    try:
        profile = config.getoption("hypothesis_profile", None)
    except ValueError:
        profile = None
    if isinstance(profile, str) and profile.startswith("lmbackend-"):
        from pytest_lmbackend.strategies.profiles import register_profiles

        register_profiles()
    _configure(config)


def _configure(config: pytest.Config) -> None:
    from pytest_lmbackend import settings
    for text in MARKER_HELP.values():
        config.addinivalue_line("markers", text)
    if _lmdeploy_markers(config):  # LMDeploy's names are registered (and read) where the suite opts in
        from pytest_lmbackend.markers import lmdeploy_marker_help

        for text in lmdeploy_marker_help().values():
            config.addinivalue_line("markers", text)
    manager = config.pluginmanager
    if not settings.any_given(config):
        return  # installed, not used (yet): the session's state is made when a test asks for it
    from pytest_lmbackend.session import session_state

    state = session_state(config)  # checked now: a bad option or profile is a usage error at once
    if settings.given(config, settings.LEAK):
        _register(manager, "lmbackend_leak", "pytest_lmbackend.leak")
    if settings.given(config, settings.VERIFY_RULES):
        _register(manager, "lmbackend_verify", "pytest_lmbackend.verify")
    if any(settings.given(config, s) for s in (settings.FLEET, settings.RUNNER, settings.PLAN_JSON)):
        from pytest_lmbackend.fleet.plugin import configure as configure_fleet

        configure_fleet(config, state)  # registers the fleet's hooks when a fleet is configured


def _lmdeploy_markers(config: pytest.Config) -> bool:
    """Whether the suite opted in to LMDeploy's marker names (ini ``lm_markers = lmdeploy``)."""
    from pytest_lmbackend import settings

    return "lmdeploy" in settings.value(config, settings.MARKERS)


def _state(config: pytest.Config) -> LmSession:
    from pytest_lmbackend.session import session_state

    return session_state(config)


def _base_dirs(config: pytest.Config, path: Path | None) -> list[Path]:
    dirs = [path.parent] if path is not None else []
    return [*dirs, config.rootpath]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    lmdeploy = _lmdeploy_markers(metafunc.config)
    if not asks((m.name for m in metafunc.definition.iter_markers()), metafunc.fixturenames,
                lmdeploy=lmdeploy):
        return  # nothing of the plugin's: not even its markers are read
    from pytest_lmbackend.markers import LMDEPLOY_ENGINES, MarkerError, parse_marks
    from pytest_lmbackend.selection import is_backend_bound, parametrize_ids

    state = _state(metafunc.config)
    try:
        marks = parse_marks(
            metafunc.definition.iter_markers(), where=metafunc.definition.nodeid,
            backend_names=state.registry.names,
            base_dirs=_base_dirs(metafunc.config, metafunc.definition.path), lmdeploy=lmdeploy,
        )
    except MarkerError:
        return  # reported, with every other bad marker, as one usage error after collection
    if not is_backend_bound(metafunc.fixturenames, marks):
        return
    if any("lm_backend" in _argnames(m) for m in metafunc.definition.iter_markers("parametrize")):
        return  # the test names its backends itself: its parametrization is the user's word
    ids = parametrize_ids(state.options.backend, marks, state.registry)
    if ids is None:
        return
    if "lm_backend" not in metafunc.fixturenames:
        # A test bound only by a marker still gets its backend as a parameter; pytest parametrizes
        # only names in the fixture closure, so the backend fixture joins it (not asked for by the test:
        # it does not make the test run on an engine, _asked_backend)
        metafunc.fixturenames.append("lm_backend")
        metafunc.config.stash.setdefault(_JOINED_KEY, set()).add(metafunc.definition.nodeid)
    # Where the suite reads LMDeploy's markers, they ride on the parameters, so `-m turbomind` / `-m
    # pytorch` select them; elsewhere those words are the suite's own and nothing is added
    ride = LMDEPLOY_ENGINES if lmdeploy else ()
    params = [pytest.param(name, id=name, marks=[getattr(pytest.mark, name)] if name in ride else [])
              for name in ids]
    metafunc.parametrize("lm_backend", params, indirect=True)


def _asked_fixtures(item: pytest.Function) -> list[str]:
    """The item's fixtures without the ``lm_backend`` the plugin joined to parametrize it."""
    joined = item.config.stash.get(_JOINED_KEY, set())
    definition = f"{item.parent.nodeid}::{item.originalname}" if item.parent is not None else item.nodeid
    if definition not in joined:
        return list(item.fixturenames)
    return [name for name in item.fixturenames if name != "lm_backend"]


def _suite_value(item: pytest.Item, names: tuple[str, ...]) -> str | None:
    """The backend the suite's own parameter names (ini ``lm_backend_param``, the first of its names
    that the item has): text, an LMDeploy engine-config class or a mapping's ``backend`` entry."""
    if not names:
        return None
    from pytest_lmbackend.markers import suite_backend

    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in names:
        if name in params:
            try:
                return suite_backend(params[name])
            except Exception:  # the suite's own object failing in its own code (a metaclass's __mro__,
                return None    # a __name__ property): it names no backend, as without the plugin
    return None


def _deselect_other_backends(config: pytest.Config, items: list[pytest.Item], state: LmSession) -> None:
    """``--lm-backend=NAME[,NAME]``: tests whose own backend parameter names another backend are
    deselected, as ``-m`` / ``-k`` deselect (pytest's summary counts them), not skipped."""
    from pytest_lmbackend.session import SUITE_BACKEND_KEY

    mode = state.options.backend
    if mode.mode != "names":
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        suite = item.stash.get(SUITE_BACKEND_KEY, None)
        (dropped if suite is not None and suite not in mode.names else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _own_marks(item: pytest.Item, lmdeploy: bool) -> list[pytest.Mark]:
    """The item's markers without the ones this plugin put on its ``lm_backend`` parameter (they are
    for ``-m`` selection only and must not restrict the backends the user's markers allow)."""
    from pytest_lmbackend.markers import LMDEPLOY_ENGINES

    callspec = getattr(item, "callspec", None)
    if not lmdeploy:
        return list(item.iter_markers())
    ours = {id(m) for m in getattr(callspec, "marks", ()) if m.name in LMDEPLOY_ENGINES}
    if not ours or not isinstance(getattr(callspec, "params", {}).get("lm_backend"), str):
        return list(item.iter_markers())
    return [m for m in item.iter_markers() if id(m) not in ours]


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
    if isinstance(names, str):
        return [n.strip() for n in names.split(",")]
    return [str(n) for n in names]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from pytest_lmbackend import settings

    lmdeploy = _lmdeploy_markers(config)
    suite_param = settings.value(config, settings.BACKEND_PARAM)
    asking: list[tuple[pytest.Function, str | None]] = []  # each asking item, its suite's own backend
    for item in items:
        if isinstance(item, pytest.Function):
            suite = _suite_value(item, suite_param)
            if suite is not None or asks((m.name for m in item.iter_markers()), item.fixturenames,
                                         lmdeploy=lmdeploy):
                asking.append((item, suite))
    if not asking:
        return  # a session that uses nothing of the plugin pays nothing more
    config.stash[_ASKED_KEY] = True
    from pytest_lmbackend.display import printable
    from pytest_lmbackend.markers import MarkerError, parse_marks
    from pytest_lmbackend.selection import group_by_engine, is_backend_bound, needs_engine
    from pytest_lmbackend.session import BOUND_KEY, ENGINE_KEY, MARKS_KEY, PARAM_KEY, SUITE_BACKEND_KEY

    state = _state(config)
    errors: list[str] = []
    for item, suite in asking:
        try:
            marks = parse_marks(
                _own_marks(item, lmdeploy), where=item.nodeid, backend_names=state.registry.names,
                base_dirs=_base_dirs(config, item.path), lmdeploy=lmdeploy,
            )
            marks = _one_requirement(marks, item.nodeid)
        except (MarkerError, ValueError) as exc:  # RequirementError is a ValueError naming the test
            errors.append(printable(exc))
            continue
        item.stash[MARKS_KEY] = marks
        bound = item.stash[BOUND_KEY] = is_backend_bound(item.fixturenames, marks)
        item.stash[ENGINE_KEY] = needs_engine(_asked_fixtures(item), marks)
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("lm_backend") if callspec is not None else None
        if callspec is not None and "lm_backend" in callspec.params and param not in state.registry.names:
            # the test's own parametrize("lm_backend", [...]) names a backend: checked as the marker is
            errors.append(f"{item.nodeid}: parametrize('lm_backend', ...) gives {param!r}: unknown backend; "
                          f"known: {', '.join(state.registry.names)}")
            continue
        item.stash[PARAM_KEY] = param if isinstance(param, str) else None
        # the suite's own parameter names the backend only of a test the plugin did not bind itself
        item.stash[SUITE_BACKEND_KEY] = suite if not bound and suite in state.registry.names else None
    if errors:
        raise pytest.UsageError("bad pytest-lmbackend marker(s):\n  " + "\n  ".join(errors))
    _deselect_other_backends(config, items, state)
    if any(item.stash[MARKS_KEY].isolated for item, _ in asking if MARKS_KEY in item.stash):
        _register(config.pluginmanager, _ISOLATION, "pytest_lmbackend.isolation")
    grouping = state.options.group_by_engine
    if grouping != "off":
        keys: list[tuple[str, str, str | None] | None] = [
            None if k is None
            # "parent": never across a module or class, whose fixtures keep their order
            else (item.parent.nodeid if grouping == "parent" and item.parent else "", *k)
            for k, item in ((_engine_key(item), item) for item in items)
        ]
        items[:] = [items[i] for i in group_by_engine(keys)]


def _engine_key(item: pytest.Item) -> tuple[str, str | None] | None:
    """What an item's ``lm_pipeline`` is shared by: its model and backend parameter; None without one."""
    from pytest_lmbackend.session import MARKS_KEY, PARAM_KEY

    marks = item.stash.get(MARKS_KEY, None)
    if "lm_pipeline" not in getattr(item, "fixturenames", ()) or marks is None or marks.model is None:
        return None
    return (marks.model.key, item.stash.get(PARAM_KEY, None))


def _one_requirement(marks: ItemMarks, where: str) -> ItemMarks:
    """Every ``lm_requires`` / ``gpu_num_N`` of an item (module, class, function) merged into one, so
    that GPU facts asked by one marker are judged on every GPU a count from another marker gives."""
    if len(marks.requirements) <= 1:
        return marks
    import dataclasses

    from pytest_lmbackend.requirements import combine

    return dataclasses.replace(marks, requirements=(combine(marks.requirements, where=where),))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    from pytest_lmbackend import settings

    if not settings.value(session.config, settings.PLAN):
        return None
    state = _state(session.config)
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.plan import PlanRow, format_plan
    from pytest_lmbackend.session import SetupError
    from pytest_lmbackend.skipping import pytest_skip

    items = [i for i in session.items if isinstance(i, pytest.Function)]  # those that ask nothing: run
    try:
        views = state.hardware_views()
        columns = [str(getattr(hw, "name", None) or f"hardware {n}") for n, hw in enumerate(views)]
        specs = state.options.hardware
        if len(set(columns)) < len(columns) and len(specs) == len(columns):
            # two files both calling themselves "ci-h100": tell the columns apart by what was given
            columns = [c if columns.count(c) == 1 else f"{c} ({spec})" for c, spec in zip(columns, specs,
                                                                                         strict=True)]
        rows = []
        for item in items:
            skipped = pytest_skip(item)  # pytest's own marks come first, as in the run
            rows.append(PlanRow(item.nodeid, tuple(
                skipped.outcome() if skipped else _evaluate(state, item, view=n) for n in range(len(views)))))
        rules = _rules_of(state)
    except (SetupError, BackendCheckError) as exc:
        from pytest_lmbackend.display import printable

        raise pytest.UsageError(printable(exc)) from exc
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"lm-plan: {len(items)} tests, --lm-backend={state.options.backend}, "
             f"LMDeploy rules {rules}; nothing was run", "",
             *format_plan(rows, columns, require=state.options.require)]
    if reporter is not None:
        reporter.section("lm-plan", sep="=")
        for line in lines:
            reporter.write_line(line)
    return True


def _evaluate(state: LmSession, item: pytest.Item, *, view: int = 0) -> ItemOutcome:
    from pytest_lmbackend.markers import ItemMarks
    from pytest_lmbackend.session import BOUND_KEY, ENGINE_KEY, MARKS_KEY, PARAM_KEY, SUITE_BACKEND_KEY

    return state.evaluate(item.stash.get(MARKS_KEY, ItemMarks()), param=item.stash.get(PARAM_KEY, None),
                          backend_bound=item.stash.get(BOUND_KEY, False), view=view,
                          suite_backend=item.stash.get(SUITE_BACKEND_KEY, None),
                          engine=item.stash.get(ENGINE_KEY, False))


# Not tryfirst: pytest's own skip/skipif/xfail(run=False) marks (tryfirst in the skipping plugin) are
# the user's word and come first; this still runs before the runner sets fixtures up.
@pytest.hookimpl
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.config.stash.get(_ASKED_KEY, False):
        return  # no test of this session asks anything of the plugin
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.session import MARKS_KEY, OUTCOME_KEY, SKIP_KIND_PROPERTY, SetupError

    if MARKS_KEY not in item.stash:
        return
    state = _state(item.config)
    try:
        outcome = _evaluate(state, item)
    except (SetupError, BackendCheckError) as exc:
        from pytest_lmbackend.display import printable

        raise pytest.fail.Exception(printable(exc), pytrace=False) from None
    item.stash[OUTCOME_KEY] = outcome
    verdict = outcome.verdict
    if verdict is None:
        return
    if verdict.error:
        pytest.fail(verdict.reason, pytrace=False)
    required = verdict.failing_kind(state.options.require)
    if required is not None:
        why = "" if required == verdict.kind else ", so the required " + required + " was not met"
        pytest.fail(f"{verdict.reason}{why} (--lm-require={required})", pytrace=False)
    item.user_properties.append((SKIP_KIND_PROPERTY, verdict.kind))
    pytest.skip(verdict.reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when != "setup" or not report.skipped or not isinstance(report.longrepr, tuple):
        return report
    from pytest_lmbackend.verdict import SKIP_KIND_PROPERTY

    # A skip raised by this plugin points at the test, not at the plugin's hook, as pytest's own
    # skip markers do.
    if any(k == SKIP_KIND_PROPERTY for k, _ in item.user_properties):
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    return report


_HEADER_SHOWN_KEY = pytest.StashKey[bool]()
_UNUSED_HEADER = ("lmbackend: no lm_ option or ini key given; hardware read when a test first needs it "
                  "(pytest-lmbackend env: now)")


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_lmbackend import settings

    if hasattr(config, "workerinput"):
        return []  # an xdist worker: its header is never shown, so nothing is read for it
    verbose = config.get_verbosity() > 0
    used = settings.any_given(config)
    if not verbose and not used:
        return []  # installed, not used: the header is pytest's own
    from pytest_lmbackend.verify import header_lines as rules_lines

    if not used:
        # -v, but nothing of the plugin asked for: still no probe (a suite's every `pytest -v`,
        # pytester's inner sessions included, would start nvidia-smi); a newer LMDeploy is noted
        return [_UNUSED_HEADER, *rules_lines(config)]

    state = _state(config)
    if (settings.value(config, settings.FLEET) and settings.value(config, settings.RUNNER) is None
            and not state.probed):
        # planning a fleet judges its profiles (the fleet's header lines): this machine is not read
        return [f"lmbackend: --lm-backend={state.options.backend}; this machine's hardware not read "
                "(a fleet plan judges the fleet's profiles)", *rules_lines(config)]
    if not verbose and not state.probed and not state.options.plan:
        # what is known without probing: the hardware is read when a test first needs it, and the
        # terminal summary reports it then
        rules = state.release if state.options.lmdeploy else "the installed release's (else the newest)"
        return [f"lmbackend: --lm-backend={state.options.backend}; LMDeploy rules {rules}; hardware read "
                "when a test first needs it (-v: now)", *rules_lines(config)]
    config.stash[_HEADER_SHOWN_KEY] = True
    return [*_hardware_report(state), *_newer_stated(state), *rules_lines(config)]


def _newer_stated(state: LmSession) -> list[str]:
    """A note for each fake profile that states an LMDeploy newer than the newest rules (read only
    where the profiles are already loaded)."""
    if state.options.lmdeploy or not state.options.hardware or not state.probed:
        return []
    from pytest_lmbackend.display import printable
    from pytest_lmbackend.rules.releases import newer_than_known
    from pytest_lmbackend.verify import newer_line

    return [printable(newer_line(hw.packages["lmdeploy"], f"stated by profile {hw.name!r}"))
            for hw in state.hardware_views()
            if hw.packages_stated and newer_than_known(hw.packages.get("lmdeploy"))]


def _hardware_report(state: LmSession) -> list[str]:
    """The hardware, the backends available on it and why the others are not; read now if need be."""
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.report import header_lines
    from pytest_lmbackend.session import SetupError
    from pytest_lmbackend.summary import backend_lines

    try:
        if state.options.plan and len(state.options.hardware) > 1:
            return _plan_header(state)
        hardware = state.hardware
        facts = state.facts()
        release: str | None = state.release_for(0)
    except SetupError as exc:
        return [f"lmbackend: {exc}"]
    lines = header_lines(hardware)
    try:
        availability = state.registry.availability(facts)
    except BackendCheckError as exc:
        return [*lines, f"lmbackend: ERROR: {exc}"]
    return [*lines, *backend_lines(availability, facts, mode=str(state.options.backend), release=release)]


def _plan_header(state: LmSession) -> list[str]:
    """Every profile of a several-profile plan, in brief, each with the backends available there."""
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.plan import profile_lines

    views = state.hardware_views()
    lines = [f"lmbackend: --lm-plan over {len(views)} profiles; --lm-backend={state.options.backend}; "
             f"LMDeploy rules {_rules_of(state)}"]
    for n, hardware in enumerate(views):
        try:
            availability = state.registry.availability(state.facts(n))
        except BackendCheckError as exc:
            return [*lines, f"lmbackend: ERROR: {exc}"]
        brief = profile_lines(hardware, availability, state.release_for(n))
        lines += [f"lmbackend:   {line}" for line in brief]
    return lines


def _rules_of(state: LmSession) -> str:
    """The release whose rules decide, or that each profile states its own."""
    releases = {state.release_for(n) for n in range(len(state.hardware_views()))}
    return releases.pop() if len(releases) == 1 else "per profile (the LMDeploy each states, else the newest)"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        _skip_summary(terminalreporter, skipped)
    import sys

    session = sys.modules.get("pytest_lmbackend.session")  # not loaded: no state was ever made
    state = None if session is None else config.stash.get(session.SESSION_KEY, None)
    if state is not None and state.probed and not config.stash.get(_HEADER_SHOWN_KEY, False):
        # read during the run (a test needed it), after the header: what it found, warnings included
        terminalreporter.section("lmbackend hardware", sep="-")
        for line in _hardware_report(state):
            terminalreporter.write_line(line)


def _skip_summary(terminalreporter: Any, skipped: list[pytest.TestReport]) -> None:
    """The plugin's skips grouped by kind (``SKIP_KIND_PROPERTY``), each reason with its count."""
    from pytest_lmbackend.verdict import SKIP_KIND_PROPERTY, Verdict

    verdicts: list[Verdict] = []
    for report in skipped:
        kinds = [v for k, v in getattr(report, "user_properties", ()) if k == SKIP_KIND_PROPERTY]
        if kinds and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            verdicts.append(Verdict(str(kinds[-1]), reason))
    if verdicts:
        from pytest_lmbackend.summary import skip_lines

        terminalreporter.section("lmbackend skips by kind", sep="-")
        for line in skip_lines(verdicts):
            terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """The GPUs, driver, CUDA and package versions, in pytest-benchmark's machine info, only where the
    plugin's own benchmarks (``lm_startup``) are saved or compared: other suites' saved benchmarks stay
    as pytest-benchmark alone writes them."""
    from pytest_lmbackend.fixtures import BENCH_USED_KEY

    if config.stash.get(BENCH_USED_KEY, False) or _compared_runs_carry_ours(config):
        from pytest_lmbackend.bench.report import machine_facts

        machine_info["lmbackend"] = machine_facts()


def _compared_runs_carry_ours(config: pytest.Config) -> bool:
    """At ``--benchmark-compare`` (read before any test runs), whether the saved runs compared against
    hold the plugin's machine facts: then this run's are added too, so like is compared with like."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not getattr(session, "compare", None) or config.pluginmanager.has_plugin(
            "pytest-benchmark"):  # registered under that name only once its comparison is loaded
        return False
    try:  # as pytest-benchmark picks them: the last run, or those --benchmark-compare=NUM names
        saved = (list(session.storage.load())[-1:] if session.compare is True
                 else list(session.storage.load(session.compare)))
    except Exception:  # pytest-benchmark's own loading reports what it cannot read
        return False
    return any("lmbackend" in (run.get("machine_info") or {}) for _, run in saved)
