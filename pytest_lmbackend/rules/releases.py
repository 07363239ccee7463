"""Known LMDeploy releases, the rule set of each, and which release a version spec means."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, replace
from functools import cache

from pytest_lmbackend.rules.tables import CHANGES, RELEASES

__all__ = [
    "KNOWN_RELEASES",
    "NewerReleaseWarning",
    "RuleSet",
    "UnknownReleaseError",
    "default_release",
    "installed_lmdeploy",
    "newer_than_known",
    "resolve_release",
    "rule_set",
    "rules_for",
    "since",
]

KNOWN_RELEASES: tuple[str, ...] = RELEASES


@dataclass(frozen=True)
class RuleSet:
    """Everything one LMDeploy release decides backend and task by (see ``tables.CHANGES``)."""

    release: str
    tm_archs: frozenset[str] = frozenset()
    vl_archs: frozenset[str] = frozenset()
    workspace_is_tm: bool = False
    workspace_task_llm: bool = False
    workspace_arch: bool = False
    smooth_quant_pt: bool = False
    baichuan_40_heads_pt: bool = False
    head_dim_archs: frozenset[str] = frozenset()
    head_dims: frozenset[int] = frozenset()
    explicit_head_dim: bool = False
    chatglm_archs: frozenset[str] = frozenset()
    chatglm_vision_pt: bool = False
    internvl_head_dim: bool = False
    internvl_llm_in_table: bool = False
    llava_archs: frozenset[str] = frozenset()
    molmo_kv_heads: bool = False
    vision_pt_archs: frozenset[str] = frozenset()
    xcomposer2_auto_map: bool = False
    language_config_auto_map: bool = False
    deepseek_vl: bool = False
    qwen_visual_vl: bool = False
    chatglm_vl_archs: frozenset[str] = frozenset()
    not_vl_archs: frozenset[str] = frozenset()
    not_vl_tm_only: bool = False
    llm_only_switch: str | None = None
    trust_remote_code: bool = True
    task_reads_raw_json: bool = False
    null_quant_raises: bool = False
    transformers_major: int = 4
    transformers: str = "4.51.3"
    registered_types: frozenset[str] = frozenset()
    pytorch_config_wins: bool = False


class UnknownReleaseError(ValueError):
    """A version spec that names no known LMDeploy release."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        super().__init__(
            f"LMDeploy version {spec!r}: {reason}; known releases: {', '.join(KNOWN_RELEASES)}"
        )


_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.?post(\d+))?$", re.ASCII)  # int() reads '١'


# pre-releases as PEP 440 spells them, separators included (0.18.0rc1, 0.18.0-rc1, 0.18.0.dev0)
_PRE_RELEASE = re.compile(r"^v?(\d+\.\d+(?:\.\d+)?)(?:[-_.]?(a|b|rc|dev)\d*)?(?:\+[A-Za-z0-9.]+)?$",
                          re.ASCII)


def _key(spec: str) -> tuple[int, int, int, int] | None:
    match = _VERSION.match(spec.strip())
    if match is None:
        return None
    major, minor, patch, post = match.groups()
    return (int(major), int(minor), int(patch or 0), int(post or 0))


_KEYS: tuple[tuple[int, int, int, int], ...] = tuple(k for k in map(_key, RELEASES) if k is not None)
assert len(_KEYS) == len(RELEASES) and list(_KEYS) == sorted(_KEYS)


def _spec_key(spec: str) -> tuple[int, int, int, int]:
    text = spec.strip()
    key = _key(text)
    if key is None:
        # Pre-releases and local builds (0.14.0a1, 0.7.3+cu118, 0.10.0rc1) keep the rules of the release
        # before them: strip the suffix and step just below the release they lead up to.
        match = _PRE_RELEASE.match(text)
        if match is None:
            raise UnknownReleaseError(spec, "not a version number (MAJOR.MINOR[.PATCH], then an optional "
                                            "post, aN/bN/rcN/devN or +local part)")
        base = _key(match.group(1))
        assert base is not None
        if match.group(2):
            base = (base[0], base[1], base[2], -1)
        key = base
    return key


def newer_than_known(version: str | None) -> bool:
    """Whether ``version`` is newer than the newest release these rules know (its rules may have
    changed since); False for None and for anything that is not a version."""
    if not isinstance(version, str):
        return False
    try:
        return _spec_key(version) > _KEYS[-1]
    except UnknownReleaseError:
        return False


class NewerReleaseWarning(UserWarning):
    """An LMDeploy newer than the newest release these rules know: the newest rules answer for it."""


_CHECKED: set[str | None] = set()


