"""Build and find the per-release virtual environments in which real LMDeploy answers questions."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "LMBACKEND_ORACLE_HOME"
TORCH_VERSION = "2.13.0"
# What pip installs for torch, in the same resolve as everything else so that nothing can pull
# another torch. A machine whose pip does not find the CPU wheel by itself (find-links or an
# index) can point this at the wheel file, e.g. /wheels/torch-2.13.0+cpu-cp311-...whl.
TORCH_ENV = "LMBACKEND_ORACLE_TORCH"
# `pip` forces the pip build even where uv and the local torch wheel are there.
INSTALLER_ENV = "LMBACKEND_INSTALLER"


def torch_requirement() -> str:
    return os.environ.get(TORCH_ENV) or f"torch=={TORCH_VERSION}"


#: transformers per LMDeploy release: the newest release meeting LMDeploy's own requirement on
#: the day that LMDeploy release came out.
TRANSFORMERS_PINS: dict[str, str] = {
    "0.7.3": "4.51.3",
    "0.10.2": "4.57.1",
    "0.14.0": "5.12.1",
    "0.18.0": "5.17.0",
}

# What `import lmdeploy.archs` and the TurboMind rule modules import besides torch and
# transformers (LMDeploy itself is installed without its dependencies).
_COMMON_DEPS = ("pydantic", "mmengine-lite", "psutil", "pillow", "requests", "pybase64", "pyyaml")


def _extra_deps(release: str) -> tuple[str, ...]:
    # 0.7.x declares numpy<2 and breaks at import with numpy 2
    return ("numpy<2",) if release.startswith("0.7.") else ()


class VenvError(RuntimeError):
    """Building or checking an LMDeploy virtual environment failed."""


@dataclass(frozen=True)
class VenvSpec:
    """What one environment holds: an LMDeploy release and the transformers it runs with."""

    release: str
    transformers: str

    @property
    def name(self) -> str:
        default = TRANSFORMERS_PINS.get(self.release)
        suffix = "" if self.transformers == default else f"-tf{self.transformers}"
        return f"lmdeploy-{self.release}{suffix}"

    def requirements(self) -> list[str]:
        return [
            f"transformers=={self.transformers}",
            torch_requirement(),
            *_COMMON_DEPS,
            *_extra_deps(self.release),
        ]

    def stamp(self) -> str:
        return json.dumps({"lmdeploy": self.release, "requirements": self.requirements()}, sort_keys=True)


def oracle_home() -> Path:
    """Where the environments live: ``$LMBACKEND_ORACLE_HOME``, else the user's cache folder."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pytest-lmbackend" / "oracle"


def spec_for(release: str, transformers: str | None = None) -> VenvSpec:
    """The environment spec of `release`; releases without a pin need an explicit transformers."""
    chosen = transformers or TRANSFORMERS_PINS.get(release)
    if chosen is None:
        raise VenvError(
            f"no transformers pin for lmdeploy {release}: pass one "
            f"(known pins: {', '.join(f'{k}->{v}' for k, v in TRANSFORMERS_PINS.items())})"
        )
    return VenvSpec(release, chosen)


def venv_dir(spec: VenvSpec, home: Path | None = None) -> Path:
    return (home or oracle_home()) / "venvs" / spec.name


def venv_python(spec: VenvSpec, home: Path | None = None) -> Path:
    return venv_dir(spec, home) / "bin" / "python"


