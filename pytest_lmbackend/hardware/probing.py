"""One probe of the hardware, in order: fake profile, NVML, ``nvidia-smi``, else "no GPU"."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping

from pytest_lmbackend.hardware.model import MAX_NODES, NPU, Hardware, ProfileError, Source
from pytest_lmbackend.hardware.nvml import DriverView, ProbeFailed, read_nvml
from pytest_lmbackend.hardware.packages import detect_ascend, read_packages
from pytest_lmbackend.hardware.visibility import (
    ASCEND_MASK,
    Device,
    apply_npu_visibility,
    apply_visibility,
    order_warning,
)

ENV_PROFILE = "PYTEST_LM_HARDWARE"
ENV_NODES = "PYTEST_LM_NODES"
DEFAULT_TIMEOUT = 5.0


def profile_spec(profile: str | None, environ: Mapping[str, str]) -> str | None:
    """The profile asked for: the option's value, else ``$PYTEST_LM_HARDWARE``; None for a real probe."""
    spec = profile if profile is not None else environ.get(ENV_PROFILE)
    if spec is None:
        return None
    return spec.strip() or None


def job_nodes(environ: Mapping[str, str], notes: list[str]) -> int:
    """How many nodes this job spans: ``$PYTEST_LM_NODES`` (a multi-node job sets it on every node,
    as LMDeploy's distributed jobs set ``NODE_COUNT``), else 1; a bad value is a note and 1."""
    raw = environ.get(ENV_NODES, "").strip()
    if not raw:
        return 1
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_NODES:
        return int(raw)
    notes.append(f"{ENV_NODES}={raw!r} is not a whole number of nodes from 1 to {MAX_NODES}; using 1")
    return 1


def _read_smi(environ: Mapping[str, str], timeout: float) -> DriverView:
    # imported only when NVML could not answer: subprocess is not needed otherwise
    from pytest_lmbackend.hardware.smi import read_smi

    return read_smi(environ, timeout)


ENV_NVML_TIMEOUT = "PYTEST_LM_NVML_TIMEOUT"
# A healthy NVML start without persistence mode can take 5-15 s on a many-GPU server; a hung driver
# takes minutes. Between the two: long enough never to lose GPUs that are merely slow.
DEFAULT_NVML_TIMEOUT = 60.0

# The thread of a probe whose NVML call never came back: later probes do not queue behind it.
_stuck: threading.Thread | None = None


def nvml_unresponsive() -> bool:
    """True while an earlier probe's NVML call is still waiting on the driver (the probe gave up
    on it): anything else in this process that would call NVML would wait on the same driver."""
    return _stuck is not None and _stuck.is_alive()