def rules_for(spec: str | None) -> RuleSet:
    """The rules a version spec means (None: the installed LMDeploy's, else the newest), warning once
    per spec, with ``NewerReleaseWarning``, when it is newer than every release known here: the
    Python API's entry points answer through this."""
    if spec is not None and not isinstance(spec, str):
        raise UnknownReleaseError(repr(spec), "a version must be a string")
    release = resolve_release(spec)
    if spec not in _CHECKED:
        _CHECKED.add(spec)
        version = installed_lmdeploy() if spec is None else spec
        if newer_than_known(version):
            import warnings

            whose = "installed" if spec is None else "asked for"
            warnings.warn(
                f"LMDeploy {version} ({whose}) is newer than the newest release these rules know "
                f"({RELEASES[-1]}); answering with {release}'s rules, which may have changed since: "
                "check them against the real LMDeploy with pytest --lm-verify-rules or "
                "python -m pytest_lmbackend audit --python PYTHON DIR",
                NewerReleaseWarning, stacklevel=3,
            )
    return rule_set(release)


@cache
def resolve_release(spec: str | None) -> str:
    """The known release a version spec means: an exact release, or the newest known one at or
    below it (``0.7.3.dev1`` and ``0.7.4`` both mean 0.7.3); None means ``default_release()``.

    :raises UnknownReleaseError: malformed, or older than the oldest known release.
    """
    if spec is None:
        return default_release()
    if not isinstance(spec, str):
        raise UnknownReleaseError(repr(spec), "a version must be a string")
    key = _spec_key(spec)
    best = None
    for release, release_key in zip(RELEASES, _KEYS, strict=True):
        if release_key <= key:
            best = release
    if best is None:
        raise UnknownReleaseError(spec, f"older than the oldest known release {RELEASES[0]}")
    return best


def stated_release(chosen: str | None, stated: str | None) -> str:
    """The release whose rules decide for a machine described by a profile: ``chosen``
    (``--lm-lmdeploy``) when given, else the LMDeploy version the profile states, else the newest
    known; never what the machine running pytest has installed.

    :raises UnknownReleaseError: as ``resolve_release``.
    """
    spec = chosen or stated
    return resolve_release(spec) if spec else RELEASES[-1]


def installed_lmdeploy() -> str | None:
    """The installed LMDeploy's version, read from its metadata folder on ``sys.path`` (first match, as
    ``importlib.metadata`` finds it). Neither LMDeploy nor ``importlib.metadata`` is imported: the
    latter alone would double the start-up of ``detect``."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem, dot, kind = name.rpartition(".")
            if dot and kind in ("dist-info", "egg-info"):
                project, _, rest = stem.partition("-")
                if project.lower().replace("_", "-") == "lmdeploy":
                    return rest.split("-")[0] if rest else _metadata_version(os.path.join(entry, name))
    return None


def _metadata_version(info: str) -> str | None:
    # A development install's ``lmdeploy.egg-info`` carries no version in its name.
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(info, meta), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Version:"):
                        return line.partition(":")[2].strip()
        except OSError:
            continue
    return None


@cache
def default_release() -> str:
    """The installed LMDeploy's release (or the newest known one at or below it); else the newest."""
    version = installed_lmdeploy()
    if version is not None:
        try:
            return resolve_release(version)
        except UnknownReleaseError:
            pass
    return RELEASES[-1]


def _build() -> dict[str, RuleSet]:
    sets: dict[str, RuleSet] = {}
    current = RuleSet(release="")
    changes = {c.release: c for c in CHANGES}
    for release in RELEASES:
        change = changes.get(release)
        if change is not None:
            current = replace(
                current,
                tm_archs=(current.tm_archs | set(change.tm_add)) - set(change.tm_remove),
                vl_archs=(current.vl_archs | set(change.vl_add)) - set(change.vl_remove),
                **change.switches,
            )
        current = replace(current, release=release)
        sets[release] = current
    return sets


_SETS: dict[str, RuleSet] = {}


def rule_set(release: str) -> RuleSet:
    """The rules of a release given exactly as in ``KNOWN_RELEASES`` (else resolved first)."""
    if not _SETS:
        _SETS.update(_build())  # on first use: importing the package stays cheap
    found = _SETS.get(release)
    return found if found is not None else _SETS[resolve_release(release)]


@cache
def since(release: str, arch: str, table: str = "tm") -> str | None:
    """The first release of the unbroken run, ending at ``release``, whose table has ``arch``."""
    index = RELEASES.index(release)
    first = None
    for i in range(index, -1, -1):
        rules = rule_set(RELEASES[i])
        archs = rules.tm_archs if table == "tm" else rules.vl_archs
        if arch not in archs:
            break
        first = RELEASES[i]
    return first


@cache
def left_in(release: str, arch: str) -> str | None:
    """The release that dropped ``arch`` from TurboMind's table, if it was ever there before ``release``."""
    index = RELEASES.index(release)
    for i in range(index, 0, -1):
        if arch in rule_set(RELEASES[i - 1]).tm_archs and arch not in rule_set(RELEASES[i]).tm_archs:
            return RELEASES[i]
    return None
