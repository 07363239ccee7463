"""pytest hooks of pytest-lmbackend: options, markers, parametrization, setup-time skips, reports."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    from pytest_lmbackend.selection import BackendMode
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

T = TypeVar("T")

# --lm-require accepts these besides the kinds lm_requires reports.
PLUGIN_KINDS: frozenset[str] = frozenset({"backend", "model", "fleet"})


def _backend_option(text: str) -> BackendMode:
    """argparse ``type=`` for ``--lm-backend`` (see ``selection.parse_backend_option``)."""
    from pytest_lmbackend.selection import parse_backend_option

    return parse_backend_option(text)


def _kinds(text: str) -> frozenset[str]:
    """argparse ``type=`` for ``--lm-require`` (see ``selection.parse_kinds``)."""
    from pytest_lmbackend.selection import parse_kinds

    return parse_kinds(text)


def _profiles(text: str) -> tuple[str, ...]:
    """argparse ``type=`` for ``--lm-hardware``: ``PROFILE|FILE[,...]``."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a profile name or file, or several with commas")
    return names


def _release(text: str) -> str:
    """argparse ``type=`` for ``--lm-lmdeploy``: a version such as ``0.18.0`` (checked at configure)."""
    value = text.strip()
    if not value or not all(ch.isalnum() or ch in ".+-" for ch in value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an LMDeploy version such as 0.18.0")
    return value


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_lmbackend import hookspec, verify

    pluginmanager.add_hookspecs(hookspec)
    if not pluginmanager.is_registered(verify):
        pluginmanager.register(verify, "lmbackend-verify")  # --lm-verify-rules and its header lines


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lmbackend", "LLM backends and hardware (pytest-lmbackend)")
    group.addoption(
        "--lm-backend", type=_backend_option, default=None, metavar="auto|all|none|NAME[,NAME]",
        help="backends for backend-bound tests: auto (LMDeploy's pick per model; best available "
             "otherwise), all (one item per backend), none, or names. ini: lm_backend (default auto).",
    )
    group.addoption(
        "--lm-lmdeploy", type=_release, default=None, metavar="VERSION",
        help="LMDeploy release whose detection rules decide auto (default: installed, else newest). "
             "ini: lm_lmdeploy.",
    )
    group.addoption(
        "--lm-hardware", type=_profiles, default=None, metavar="PROFILE|FILE[,..]",
        help="fake hardware profile(s) instead of probing; several only with --lm-plan. "
             "ini: lm_hardware; env: PYTEST_LM_HARDWARE.",
    )
    group.addoption(
        "--lm-plan", action="store_true", default=None,
        help="print which tests would run or skip, and why, per hardware profile; run nothing. ini: lm_plan.",
    )
    group.addoption(
        "--lm-require", type=_kinds, default=None, metavar="KIND[,KIND]",
        help="unmet requirements of these kinds (e.g. backend,gpus,capability) fail instead of skip. "
             "ini: lm_require.",
    )
    group.addoption(
        "--lm-strict-fallback", dest="lm_strict_fallback", action="store_true", default=None,
        help="fail when LMDeploy silently runs another engine than the test's backend "
             "(default: on with --lm-backend=auto). ini: lm_strict_fallback.",
    )
    group.addoption(
        "--no-lm-strict-fallback", dest="lm_strict_fallback", action="store_false",
        help="allow LMDeploy's silent fallback to another engine.",
    )
    from pytest_lmbackend.fleet.plugin import addoption as fleet_options

    fleet_options(group, parser)
    parser.addini("lm_backend", "default for --lm-backend", default="auto")
    parser.addini("lm_lmdeploy", "default for --lm-lmdeploy", default="")
    parser.addini("lm_hardware", "default for --lm-hardware", default="")
    parser.addini("lm_plan", "default for --lm-plan", type="bool", default=False)
    parser.addini("lm_require", "default for --lm-require", default="")
    parser.addini("lm_strict_fallback", "default for --lm-strict-fallback (empty: on with auto)", default="")
    parser.addini("lm_pipeline_cache", "how many pipelines lm_pipeline keeps alive at once", default="1")
    parser.addini("lm_group_by_engine", "bring tests sharing an lm_pipeline together: 'parent' (within "
                  "their module or class, the default), 'session' (across modules: module and class "
                  "fixtures may then be set up twice) or 'off'", default="parent")
    parser.addini("lm_engine_options", "engine options as key=value lines (Python literals), for "
                  "lm_backend_config and lm_pipeline", type="linelist", default=[])


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
        origin = "--lm-backend" if config.getoption("lm_backend") is not None else "ini lm_backend"
        check_backend_names(options.backend, registry, origin)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise pytest.UsageError(str(exc)) from exc
    from pytest_lmbackend.xdist import masked_profile

    state = LmSession(options=options, registry=registry, refine=lambda hw: masked_profile(config, hw))
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


def _check_stated_backends(hardware: Any, names: tuple[str, ...], origin: str) -> None:
    """A profile's ``backends`` must name registered backends: a typo would silently make every
    test of that backend skip as unavailable."""
    from pytest_lmbackend.session import SetupError

    unknown = [b for b in (getattr(hardware, "backends", None) or ()) if b not in names]
    if unknown:
        raise SetupError(f"{origin}: hardware profile {hardware.profile!r}: field 'backends': "
                         f"{', '.join(map(repr, unknown))} is not a registered backend "
                         f"(registered: {', '.join(names)})")


def _option(config: pytest.Config, name: str, parse: Callable[[str], T]) -> T | None:
    """The command-line value, else the ini value parsed with the same ``type=`` function."""
    value = config.getoption(name)
    if value is not None:
        return value  # type: ignore[no-any-return]
    text = str(config.getini(name)).strip()
    if not text:
        return None
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"ini {name}: {exc}") from exc


