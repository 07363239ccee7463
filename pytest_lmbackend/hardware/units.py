"""Memory sizes, compute capabilities and durations as people write them: ``"40GiB"``, ``"8.0"``."""

from __future__ import annotations

import argparse
import re
from fractions import Fraction

_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
# "40G" could mean either: GPU tools say GiB where people write GB; it is refused, naming both
_AMBIGUOUS = {"k", "m", "g", "t"}
# ASCII digits only: Python's \d and int() also take "٤٠" or "４０", which no GPU tool writes
_SIZE = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_CAPABILITY = re.compile(r"^\s*([0-9]{1,4})\.([0-9]{1,4})\s*$")
# more memory than any device holds (16 EiB, NVML's 64-bit counters): a larger size is a typo, and
# one large enough would overflow a float (infinity) wherever it is shown
MAX_MEMORY = 2**64


def parse_memory(value: object) -> int:
    """Bytes from ``"40GiB"``, ``"40GB"`` (10^9), ``"40000MiB"``, ``"1.5 TiB"`` or an int (bytes).

    Read exactly (no float on the way), in ASCII digits, up to ``MAX_MEMORY`` (16 EiB).
    Raises ``ValueError`` naming the value for anything else (bools, negatives, unknown units, sizes
    beyond any device).
    """
    if isinstance(value, bool):
        raise ValueError(f"memory size must be an int (bytes) or a string like '40GiB', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory size must not be negative, got {value!r}")
        return _at_most_max(value, value)
    if not isinstance(value, str):
        raise ValueError(f"memory size must be an int (bytes) or a string like '40GiB', not {value!r}")
    match = _SIZE.match(value)
    if match is not None and match.group(1).startswith("-"):
        raise ValueError(f"memory size must not be negative, got {value!r}")
    if match is not None and match.group(2).lower() in _AMBIGUOUS:
        number, letter = match.group(1), match.group(2).upper()
        raise ValueError(f"memory size {value!r} is ambiguous: write {number}{letter}iB (powers of 1024, "
                         f"as nvidia-smi counts) or {number}{letter}B (powers of 1000)")
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"cannot read memory size {value!r}: use a number in ASCII digits and a unit "
            "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '40GiB'"
        )
    whole, _, fraction = match.group(1).partition(".")
    if len(whole.lstrip("0")) > 21:  # far beyond 2**64 bytes: said before any arithmetic on it
        raise ValueError(f"memory size {_short(value)} is too large: more than any device holds "
                         "(16 EiB at most)")
    if len(fraction) > 30:
        raise ValueError(f"memory size {_short(value)}: more decimals than a byte count needs (30 at most)")
    return _at_most_max(int(Fraction(match.group(1)) * _UNITS[match.group(2).lower()]), value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}...{text[-12:]} ({len(text)} characters)"


def _at_most_max(size: int, value: object) -> int:
    if size > MAX_MEMORY:
        raise ValueError(f"memory size {_short(value)} is too large: more than any device holds "
                         "(16 EiB at most)")
    return size


def format_memory(n: int | None) -> str:
    """``"80 GiB"``, ``"79.65 GiB"``, ``"512 MiB"``; ``"unknown"`` for None."""
    if n is None:
        return "unknown"
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            text = f"{n / size:.2f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


def parse_capability(value: object) -> tuple[int, int]:
    """``(8, 6)`` from ``"8.6"`` or ``(8, 6)`` / ``[8, 6]``; ``ValueError`` otherwise."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        return (value[0], value[1])
    if isinstance(value, str):
        match = _CAPABILITY.match(value)
        if match is not None:
            return (int(match.group(1)), int(match.group(2)))
    raise ValueError(f"cannot read compute capability {value!r}: write it as 'MAJOR.MINOR', e.g. '8.0'")


def format_capability(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """The leading numeric release of a version string: ``"12.8"`` -> (12, 8), ``"0.18.0+cu128"`` ->
    (0, 18, 0); None when there is none."""
    if not text:
        return None
    match = re.match(r"^\s*v?([0-9]{1,9}(?:\.[0-9]{1,9})*)", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.group(1).split("."))


def parse_seconds(text: str, option: str) -> float:
    """A duration option's value: seconds >= 0 (0 meaning none where the option says so).

    :raises argparse.ArgumentTypeError: naming ``option``, so argparse reports it as a usage error.
    """
    try:
        # float() also reads "٣" and "１０": seconds are written in ASCII like every other number here
        value = float(text) if text.isascii() else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses NaN and infinity (0 is how to say "none")
        raise argparse.ArgumentTypeError(f"{option} must be seconds >= 0, got {text!r}")
    return value