def nvml_timeout(environ: Mapping[str, str], notes: list[str]) -> float:
    """``$PYTEST_LM_NVML_TIMEOUT`` (seconds, 0 for no limit), else the default; a bad value is a note."""
    raw = environ.get(ENV_NVML_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_NVML_TIMEOUT
    from argparse import ArgumentTypeError

    from pytest_lmbackend.hardware.units import parse_seconds

    try:
        return parse_seconds(raw, ENV_NVML_TIMEOUT)
    except ArgumentTypeError as exc:
        notes.append(f"{exc}; using {DEFAULT_NVML_TIMEOUT:g} s")
        return DEFAULT_NVML_TIMEOUT


def _within(read: Callable[[], DriverView], timeout: float, what: str) -> DriverView:
    """``read()`` in a daemon thread, given up after ``timeout`` seconds (0: no limit).

    NVML is called in-process and cannot be killed; a driver in a bad state can keep its first call
    waiting for minutes. The thread is left behind (a daemon: it does not hold the interpreter's exit),
    remembered so that later probes do not wait again, and the probe goes on to the next way.
    """
    global _stuck
    if nvml_unresponsive():
        raise ProbeFailed(f"{what}: still not answering an earlier probe; not asked again")
    box: list[DriverView | Exception] = []

    def run() -> None:
        try:
            box.append(read())
        except Exception as exc:  # handed to the caller's thread, which turns it into a note
            box.append(exc)

    thread = threading.Thread(target=run, name="lmbackend-nvml-probe", daemon=True)
    thread.start()
    thread.join(timeout if 0 < timeout < 1e7 else None)  # 0 or inf: no limit
    if not box:
        _stuck = thread
        raise ProbeFailed(f"{what}: did not answer in time (limit {timeout:g} s, "
                          f"${ENV_NVML_TIMEOUT}); left waiting")
    result = box[0]
    if isinstance(result, Exception):
        raise result
    return result


def probe(*, profile: str | None = None, environ: Mapping[str, str] | None = None,
          timeout: float = DEFAULT_TIMEOUT) -> Hardware:
    """The hardware this session runs on, or the one ``profile`` (or ``$PYTEST_LM_HARDWARE``) fakes.

    Never imports torch nor creates a CUDA context. Every failure of NVML or ``nvidia-smi`` ends in
    ``Hardware.warnings`` and, when nothing answers, an honest "no GPU" (``source == "none"``).
    Ascend NPUs are read from ``npu-smi info`` where it is on PATH (``source == "npu-smi"`` when they
    are the only devices), under ``ASCEND_RT_VISIBLE_DEVICES``.

    :param timeout: seconds ``nvidia-smi`` (and ``npu-smi``) may take before it is killed. NVML,
        called in-process, has its own limit, ``$PYTEST_LM_NVML_TIMEOUT`` (default 60 s), after which
        the probe stops waiting for it.
    :raises ProfileError: a named profile that does not exist or a profile file that is wrong.
    """
    env = os.environ if environ is None else environ
    spec = profile_spec(profile, env)
    if spec is not None:
        if "," in spec:
            raise ProfileError(f"hardware profile {spec!r}: several profiles are for --lm-plan only; "
                               "a session runs on one", path=spec)
        from pytest_lmbackend.hardware.profiles import load_profile

        return _masked(load_profile(spec), env)
    notes: list[str] = []
    limit = nvml_timeout(env, notes)
    ways: tuple[tuple[Source, Callable[[], DriverView]], ...] = (
        ("nvml", lambda: _within(lambda: read_nvml(env), limit, "NVML")),
        ("nvidia-smi", lambda: _read_smi(env, timeout)),
    )
    view: DriverView | None = None
    source: Source = "none"
    for name, read in ways:
        try:
            view = read()
        except ProbeFailed as exc:
            notes.append(str(exc))
            continue
        except Exception as exc:  # a broken binding must not take the test session down
            notes.append(f"{name}: unexpected {type(exc).__name__}: {exc}")
            continue
        source = name
        break
    try:
        packages = read_packages()
    except Exception as exc:
        packages = {}
        notes.append(f"packages: cannot list installed packages: {exc}")
    npus, npu_driver, npu_notes = _read_npus(env, timeout)
    if npus and view is None:
        # an Ascend runner: that no NVIDIA driver answered is expected, not worth a warning
        notes = [n for n in notes if n.startswith("packages:")]
        source = "npu-smi"
    ascend = bool(npus) or detect_ascend(env)
    nodes = job_nodes(env, notes)
    if view is None:
        return Hardware(source=source, packages=packages, ascend=ascend, warnings=(*notes, *npu_notes),
                        nodes=nodes, npus=npus, npu_driver=npu_driver)
    gpus, mask_notes = apply_visibility(view.devices, env.get("CUDA_VISIBLE_DEVICES"))
    order = order_warning(view.devices, env)
    # notes of ways that failed before the one that answered stay: they say why it was not NVML
    warnings = (*notes, *view.warnings, *mask_notes, *((order,) if order else ()), *npu_notes)
    return Hardware(gpus=gpus, driver=view.driver, cuda=view.cuda, source=source, packages=packages,
                    ascend=ascend, warnings=warnings, nodes=nodes, npus=npus, npu_driver=npu_driver)


def _masked(profile: Hardware, environ: Mapping[str, str]) -> Hardware:
    """A profile's devices as a program here would see them under ``CUDA_VISIBLE_DEVICES`` (its GPUs)
    and ``ASCEND_RT_VISIBLE_DEVICES`` (its NPUs), as a real probe sees real ones: a pinned xdist
    worker or a job given some of a runner's devices holds only those. A mask over a kind the
    profile does not have is ignored there, as it is on a real machine without that kind."""
    import dataclasses

    cuda, ascend = environ.get("CUDA_VISIBLE_DEVICES"), environ.get(ASCEND_MASK)
    if cuda is not None and profile.gpus:
        gpus, notes = apply_visibility([Device(g) for g in profile.gpus], cuda)
        profile = dataclasses.replace(profile, gpus=gpus, warnings=(*profile.warnings, *notes))
    if ascend is not None and profile.npus:
        npus, notes = apply_npu_visibility(profile.npus, ascend)
        profile = dataclasses.replace(profile, npus=npus, warnings=(*profile.warnings, *notes))
    return profile


def _read_npus(env: Mapping[str, str], timeout: float) -> tuple[tuple[NPU, ...], str | None, list[str]]:
    """Ascend NPUs from ``npu-smi info`` under ``ASCEND_RT_VISIBLE_DEVICES``; nothing is run (and no
    module loaded) where ``npu-smi`` is not on PATH."""
    if shutil.which("npu-smi", path=env.get("PATH")) is None:
        return (), None, []
    from pytest_lmbackend.hardware.npusmi import read_npu_smi

    try:
        view = read_npu_smi(env, timeout)
    except ProbeFailed as exc:
        return (), None, [str(exc)]
    if view is None:
        return (), None, []
    npus, masked = apply_npu_visibility(view.npus, env.get(ASCEND_MASK))
    return npus, view.driver, [*view.warnings, *masked]


def probe_many(*, profile: str | None = None, environ: Mapping[str, str] | None = None,
               timeout: float = DEFAULT_TIMEOUT) -> list[Hardware]:
    """Like ``probe`` but a comma list of profiles (``"a100-40gb,h100x8"``) gives one ``Hardware`` each,
    each whole: a plan describes the runners the profiles name, not this shell's ``CUDA_VISIBLE_DEVICES``."""
    env = os.environ if environ is None else environ
    spec = profile_spec(profile, env)
    if spec is not None:
        from pytest_lmbackend.hardware.profiles import load_profiles

        return load_profiles(spec)
    return [probe(profile=spec, environ=env, timeout=timeout)]