def installed_versions(python: Path) -> dict[str, str]:
    """Versions of lmdeploy, transformers and torch in an environment, from metadata only."""
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for name in ('lmdeploy', 'transformers', 'torch'):\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        proc = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    try:
        found = json.loads(proc.stdout)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def is_ready(spec: VenvSpec, home: Path | None = None) -> bool:
    """Whether the environment exists and holds exactly the spec's lmdeploy, transformers and torch."""
    python = venv_python(spec, home)
    if not python.exists():
        return False
    found = installed_versions(python)
    torch_version = TORCH_VERSION
    return (
        found.get("lmdeploy") == spec.release
        and found.get("transformers") == spec.transformers
        and found.get("torch", "").split("+")[0] == torch_version
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # several pytest-xdist workers may ask for the same environment at once: one builds it
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip(python: Path, args: list[str], log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise VenvError(f"pip install {' '.join(args)} failed (log {log}):\n{tail}")


def find_uv() -> str | None:
    """The uv executable: the `uv` package's (the test extra installs it), else one on PATH; None when absent
    or when ``LMBACKEND_INSTALLER=pip``."""
    if os.environ.get(INSTALLER_ENV) == "pip":
        return None
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return shutil.which("uv")
    try:
        return str(find_uv_bin())
    except FileNotFoundError:
        return shutil.which("uv")


def _pip_find_links() -> list[str]:
    """The find-links locations pip is configured with (config files and ``PIP_FIND_LINKS``)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    links: list[str] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            links += value.strip().strip("'\"").split()
    return links


def local_torch_wheel() -> Path | None:
    """The CPU torch wheel on local disk: ``$LMBACKEND_ORACLE_TORCH`` when it names a wheel file, else a
    ``torch-2.13.0+cpu`` wheel for this Python in pip's find-links folders. uv is given only this file for
    torch: an index would offer it the CUDA build."""
    env = os.environ.get(TORCH_ENV)
    if env:
        path = Path(env.removeprefix("file://"))
        return path if env.endswith(".whl") and path.is_file() else None
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for link in _pip_find_links():
        folder = Path(link.removeprefix("file://"))
        if folder.is_dir():
            found = sorted(folder.glob(f"torch-{TORCH_VERSION}+cpu-{tag}-*.whl"))
            if found:
                return found[-1]
    return None


def _uv_build(spec: VenvSpec, folder: Path, base: str) -> bool:
    """Build with uv when it and the local CPU torch wheel are there (about 10x faster than pip);
    False when either is absent or uv failed (its log is left beside the folder)."""
    uv, wheel = find_uv(), local_torch_wheel()
    if uv is None or wheel is None:
        return False
    log = folder.parent / f".{spec.name}.uv.log"
    override = folder.parent / f".{spec.name}.uv-override.txt"
    # every requirement's torch becomes this file: uv never looks for torch on an index
    override.write_text(f"torch @ {wheel.resolve().as_uri()}\n")
    python = str(folder / "bin" / "python")
    steps = [
        [uv, "venv", "--quiet", "--python", base, str(folder)],
        [uv, "pip", "install", "--quiet", "--python", python, "--no-deps", f"lmdeploy=={spec.release}"],
        [uv, "pip", "install", "--quiet", "--python", python, "--override", str(override),
         *spec.requirements()],
    ]
    with open(log, "w") as out:
        for cmd in steps:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                return False
    log.replace(folder / "build.log")
    return True


def build(
    release: str,
    *,
    transformers: str | None = None,
    home: Path | None = None,
    force: bool = False,
    python: str | None = None,
) -> Path:
    """Build (or reuse) the environment for `release`; returns its interpreter.

    LMDeploy goes in without its dependencies (its GPU stack is not needed to read configs),
    then the pinned transformers, the CPU torch wheel and the few small packages its detection
    path imports, in one resolve so that pip cannot pick another torch. uv does it where it is
    installed and the CPU torch wheel lies on local disk, pip otherwise.
    """
    spec = spec_for(release, transformers)
    folder = venv_dir(spec, home)
    with _locked(folder.parent / f".{spec.name}.lock"):
        if not force and is_ready(spec, home):
            return venv_python(spec, home)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        base = python or sys.executable
        interpreter = venv_python(spec, home)
        log = folder / "build.log"
        if not _uv_build(spec, folder, base):
            subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True)
            _pip(interpreter, ["--no-deps", f"lmdeploy=={spec.release}"], log)
            _pip(interpreter, spec.requirements(), log)
        if not is_ready(spec, home):
            raise VenvError(
                f"{folder}: built, but it does not hold {spec.requirements()} "
                f"(found {installed_versions(interpreter)}); log {log}"
            )
        (folder / ".lmbackend-spec").write_text(spec.stamp())
        return interpreter
