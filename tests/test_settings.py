"""Settings: each option and ini key parsed once by the function registered with it; bad values are
usage errors naming the option or the key."""

from __future__ import annotations

import argparse

import pytest

from pytest_lmbackend import settings
from pytest_lmbackend.leak import parse_threshold
from pytest_lmbackend.requirements import KINDS
from pytest_lmbackend.settings import (
    BackendMode,
    Setting,
    known_kinds,
    parse_backend_option,
    parse_bool,
    parse_engine_options,
    parse_kinds,
    parse_positive_int,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", BackendMode("auto")),
        (" all ", BackendMode("all")),
        ("none", BackendMode("none")),
        ("pytorch", BackendMode("names", ("pytorch",))),
        ("turbomind,pytorch,turbomind", BackendMode("names", ("turbomind", "pytorch"))),
    ],
)
def test_parse_backend_option(text: str, expected: BackendMode) -> None:
    assert parse_backend_option(text) == expected


@pytest.mark.parametrize("text", ["", "pytorch,", "auto,pytorch", "py torch", "tm;pt"])
def test_parse_backend_option_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_backend_option(text)


def test_parse_kinds() -> None:
    assert parse_kinds("gpu, capability, free-vram") == frozenset({"gpu", "capability", "free_vram"})
    assert parse_kinds("all") == frozenset(known_kinds()) >= frozenset({*KINDS, "backend", "model"})
    with pytest.raises(argparse.ArgumentTypeError):
        parse_kinds(",")
    # the plural is not a kind: a requirement kind is `gpu`
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown kind.*gpus"):
        parse_kinds("gpus")
    # `all` beside a typo still names the typo
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown kind\(s\) junk;"):
        parse_kinds("all,junk")


@pytest.mark.parametrize("text", ["²", "١", "0", "-1", "1.5", "", "one"])
def test_positive_int_takes_ascii_digits_only(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_positive_int(text)


def test_bool_and_engine_options() -> None:
    assert [parse_bool(t) for t in ("true", "On", "1", "no", "F")] == [True, True, True, False, False]
    with pytest.raises(argparse.ArgumentTypeError, match="'maybe' is not true or false"):
        parse_bool("maybe")
    assert dict(parse_engine_options("tp = 2\n\nname = x-y\n")) == {"tp": 2, "name": "x-y"}
    with pytest.raises(argparse.ArgumentTypeError, match="'tp: 2' is not key=value"):
        parse_engine_options("tp: 2")


def test_threshold_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="memory size"):
        parse_threshold("9" * 400 + "GiB")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_threshold("1e999GiB")


def test_each_value_is_parsed_once(pytester: pytest.Pytester) -> None:
    calls: list[str] = []

    def counting(text: str) -> str:
        calls.append(text)
        return settings.LEAK.parse(text)

    config = pytester.parseconfig("-o", "lm_leak=warn")  # not configured: nothing read it yet
    counted = Setting("lm_leak", counting, "off", help="")
    assert settings.value(config, counted) == "warn"
    assert settings.value(config, counted) == "warn"
    assert settings.origin(config, counted) == "ini lm_leak"
    assert calls == ["warn"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "lm_pipeline_cache=²"], "*ini lm_pipeline_cache: '²' is not a whole number >= 1*"),
        (["-o", "lm_leak=loud"], "*ini lm_leak: must be one of off, warn, fail; got 'loud'*"),
        (["-o", "lm_require=all,junk"], "*ini lm_require: unknown kind(s) junk; known: gpu, *"),
        (["-o", "lm_strict_fallback=maybe"], "*ini lm_strict_fallback: 'maybe' is not true or false*"),
        (["-o", "lm_plan=maybe"], "*ini lm_plan: 'maybe' is not true or false*"),
        (["-o", "lm_engine_options=tp"], "*ini lm_engine_options: 'tp' is not key=value*"),
        (["--lm-require=all,junk"], "*argument --lm-require: unknown kind(s) junk*"),
        ([f"--lm-leak-threshold={'9' * 400}GiB"], "*argument --lm-leak-threshold: memory size*"),
    ],
)
def test_bad_values_are_usage_errors_naming_where(pytester: pytest.Pytester, args: list[str],
                                                  message: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:xdist", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([message])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_require_help_names_the_kind(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    help_text = " ".join(result.stdout.str().split())
    assert "--lm-require=KIND[,KIND]" in help_text
    assert "(e.g. backend,gpu,capability; all)" in help_text
    assert "gpus," not in help_text.split("--lm-require=KIND[,KIND]")[1].split("--lm-")[0]
