"""The plugin's settings: each ``--lm-*`` option and its ini key, parsed once by the function registered
with both (argparse ``type=`` for the option, the same function for the ini text).

Every setting of every part (leak check, xdist, ``lm_isolated``, fleet, rules check) is listed here, so
that the plugin registers them all without importing those parts: a part is loaded when a session uses
it. Their parse functions live with the part and are imported when a value is parsed (``_lazy``).
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

import pytest

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

Mode = Literal["auto", "all", "none", "names"]
KEYWORDS: tuple[str, ...] = ("auto", "all", "none")
# --lm-require accepts these besides the kinds a requirement reports.
PLUGIN_KINDS: tuple[str, ...] = ("backend", "model", "fleet")
GROUPINGS: tuple[str, ...] = ("parent", "session", "off")


@dataclass(frozen=True)
class Setting(Generic[T_co]):
    """One setting: the option ``flag`` (``None``: ini only) and the ini key ``name``, which is also the
    option's ``dest``. ``parse`` reads the text of either; ``env`` (if any) outranks the ini key, as
    ``PYTEST_ADDOPTS`` does; ``default`` is the value when none of them is given."""

    name: str
    parse: Callable[[str], T_co]
    default: T_co
    help: str
    flag: str | None = None
    env: str | None = None
    linelist: bool = False

    def add(self, parser: pytest.Parser, *, metavar: str | None = None, **option: Any) -> None:
        """Register the option (in the plugin's group) and the ini key. ``option`` goes to argparse; a
        flag with an ``action`` (``store_true``) takes no ``type=``."""
        _ADDED[self.name] = self
        if self.flag is not None:
            if "action" not in option:
                option["type"] = self.parse
            if metavar is not None:
                option["metavar"] = metavar
            where = f"ini: {self.name}" + (f"; env: {self.env}" if self.env else "")
            parser.getgroup("lmbackend").addoption(self.flag, dest=self.name, default=None,
                                                   help=f"{self.help} {where}.", **option)
        if self.linelist:
            parser.addini(self.name, self.help, type="linelist", default=[])
        else:
            parser.addini(self.name, self.help, type="string", default="")


_VALUES_KEY = pytest.StashKey[dict[str, tuple[Any, str]]]()
_ADDED: dict[str, Setting[Any]] = {}  # every setting registered, by name


def any_given(config: pytest.Config) -> bool:
    """Whether the session states any of the plugin's settings: an ``--lm-*`` option, its environment
    variable or its ini key. Without one (and without the plugin's markers or fixtures) the plugin is
    installed but not used."""
    return any(given(config, setting) for setting in _ADDED.values())


def value(config: pytest.Config, setting: Setting[T]) -> T:
    """The setting's value: the option's (parsed by argparse), else the environment's, else the ini
    key's, each parsed with the setting's function, once per session; else its default.

    :raises pytest.UsageError: a value that cannot be parsed, naming ``ini KEY`` or ``$ENV``.
    """
    return read(config, setting)[0]  # type: ignore[no-any-return]


def origin(config: pytest.Config, setting: Setting[Any]) -> str:
    """Where the value came from, for messages: ``--lm-x``, ``$ENV``, ``ini lm_x`` or ``default``."""
    return read(config, setting)[1]


def given(config: pytest.Config, setting: Setting[Any]) -> bool:
    """Whether the session states the setting at all (option, environment or ini key)."""
    return origin(config, setting) != "default"


def read(config: pytest.Config, setting: Setting[Any]) -> tuple[Any, str]:
    cache = config.stash.setdefault(_VALUES_KEY, {})
    if setting.name not in cache:
        cache[setting.name] = _read(config, setting)
    return cache[setting.name]


def _read(config: pytest.Config, setting: Setting[Any]) -> tuple[Any, str]:
    import os

    option = config.getoption(setting.name, None) if setting.flag is not None else None
    if option is not None:
        return option, str(setting.flag)
    text = os.environ.get(setting.env, "").strip() if setting.env else ""
    where = f"${setting.env}"
    if not text:
        try:
            raw = config.getini(setting.name)
        except ValueError:  # the key is not registered: this plugin is not loaded in that config
            raw = ""
        text = "\n".join(raw) if isinstance(raw, list) else str(raw or "").strip()
        where = f"ini {setting.name}"
    if not text:
        return setting.default, "default"
    try:
        return setting.parse(text), where
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None


# --- parse functions ------------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """``true``/``false`` and pytest's other spellings of a yes or a no (``1``, ``on``, ``no`` ...)."""
    value = text.strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def parse_positive_int(text: str) -> int:
    """A whole number >= 1 in ASCII digits (``int()`` alone would take ``'²'`` or ``'١'``)."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(value)


def parse_marker_sets(text: str) -> frozenset[str]:
    """``lm_markers``: whose marker names the plugin reads besides its own (``lmdeploy``), or none."""
    from pytest_lmbackend.markers import MARKER_SETS

    names = {n.strip().lower() for n in text.replace(",", " ").split()}
    unknown = sorted(names - set(MARKER_SETS) - {"none"})
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown marker set(s) {', '.join(unknown)}; known: "
                                         f"{', '.join(MARKER_SETS)}, none")
    return frozenset(names - {"none"})


def parse_parameter_names(text: str) -> tuple[str, ...]:
    """Test parameters' names (``backend``, ``backend run_config``): Python identifiers, separated by
    spaces or commas; none for an empty value."""
    names = tuple(text.replace(",", " ").split())
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a parameter name")
    return tuple(dict.fromkeys(names))


def parse_grouping(text: str) -> str:
    value = text.strip().lower()
    if value not in GROUPINGS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(GROUPINGS)}")
    return value


@dataclass(frozen=True)
class BackendMode:
    """The parsed ``--lm-backend`` value."""

    mode: Mode
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ",".join(self.names) if self.mode == "names" else self.mode


def parse_backend_option(text: str) -> BackendMode:
    """``auto``, ``all``, ``none`` or ``NAME[,NAME...]``; names are checked for shape here and against
    the registered backends once plugins have loaded (``selection.check_backend_names``)."""
    value = text.strip()
    if value in KEYWORDS:
        return BackendMode(value)  # type: ignore[arg-type]
    names: list[str] = []
    for piece in value.split(","):
        name = piece.strip()
        if not name or not all(ch.isalnum() or ch in "_-." for ch in name):
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected auto, all, none or backend names separated by commas"
            )
        if name in KEYWORDS:
            raise argparse.ArgumentTypeError(f"{text!r}: {name!r} cannot be combined with backend names")
        if name not in names:
            names.append(name)
    return BackendMode("names", tuple(names))


def parse_release(text: str) -> str:
    """An LMDeploy version such as ``0.18.0`` (checked against the known releases at configure)."""
    value = text.strip()
    if not value or not all(ch.isalnum() or ch in ".+-" for ch in value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected an LMDeploy version such as 0.18.0")
    return value


def parse_profiles(text: str) -> tuple[str, ...]:
    """``PROFILE|FILE[,...]``: one or more profile names or files."""
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a profile name or file, or several with commas")
    return names


def known_kinds() -> tuple[str, ...]:
    """Every kind ``--lm-require`` accepts: the requirements' kinds and the plugin's own."""
    from pytest_lmbackend.requirements import KINDS

    return tuple(dict.fromkeys((*KINDS, *PLUGIN_KINDS)))


def parse_kinds(text: str) -> frozenset[str]:
    """``KIND[,KIND...]`` (``free-vram`` = ``free_vram``), or ``all`` for every kind; an unknown kind is
    named, with or without ``all`` beside it."""
    kinds = {k.strip().replace("-", "_") for k in text.split(",") if k.strip()}
    known = known_kinds()
    if not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: expected requirement kinds separated by commas")
    unknown = sorted(kinds - set(known) - {"all"})
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {', '.join(unknown)}; "
                                         f"known: {', '.join(known)}, all")
    return frozenset(known) if "all" in kinds else frozenset(kinds)


def parse_engine_options(text: str) -> Mapping[str, Any]:
    """``key = value`` lines; a value is a Python literal, else the text as written."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise argparse.ArgumentTypeError(f"{line.strip()!r} is not key=value")
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return MappingProxyType(out)


def _lazy(module: str, name: str) -> Callable[[str], Any]:
    """The parse function ``name`` of ``module``, imported when a value is first parsed."""

    def parse(text: str) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(text)

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def add_all(parser: pytest.Parser) -> None:
    """Register every setting's option and ini key (the plugin's ``pytest_addoption``)."""
    parser.getgroup("lmbackend", "LLM backends and hardware (pytest-lmbackend)")
    BACKEND.add(parser, metavar="auto|all|none|NAME[,NAME]")
    LMDEPLOY.add(parser, metavar="VERSION")
    HARDWARE.add(parser, metavar="PROFILE|FILE[,..]")
    PLAN.add(parser, action="store_true")
    REQUIRE.add(parser, metavar="KIND[,KIND]")
    STRICT_FALLBACK.add(parser, action="store_true")
    parser.getgroup("lmbackend").addoption(
        "--no-lm-strict-fallback", dest=STRICT_FALLBACK.name, action="store_false",
        help="allow LMDeploy's silent fallback to another engine.",
    )
    for setting in (PIPELINE_CACHE, GROUP_BY_ENGINE, ENGINE_OPTIONS, MARKERS, BACKEND_PARAM):
        setting.add(parser)
    FLEET.add(parser, metavar="PROFILE[,PROFILE..]")
    RUNNER.add(parser, metavar="NAME")
    PLAN_JSON.add(parser, metavar="FILE")
    VERIFY_RULES.add(parser, metavar="PYTHON", nargs="?", const=VERIFY_THIS)
    GPUS_PER_WORKER.add(parser, metavar="N|N0,N1,..")
    LEAK.add(parser, metavar="off|warn|fail")
    LEAK_THRESHOLD.add(parser, metavar="SIZE")
    LEAK_WAIT.add(parser, metavar="SECONDS")
    ISOLATED_TIMEOUT.add(parser, metavar="SECONDS")


# --- the backend axis and the hardware -----------------------------------------------------------

BACKEND = Setting(
    "lm_backend", parse_backend_option, BackendMode("auto"), flag="--lm-backend",
    help="backends for backend-bound tests: auto (LMDeploy's pick per model; best available otherwise), "
         "all (one item per backend), none, or names (default auto).")
LMDEPLOY: Setting[str | None] = Setting(
    "lm_lmdeploy", parse_release, None, flag="--lm-lmdeploy",
    help="LMDeploy release whose detection rules decide auto (default: installed, else newest).")
HARDWARE: Setting[tuple[str, ...]] = Setting(
    "lm_hardware", parse_profiles, (), flag="--lm-hardware", env="PYTEST_LM_HARDWARE",  # hardware.ENV_PROFILE
    help="fake hardware profile(s) instead of probing; several only with --lm-plan.")
PLAN = Setting(
    "lm_plan", parse_bool, False, flag="--lm-plan",
    help="print which tests would run or skip, and why, per hardware profile; run nothing.")
REQUIRE: Setting[frozenset[str]] = Setting(
    "lm_require", parse_kinds, frozenset(), flag="--lm-require",
    help="unmet requirements of these kinds (e.g. backend,gpu,capability; all) fail instead of skip.")
STRICT_FALLBACK: Setting[bool | None] = Setting(
    "lm_strict_fallback", parse_bool, None, flag="--lm-strict-fallback",
    help="fail when LMDeploy silently runs another engine than the test's backend "
         "(default: on with --lm-backend=auto).")
PIPELINE_CACHE = Setting(
    "lm_pipeline_cache", parse_positive_int, 1,
    help="how many pipelines lm_pipeline keeps alive at once (default 1).")
GROUP_BY_ENGINE = Setting(
    "lm_group_by_engine", parse_grouping, "parent",
    help="bring tests sharing an lm_pipeline together: 'parent' (within their module or class, the "
         "default), 'session' (across modules: module and class fixtures may then be set up twice) or 'off'.")
ENGINE_OPTIONS: Setting[Mapping[str, Any]] = Setting(
    "lm_engine_options", parse_engine_options, MappingProxyType({}), linelist=True,
    help="engine options as key=value lines (Python literals), for lm_backend_config and lm_pipeline.")

MARKERS: Setting[frozenset[str]] = Setting(
    "lm_markers", parse_marker_sets, frozenset(),
    help="other suites' marker names the plugin reads besides its own: lmdeploy (turbomind, pytorch, "
         "not_turbomind, not_pytorch, gpu_num_N, gpu_num_distributed_*, registered then), or none (the "
         "default: those names are other plugins' or the suite's own business).")
BACKEND_PARAM: Setting[tuple[str, ...]] = Setting(
    "lm_backend_param", parse_parameter_names, (),
    help="the suite's own test parameter(s) that name the backend (LMDeploy's suites: backend), as text, "
         "an LMDeploy engine-config class or a mapping's 'backend' entry: each such test needs that "
         "backend available, skips where its not_<backend> marker excludes it, and --lm-backend=NAME "
         "deselects those of other backends.")

# --- fleet mode (fleet/plugin.py) ----------------------------------------------------------------

ENV_RUNNER = "PYTEST_LM_RUNNER"
FLEET: Setting[tuple[str, ...] | None] = Setting(
    "lm_fleet", _lazy("pytest_lmbackend.fleet.plugin", "parse_fleet_option"), None, flag="--lm-fleet",
    help="the CI fleet, cheapest runner first (shipped profile names or files, separated by commas or, in "
         "the ini file, lines; files relative to the ini file there): each test goes to the first runner "
         "that can run it.")
RUNNER: Setting[str | None] = Setting(
    "lm_runner", _lazy("pytest_lmbackend.fleet.plugin", "parse_runner_option"), None, flag="--lm-runner",
    env=ENV_RUNNER,
    help="this job is runner NAME of the fleet: run only the tests assigned to it, after checking that "
         "this machine is what its profile claims.")
PLAN_JSON: Setting[str | None] = Setting(
    "lm_plan_json", _lazy("pytest_lmbackend.fleet.plugin", "parse_path_option"), None, flag="--lm-plan-json",
    help="with a fleet: write the assignment as JSON (fleet, runners, orphans, reasons) for a CI matrix; "
         "runs nothing, as --lm-plan.")

# --- the rules checked against a real LMDeploy (verify.py) ---------------------------------------

VERIFY_THIS = "this interpreter"  # the option given without a value
VERIFY_RULES: Setting[str] = Setting(
    "lm_verify_rules", _lazy("pytest_lmbackend.verify", "parse_setting"), "", flag="--lm-verify-rules",
    help="ask the real LMDeploy of PYTHON (default: this interpreter; ini: true, false or a path) what it "
         "picks for each model a test binds, and fail tests whose model the rules answer otherwise.")

# --- scale-out: xdist GPU pinning, the leak check, lm_isolated -----------------------------------

WORKER_GPUS_ENV = "PYTEST_LM_WORKER_GPUS"  # a pinned worker's own copy of its slice (xdist.SLICE_ENV)
GPUS_PER_WORKER: Setting[tuple[int, ...] | Literal["auto"]] = Setting(
    "lm_gpus_per_worker", _lazy("pytest_lmbackend.xdist.slicing", "parse_gpus_per_worker"), (),
    flag="--lm-gpus-per-worker",
    help="with pytest-xdist, pin GPUs: each worker gets its own N of the visible GPUs (default: no "
         "pinning; 0 too); auto: N is the selected tests' largest need; -n auto starts GPUs // N workers. "
         "More workers than slices hold none and run what needs no GPU. A list gives each worker its own "
         "size (4,1,1: one wide worker); multi-GPU tests go to a worker holding enough.")
LeakMode = Literal["off", "warn", "fail"]
LEAK: Setting[LeakMode] = Setting(
    "lm_leak", _lazy("pytest_lmbackend.leak", "parse_mode"), "off", flag="--lm-leak",
    help="after each GPU test, compare its GPUs' used memory (NVML) with before it; warn or fail above "
         "--lm-leak-threshold (default off).")
LEAK_THRESHOLD: Setting[int] = Setting(
    "lm_leak_threshold", _lazy("pytest_lmbackend.leak", "parse_threshold"), 64 * 1024**2,
    flag="--lm-leak-threshold", help="growth a GPU test may leave, e.g. 64MiB (the default) or 1GiB.")
LEAK_WAIT: Setting[float] = Setting(
    "lm_leak_wait", _lazy("pytest_lmbackend.leak", "parse_wait"), 1.0, flag="--lm-leak-wait",
    help="how long to wait for asynchronous release before reporting (default 1).")
ISOLATED_CHILD_ENV = "PYTEST_LM_ISOLATED_REPORTS"  # set in lm_isolated's child: where its reports go
ISOLATED_TIMEOUT: Setting[float] = Setting(
    "lm_isolated_timeout", _lazy("pytest_lmbackend.isolation", "parse_timeout"), 900.0,
    flag="--lm-isolated-timeout",
    help="limit for each lm_isolated test's process, in seconds; 0 for none (default 900).")