def _hardware_option(config: pytest.Config) -> tuple[tuple[str, ...], str]:
    """The profiles asked for, parsed, and where (``session.hardware_request`` decides the order)."""
    from pytest_lmbackend.session import hardware_request

    value, origin = hardware_request(config)
    if value is None:
        return (), origin
    if isinstance(value, (tuple, list)):  # the option, parsed by argparse already
        return tuple(value), origin
    try:
        return _profiles(str(value)), origin
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{origin}: {exc}") from exc


def _options(config: pytest.Config) -> Options:
    from pytest_lmbackend.selection import BackendMode, parse_backend_option, parse_kinds
    from pytest_lmbackend.session import Options

    backend = _option(config, "lm_backend", parse_backend_option) or BackendMode("auto")
    hardware, origin = _hardware_option(config)
    try:
        plan = bool(config.getoption("lm_plan") or config.getini("lm_plan"))
    except ValueError as exc:  # pytest's own words name neither the key nor the file
        raise ValueError(f"ini lm_plan: {exc}") from None
    if plan and getattr(config.option, "numprocesses", None):
        raise ValueError("--lm-plan runs nothing, so it takes no -n: drop -n/--numprocesses")
    if len(hardware) > 1 and not plan:
        raise ValueError(f"{origin}={','.join(hardware)}: several profiles are for --lm-plan only")
    require = _option(config, "lm_require", parse_kinds) or frozenset()
    every_kind = PLUGIN_KINDS | _requirement_kinds()
    if "all" in require:  # a GPU runner that must run everything it holds: no kind may skip
        require = every_kind
    unknown = sorted(require - every_kind)
    if unknown:
        raise ValueError(f"--lm-require: unknown kind(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(every_kind))}, all")
    strict = config.getoption("lm_strict_fallback")
    if strict is None:
        ini = str(config.getini("lm_strict_fallback")).strip().lower()
        if ini in ("1", "true", "yes", "on"):
            strict = True
        elif ini in ("0", "false", "no", "off"):
            strict = False
        elif ini:
            raise ValueError(f"ini lm_strict_fallback: {ini!r} is not true or false")
        else:
            strict = backend.mode == "auto"
    cache = str(config.getini("lm_pipeline_cache") or "1").strip()
    if not cache.isdigit() or int(cache) < 1:
        raise ValueError(f"ini lm_pipeline_cache: {cache!r} is not a whole number >= 1")
    grouping = str(config.getini("lm_group_by_engine") or "parent").strip().lower()
    if grouping not in ("parent", "session", "off"):
        raise ValueError(f"ini lm_group_by_engine: {grouping!r} is not one of parent, session, off")
    return Options(
        group_by_engine=grouping,
        backend=backend,
        lmdeploy=_option(config, "lm_lmdeploy", _release),
        hardware=hardware,
        hardware_origin=origin,
        plan=plan,
        require=require,
        strict_fallback=bool(strict),
        engine_options=_engine_options(config.getini("lm_engine_options")),
    )


def _requirement_kinds() -> frozenset[str]:
    from pytest_lmbackend import requirements

    return frozenset(getattr(requirements, "KINDS", ()))


def _engine_options(lines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in lines:
        key, sep, raw = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"ini lm_engine_options: {line!r} is not key=value")
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


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
                base_dirs=_base_dirs(config, item.path), parse_requirement=_requirement_parser(item.nodeid),
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


def _one_requirement(marks: Any, where: str) -> Any:
    """Every ``lm_requires`` / ``gpu_num_N`` of an item (module, class, function) merged into one, so
    that GPU facts asked by one marker are judged on every GPU a count from another marker gives."""
    if len(marks.requirements) <= 1:
        return marks
    import dataclasses

    from pytest_lmbackend.requirements import combine

    return dataclasses.replace(marks, requirements=(combine(marks.requirements, where=where),))


def _requirement_parser(where: str) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    from pytest_lmbackend.requirements import parse_requirement

    def parse(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return parse_requirement(args, kwargs, where=where)

    return parse


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


def _evaluate(state: LmSession, item: pytest.Item, *, view: int = 0) -> Any:
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
    from pytest_lmbackend.session import SetupError
    from pytest_lmbackend.summary import backend_lines, fallback_hardware_lines

    state = _state(config)
    try:
        if state.options.plan and len(state.options.hardware) > 1:
            return _plan_header(state)
        hardware = state.hardware
        facts = state.facts()
        release: str | None = state.release
    except SetupError as exc:
        return [f"lmbackend: {exc}"]
    lines = _hardware_lines(hardware) or fallback_hardware_lines(facts)
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


def _hardware_lines(hardware: Any) -> list[str]:
    import importlib

    try:
        report = importlib.import_module("pytest_lmbackend.report")
    except ImportError:
        return []
    header = getattr(report, "header_lines", None)
    return list(header(hardware)) if callable(header) else []


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

