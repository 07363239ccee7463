"""pytest hooks of pytest-lmbackend: options, markers, parametrization, setup-time skips, reports."""

from __future__ import annotations

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
)

if TYPE_CHECKING:
    from pytest_lmbackend.hardware import Hardware
    from pytest_lmbackend.markers import ItemMarks
    from pytest_lmbackend.selection import ItemOutcome
    from pytest_lmbackend.session import LmSession, Options

__all__ = [
    "_lm_synthetic_models",
    "lm_backend",
    "lm_backend_config",
    "lm_detection",
    "lm_hardware",
    "lm_model_dir",
    "lm_pipeline",
    "lm_pipeline_cache",
]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_lmbackend import hookspec, verify

    pluginmanager.add_hookspecs(hookspec)
    if not pluginmanager.is_registered(verify):
        pluginmanager.register(verify, "lmbackend-verify")  # --lm-verify-rules and its header lines


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_lmbackend import settings as s

    parser.getgroup("lmbackend", "LLM backends and hardware (pytest-lmbackend)")
    s.BACKEND.add(parser, metavar="auto|all|none|NAME[,NAME]")
    s.LMDEPLOY.add(parser, metavar="VERSION")
    s.HARDWARE.add(parser, metavar="PROFILE|FILE[,..]")
    s.PLAN.add(parser, action="store_true")
    s.REQUIRE.add(parser, metavar="KIND[,KIND]")
    s.STRICT_FALLBACK.add(parser, action="store_true")
    parser.getgroup("lmbackend").addoption(
        "--no-lm-strict-fallback", dest=s.STRICT_FALLBACK.name, action="store_false",
        help="allow LMDeploy's silent fallback to another engine.",
    )
    for setting in (s.PIPELINE_CACHE, s.GROUP_BY_ENGINE, s.ENGINE_OPTIONS):
        setting.add(parser)
    from pytest_lmbackend.fleet.plugin import addoption as fleet_options

    fleet_options(parser)


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
    from pytest_lmbackend.backends import build_registry
    from pytest_lmbackend.markers import MARKER_HELP
    from pytest_lmbackend.selection import check_backend_names
    from pytest_lmbackend.session import SESSION_KEY, LmSession, SetupError

    for text in MARKER_HELP.values():
        config.addinivalue_line("markers", text)
    try:
        options = _options(config)
        extra: list[Any] = config.hook.pytest_lmbackend_register_backends(config=config)
        registry = build_registry(extra)
        check_backend_names(options.backend, registry, options.backend_origin)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    state = LmSession(options=options, registry=registry)
    try:
        if options.hardware:  # a bad profile is a usage error now, not a failure in every test
            for hw in state.hardware_views():
                _check_stated_backends(hw, registry.names, options.hardware_origin)
        if options.lmdeploy is not None:
            _ = state.release
    except SetupError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[SESSION_KEY] = state
    from pytest_lmbackend.fleet.plugin import configure as configure_fleet

    configure_fleet(config, state)  # registers the fleet's hooks only when a fleet is configured


def _check_stated_backends(hardware: Hardware, names: tuple[str, ...], origin: str) -> None:
    """A profile's ``backends`` must name registered backends: a typo would silently make every
    test of that backend skip as unavailable."""
    from pytest_lmbackend.session import SetupError

    unknown = [b for b in (hardware.backends or ()) if b not in names]
    if unknown:
        raise SetupError(f"{origin}: hardware profile {hardware.profile!r}: field 'backends': "
                         f"{', '.join(map(repr, unknown))} is not a registered backend "
                         f"(registered: {', '.join(names)})")


def _options(config: pytest.Config) -> Options:
    from pytest_lmbackend import settings as s
    from pytest_lmbackend.session import Options

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


def _state(config: pytest.Config) -> LmSession:
    from pytest_lmbackend.session import SESSION_KEY

    return config.stash[SESSION_KEY]


