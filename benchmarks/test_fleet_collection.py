"""Cost of fleet mode: a 1,000-test suite collected under --lm-fleet with four profiles, as a runner's job
does it (every test judged on every profile, the others deselected), against pytest alone (target 1.3x,
in CPU time of the process, the least of several interleaved rounds)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pytest_benchmark")

FLEET = "cpu,rtx4090,a100-80gbx8,h100x8"
# pytest alone: every entry point of the package disabled
WITHOUT = [f"-p no:{name}" for name in ("lmbackend", "lmbackend_bench", "lmbackend_xdist", "lmbackend_leak",
                                         "lmbackend_isolation")]
MARKS = ["", "@pytest.mark.gpu_num_1\n", "@pytest.mark.gpu_num_2\n", "@pytest.mark.gpu_num_8\n",
         "@pytest.mark.lm_requires(capability='>=9.0', vram='40GiB')\n", "@pytest.mark.gpu_num_16\n",
         "@pytest.mark.lm_requires(dtype='bf16')\n", "@pytest.mark.skip(reason='later')\n"]


def write_suite(root: Path, tests: int = 1000, per_module: int = 50) -> None:
    """``tests`` tests in modules of ``per_module``: plain, LMDeploy's GPU counts, lm_requires, a skip,
    and parametrized ones (ten ids each)."""
    names = sorted({m.split("(")[0].removeprefix("@pytest.mark.").strip() for m in MARKS if "gpu_num" in m})
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n" + "".join(f"    {n}: GPU count\n" for n in names)
                                     + "    lm_requires: requirements\n")
    made = 0
    for module in range(tests // per_module):
        lines = ["import pytest\n\n"]
        n = 0
        while n < per_module:
            mark = MARKS[(module + n) % len(MARKS)]
            if n % 10 == 0 and n + 10 <= per_module:
                params = "@pytest.mark.parametrize('x', range(10))\n"
                lines.append(f"{mark}{params}def test_p{n}(x):\n    pass\n\n")
                n += 10
            else:
                lines.append(f"{mark}def test_t{n}():\n    pass\n\n")
                n += 1
        (root / f"test_m{module:03d}.py").write_text("".join(lines))
        made += n
    assert made == tests


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_LM_", "PYTEST_ADDOPTS"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, **extra}


def _collect(root: Path, args: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of one ``pytest --collect-only`` process: on a shared machine the
    wall clock measures the neighbours as much as the work."""
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, cwd=root, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_fleet_collection_within_1_3x_of_pytest_alone(benchmark: Any, tmp_path: Path) -> None:
    write_suite(tmp_path)
    alone_args = " ".join(WITHOUT).split()
    fleet_args = [f"--lm-fleet={FLEET}", "--lm-runner=h100x8"]
    fleet_env = _env(PYTEST_LM_HARDWARE="h100x8")
    for args, env in ((alone_args, _env()), (fleet_args, fleet_env)):  # bytecode, caches
        _collect(tmp_path, args, env)
    alone: list[float] = []
    fleet: list[float] = []

    def once() -> float:  # interleaved, so a busy machine slows both alike
        alone.append(_collect(tmp_path, alone_args, _env()))
        seconds = _collect(tmp_path, fleet_args, fleet_env)
        fleet.append(seconds)
        return seconds

    benchmark.pedantic(once, rounds=7, iterations=1)
    ratio = min(fleet) / min(alone)
    benchmark.extra_info.update(alone_min_cpu_s=round(min(alone), 3), fleet_min_cpu_s=round(min(fleet), 3),
                                ratio=round(ratio, 3))
    assert ratio <= 1.3, (f"collection under --lm-fleet: {min(fleet):.2f} s CPU; "
                          f"pytest alone: {min(alone):.2f} s CPU")
