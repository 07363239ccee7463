"""Guard against rules drifting from the installed LMDeploy: ``--lm-verify-rules`` and the header's note.

With ``--lm-verify-rules[=PYTHON]`` (ini ``lm_verify_rules``) the session asks the real LMDeploy of that
interpreter (default: this one, when it has ``lmdeploy``), in a subprocess through the oracle bridge,
what it picks for every model a test binds, once per model and session, and a test whose model the
rules answer otherwise fails, naming the model, both releases and both answers. LMDeploy is never
imported into pytest. ``compare`` and ``ask`` are shared with ``python -m pytest_lmbackend audit``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.oracle import Answer, Oracle
    from pytest_lmbackend.rules import Detection

OPTION = "--lm-verify-rules"
INI = "lm_verify_rules"
THIS = "this interpreter"  # the option given without a value (settings.VERIFY_THIS)
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


# -- the comparison (pure) ----------------------------------------------------------------------------

def shown(outcome: Detection | ConfigError | Answer) -> str:
    """An answer as ``backend/task``, or the error it is."""
    from pytest_lmbackend.oracle import Answer

    if isinstance(outcome, Answer):
        return outcome.error if outcome.error else f"{outcome.backend}/{outcome.task}"
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__}: {outcome}"
    return f"{outcome.backend}/{outcome.task}"


def compare(ours: Detection | ConfigError, theirs: Answer) -> str | None:
    """Why our rules and the real LMDeploy disagree on one model, or None when they agree: both
    answer the same backend and task, or both fail (a typed error here where LMDeploy raises)."""
    if theirs.error is not None:
        if isinstance(ours, Exception):
            return None
        return f"LMDeploy raises {theirs.error}, but the rules answer {shown(ours)}"
    if isinstance(ours, Exception):
        return f"LMDeploy answers {shown(theirs)}, but the rules raise {shown(ours)}"
    if (ours.backend, ours.task) != (theirs.backend, theirs.task):
        return f"the rules answer {shown(ours)}, LMDeploy answers {shown(theirs)}"
    return None


@dataclass(frozen=True)
class Check:
    """One model: our rules' answer, the real LMDeploy's, and why they differ (None: they agree)."""

    label: str
    rules: str
    """The release whose rules answered."""
    lmdeploy: str
    """The real LMDeploy's version."""
    ours: Detection | ConfigError
    theirs: Answer
    disagreement: str | None

    @property
    def unasked(self) -> bool:
        """The bridge could not put this model to LMDeploy (its worker refused it)."""
        return (self.theirs.error or "").startswith("OracleFault")

    def message(self) -> str:
        """One line, safe for a terminal (labels and error texts come from config files)."""
        from pytest_lmbackend.display import printable

        return printable(f"{self.label}: the rules of LMDeploy {self.rules} answer {shown(self.ours)}; the "
                         f"real LMDeploy {self.lmdeploy} answers {shown(self.theirs)}")


def detect_outcome(source: str | Mapping[str, Any], release: str) -> Detection | ConfigError:
    from pytest_lmbackend.config import ConfigError
    from pytest_lmbackend.rules import detect

    try:
        return detect(source, lmdeploy=release)
    except ConfigError as exc:
        return exc


def ask(oracle: Oracle, sources: Sequence[str | Mapping[str, Any]], labels: Sequence[str],
        ours: Sequence[Detection | ConfigError], release: str) -> list[Check]:
    """Put ``sources`` to the real LMDeploy behind ``oracle`` in one batch and compare each answer
    with ``ours`` (the rules of ``release``)."""
    answers = oracle.detect(list(sources))
    version = str(oracle.info.get("lmdeploy", "?"))
    return [Check(label, release, version, mine, theirs, compare(mine, theirs))
            for label, mine, theirs in zip(labels, ours, answers, strict=True)]


def default_python(origin: str = OPTION, how: str = f"{OPTION}=/path/to/python") -> str:
    """This interpreter, when it has LMDeploy (found by metadata or ``find_spec``: never imported).

    :param origin: what asked (the error's prefix); :param how: how to name another interpreter.
    """
    import importlib.util

    from pytest_lmbackend.rules.releases import installed_lmdeploy

    if installed_lmdeploy() is None and importlib.util.find_spec("lmdeploy") is None:
        raise ValueError(f"{origin}: lmdeploy is not installed in this interpreter ({sys.executable}); "
                         f"name one that has it: {how}")
    return sys.executable


def interpreter(text: str, origin: str = OPTION,
                how: str = f"write {OPTION}=PYTHON, or put the option after the test paths") -> str:
    """A Python interpreter given by path (or found on PATH): an executable file, not a folder."""
    import shutil

    path = Path(text).expanduser()
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(text) if os.sep not in text else None
    if found:
        return found
    why = "a folder" if path.is_dir() else "not an executable file"
    raise ValueError(f"{origin}: {text!r} is {why}, not a Python interpreter ({how})")


def parse_setting(text: str) -> str:
    """``settings.VERIFY_RULES``' parse function, for the option's value and the ini text alike:
    ``THIS`` for the bare option or a yes, ``""`` for a no, else the interpreter as written (looked for
    by ``requested``, relative to the ini file's folder when the ini key names it)."""
    value = text.strip()
    if value == THIS or value.lower() in _ON:
        return THIS
    if value.lower() in _OFF:
        return ""
    return value


# -- the plugin side ----------------------------------------------------------------------------------