def _base_dirs(config: pytest.Config, path: Path | None) -> list[Path]:
    dirs = [path.parent] if path is not None else []
    return [*dirs, config.rootpath]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from pytest_lmbackend.markers import LMDEPLOY_ENGINES, MarkerError, parse_marks
    from pytest_lmbackend.selection import is_backend_bound, parametrize_ids

    state = _state(metafunc.config)
    try:
        marks = parse_marks(
            metafunc.definition.iter_markers(), where=metafunc.definition.nodeid,
            backend_names=state.registry.names,
            base_dirs=_base_dirs(metafunc.config, metafunc.definition.path),
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
        # only names in the fixture closure, so the backend fixture joins it.
        metafunc.fixturenames.append("lm_backend")
    # LMDeploy's own markers ride on their parameters, so `-m turbomind` / `-m pytorch` select them
    params = [pytest.param(name, id=name,
                           marks=[getattr(pytest.mark, name)] if name in LMDEPLOY_ENGINES else [])
              for name in ids]
    metafunc.parametrize("lm_backend", params, indirect=True)


def _own_marks(item: pytest.Item) -> list[pytest.Mark]:
    """The item's markers without the ones this plugin put on its ``lm_backend`` parameter (they are
    for ``-m`` selection only and must not restrict the backends the user's markers allow)."""
    from pytest_lmbackend.markers import LMDEPLOY_ENGINES

    callspec = getattr(item, "callspec", None)
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
    from pytest_lmbackend.markers import MarkerError, parse_marks
    from pytest_lmbackend.selection import group_by_engine, is_backend_bound
    from pytest_lmbackend.session import BOUND_KEY, MARKS_KEY, PARAM_KEY

    state = _state(config)
    errors: list[str] = []
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        try:
            marks = parse_marks(
                _own_marks(item), where=item.nodeid, backend_names=state.registry.names,
                base_dirs=_base_dirs(config, item.path),
            )
            marks = _one_requirement(marks, item.nodeid)
        except (MarkerError, ValueError) as exc:  # RequirementError is a ValueError naming the test
            errors.append(str(exc))
            continue
        item.stash[MARKS_KEY] = marks
        item.stash[BOUND_KEY] = is_backend_bound(item.fixturenames, marks)
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("lm_backend") if callspec is not None else None
        item.stash[PARAM_KEY] = param if isinstance(param, str) else None
    if errors:
        raise pytest.UsageError("bad pytest-lmbackend marker(s):\n  " + "\n  ".join(errors))
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
    state = _state(session.config)
    if not state.options.plan:
        return None
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.plan import PlanRow, format_plan
    from pytest_lmbackend.session import MARKS_KEY, SetupError
    from pytest_lmbackend.skipping import pytest_skip

    items = [i for i in session.items if MARKS_KEY in i.stash]
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
    except (SetupError, BackendCheckError) as exc:
        raise pytest.UsageError(str(exc)) from exc
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"lm-plan: {len(items)} tests, --lm-backend={state.options.backend}, "
             f"LMDeploy rules {state.release}; nothing was run", "",
             *format_plan(rows, columns, require=state.options.require)]
    if reporter is not None:
        reporter.section("lm-plan", sep="=")
        for line in lines:
            reporter.write_line(line)
    return True


def _evaluate(state: LmSession, item: pytest.Item, *, view: int = 0) -> ItemOutcome:
    from pytest_lmbackend.session import BOUND_KEY, MARKS_KEY, PARAM_KEY

    return state.evaluate(item.stash[MARKS_KEY], param=item.stash[PARAM_KEY],
                          backend_bound=item.stash[BOUND_KEY], view=view)


# Not tryfirst: pytest's own skip/skipif/xfail(run=False) marks (tryfirst in the skipping plugin) are
# the user's word and come first; this still runs before the runner sets fixtures up.
@pytest.hookimpl
def pytest_runtest_setup(item: pytest.Item) -> None:
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.session import MARKS_KEY, OUTCOME_KEY, SKIP_KIND_PROPERTY, SetupError

    if MARKS_KEY not in item.stash:
        return
    state = _state(item.config)
    try:
        outcome = _evaluate(state, item)
    except (SetupError, BackendCheckError) as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
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
    from pytest_lmbackend.session import SKIP_KIND_PROPERTY

    report = yield
    # A skip raised by this plugin points at the test, not at the plugin's hook, as pytest's own
    # skip markers do.
    if (call.when == "setup" and report.skipped and isinstance(report.longrepr, tuple)
            and any(k == SKIP_KIND_PROPERTY for k, _ in item.user_properties)):
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    return report


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_lmbackend.backends import BackendCheckError
    from pytest_lmbackend.report import header_lines
    from pytest_lmbackend.session import SetupError
    from pytest_lmbackend.summary import backend_lines

    state = _state(config)
    try:
        if state.options.plan and len(state.options.hardware) > 1:
            return _plan_header(state)
        hardware = state.hardware
        facts = state.facts()
        release: str | None = state.release
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
             f"LMDeploy rules {state.release}"]
    for n, hardware in enumerate(views):
        try:
            availability = state.registry.availability(state.facts(n))
        except BackendCheckError as exc:
            return [*lines, f"lmbackend: ERROR: {exc}"]
        lines += [f"lmbackend:   {line}" for line in profile_lines(hardware, availability)]
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from pytest_lmbackend.session import SKIP_KIND_PROPERTY
    from pytest_lmbackend.summary import skip_lines
    from pytest_lmbackend.verdict import Verdict

    verdicts: list[Verdict] = []
    for report in terminalreporter.stats.get("skipped", []):
        kinds = [v for k, v in getattr(report, "user_properties", ()) if k == SKIP_KIND_PROPERTY]
        if kinds and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
            verdicts.append(Verdict(str(kinds[-1]), reason))
    if verdicts:
        terminalreporter.section("lmbackend skips by kind", sep="-")
        for line in skip_lines(verdicts):
            terminalreporter.write_line(line)