class Verifier:
    """One session's guard: the interpreter to ask, its oracle (started on first use), checks per model."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.oracle: Oracle | None = None
        self.failure: str | None = None
        self.checks: dict[str, Check] = {}
        self.warned = False

    def checks_for(self, state: Any, items: Sequence[pytest.Item]) -> None:
        """Ask LMDeploy, in one batch, about every model the session's items bind and no one asked yet."""
        from pytest_lmbackend.session import MARKS_KEY

        release = str(state.release_for(0))  # the rules the session's own decisions used
        wanted: dict[str, Any] = {}
        for item in items:
            marks = item.stash.get(MARKS_KEY, None)
            model = getattr(marks, "model", None)
            if model is not None and model.key not in self.checks:
                wanted.setdefault(model.key, model)
        if not wanted or self.failure is not None:
            return
        from pytest_lmbackend.oracle import Oracle, OracleError

        models = list(wanted.values())
        ours = [_ours(state, m) for m in models]
        try:
            if self.oracle is None:
                self.oracle = Oracle(release, python=Path(self.python), timeout=120)
            labels = [m.describe() for m in models]
            checks = ask(self.oracle, [m.source for m in models], labels, ours, release)
        except OracleError as exc:
            self.failure = f"{OPTION}: could not ask the LMDeploy of {self.python}: {exc}"
            return
        for model, check in zip(models, checks, strict=True):
            self.checks[model.key] = check

    def close(self) -> None:
        if self.oracle is not None:
            self.oracle.close()
            self.oracle = None


def _ours(state: Any, model: Any) -> Detection | ConfigError:
    from pytest_lmbackend.config import ConfigError

    try:
        found: Detection = state.detect(model)  # the answer auto used, cached per model
    except ConfigError as exc:
        return exc
    return found


VERIFIER_KEY: pytest.StashKey[Verifier] = pytest.StashKey()


def requested(config: pytest.Config) -> str | None:
    """The interpreter to verify against, or None when verification is off.

    :raises ValueError: a bad interpreter, or no LMDeploy in this interpreter.
    """
    from pytest_lmbackend import settings

    text = settings.value(config, settings.VERIFY_RULES)
    origin = settings.origin(config, settings.VERIFY_RULES)
    if not text:
        return None
    if text == THIS:
        return default_python()
    if origin.startswith("ini") and os.sep in text and not Path(text).expanduser().is_absolute():
        base = config.inipath.parent if config.inipath else config.rootpath
        text = str(base / text)
    return interpreter(text, origin=origin)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        python = requested(config)
    except ValueError as exc:
        from pytest_lmbackend.display import printable

        raise pytest.UsageError(printable(exc)) from None
    if python is not None:
        config.stash[VERIFIER_KEY] = Verifier(python)


def pytest_unconfigure(config: pytest.Config) -> None:
    verifier = config.stash.get(VERIFIER_KEY, None)
    if verifier is not None:
        verifier.close()


def newer_line(version: str, whose: str) -> str:
    """The header's note on an LMDeploy newer than the newest rules (``whose``: installed, asked for,
    stated by a profile); not escaped."""
    from pytest_lmbackend.rules.releases import KNOWN_RELEASES

    newest = KNOWN_RELEASES[-1]
    return (f"lmbackend: LMDeploy {version} ({whose}) is newer than the newest rules known here ({newest}): "
            f"{newest}'s rules answer for it")


def header_lines(config: pytest.Config) -> list[str]:
    """What the header says about the rules against the LMDeploy in use: a release newer than the
    newest rules (suggesting --lm-verify-rules), and the interpreter being verified against."""
    from pytest_lmbackend.rules.releases import installed_lmdeploy, newer_than_known

    lines = []
    from pytest_lmbackend import settings

    asked = settings.value(config, settings.LMDEPLOY)
    version = asked or installed_lmdeploy()
    verifier = config.stash.get(VERIFIER_KEY, None)
    if newer_than_known(version):
        whose = "asked for" if asked else "installed"
        hint = "" if verifier is not None else f"; check them against it with {OPTION}"
        lines.append(newer_line(str(version), whose) + hint)
    if verifier is not None:
        lines.append(f"lmbackend: {OPTION}: each bound model is checked against the real LMDeploy of "
                     f"{verifier.python}")
    from pytest_lmbackend.display import printable

    return [printable(line) for line in lines]  # the version and the path come from outside


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    verifier = item.config.stash.get(VERIFIER_KEY, None)
    if verifier is None:
        return
    from pytest_lmbackend.session import MARKS_KEY, session_state

    model = getattr(item.stash.get(MARKS_KEY, None), "model", None)
    if model is None:
        return
    state = session_state(item.config)
    if model.key not in verifier.checks:
        # the first bound test asks about every model of the session at once (one start of LMDeploy)
        verifier.checks_for(state, item.session.items)
    if verifier.failure is not None:
        pytest.fail(verifier.failure, pytrace=False)
    check = verifier.checks.get(model.key)
    if check is None:
        return
    if check.unasked:
        if not verifier.warned:
            verifier.warned = True
            item.warn(pytest.PytestWarning(f"{OPTION}: not verified: {check.message()}"))
        return
    if check.disagreement is not None:
        pytest.fail(f"rules drifted from the real LMDeploy: {check.message()}; the backend chosen here "
                    f"follows the rules of {check.rules}", pytrace=False)
