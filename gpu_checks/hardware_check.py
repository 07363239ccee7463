"""Check the hardware probe on a real GPU machine against torch's own view; results in $OUT/hardware.json.

Run from the repository root with the checkout importable (``PYTHONPATH=.``):

    python gpu_checks/hardware_check.py

It compares ``probe()`` with ``torch.cuda`` (count, names, capability, memory, UUIDs) under several
``CUDA_VISIBLE_DEVICES`` values, each in a fresh process; the nvidia-smi path against NVML; the probe's
time in fresh processes (target: 150 ms or less over bare Python); and, through pytest, that
collection leaves torch, transformers and lmdeploy unimported and a test run leaves CUDA uninitialised.
Every check records its error instead of stopping the script; it exits 0 unless it cannot write.
The timing comes first and splits the probe's cost (pynvml import, NVML start, queries; NVML started
through ctypes; nvidia-smi). Checks that would start after ``$HARDWARE_CHECK_BUDGET_S`` seconds
(default 420) are skipped.
On a machine without a GPU it still runs and says so.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TIMEOUT = 120

# the probe as JSON, in a fresh process: time from before the import to the answer
PROBE_CODE = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    from pytest_lmbackend.hardware import probe
    t1 = time.perf_counter()
    hw = probe()
    t2 = time.perf_counter()
    print(json.dumps({
        "import_s": t1 - t0, "probe_s": t2 - t1,
        "source": hw.source, "driver": hw.driver, "cuda": hw.cuda, "warnings": list(hw.warnings),
        "gpus": [{"index": g.index, "physical_index": g.physical_index, "uuid": g.uuid, "name": g.name,
                  "capability": list(g.capability), "memory_total": g.memory_total,
                  "memory_free": g.memory_free, "pci_bus_id": g.pci_bus_id} for g in hw.gpus],
        "heavy_modules": [m for m in ("torch", "transformers", "lmdeploy") if m in sys.modules],
    }))
""")

TORCH_CODE = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    import torch
    count = torch.cuda.device_count()
    gpus = []
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        uuid = getattr(p, "uuid", None)
        gpus.append({"index": i, "name": p.name, "capability": [p.major, p.minor],
                     "memory_total": p.total_memory,
                     "uuid": None if uuid is None else "GPU-" + str(uuid),
                     "pci_bus_id": "%04x:%02x:%02x.0" % (getattr(p, "pci_domain_id", 0),
                                                         getattr(p, "pci_bus_id", 0),
                                                         getattr(p, "pci_device_id", 0))})
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "count": count, "gpus": gpus,
                      "initialized": torch.cuda.is_initialized(), "seconds": time.perf_counter() - t0}))
""")


def sub(code: str, env_changes: dict[str, str | None] | None = None,
        timeout: float = TIMEOUT) -> dict[str, Any]:
    """Run Python code in a fresh interpreter; its last stdout line is JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTEST_LM_HARDWARE", None)
    for key, value in (env_changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    start = time.perf_counter()
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    data["wall_s"] = wall
    return data


def compare(probe: dict[str, Any], torch: dict[str, Any]) -> dict[str, Any]:
    """Where the probe and torch agree and where not, GPU by GPU."""
    problems: list[str] = []
    if len(probe["gpus"]) != torch["count"]:
        problems.append(f"count: probe {len(probe['gpus'])}, torch {torch['count']}")
    for mine, theirs in zip(probe["gpus"], torch["gpus"], strict=False):
        i = mine["index"]
        if mine["name"] != theirs["name"]:
            problems.append(f"GPU {i} name: probe {mine['name']!r}, torch {theirs['name']!r}")
        if mine["capability"] != theirs["capability"]:
            problems.append(f"GPU {i} capability: probe {mine['capability']}, torch {theirs['capability']}")
        if theirs.get("uuid") and mine["uuid"].lower() != theirs["uuid"].lower():
            problems.append(f"GPU {i} uuid: probe {mine['uuid']}, torch {theirs['uuid']}")
        diff = mine["memory_total"] - theirs["memory_total"]
        if abs(diff) > 1024**3:  # torch may subtract a reserve; more than 1 GiB apart is wrong
            problems.append(f"GPU {i} memory: probe {mine['memory_total']}, torch {theirs['memory_total']}")
    return {"agree": not problems, "problems": problems,
            "memory_difference_bytes": [m["memory_total"] - t["memory_total"]
                                        for m, t in zip(probe["gpus"], torch["gpus"], strict=False)]}


def check_views(results: dict[str, Any]) -> None:
    try:
        results["torch_unmasked"] = sub(TORCH_CODE, {"CUDA_VISIBLE_DEVICES": None})
    except Exception as exc:
        results["errors"]["torch"] = f"{type(exc).__name__}: {exc}"
    base = sub(PROBE_CODE, {"CUDA_VISIBLE_DEVICES": None})
    results["probe_unmasked"] = base
    uuids = [g["uuid"] for g in base["gpus"]]
    variants: list[str | None] = [None, "", "0", "1", "0,1", "1,0", "-1", "0,0", "GPU-XYZ", "bogus,0"]
    if uuids:
        variants += [uuids[0], uuids[0][:12], f"{uuids[-1]},{uuids[0]}"]

    def one(value: str | None) -> dict[str, Any]:
        row: dict[str, Any] = {"CUDA_VISIBLE_DEVICES": value}
        try:
            mine = sub(PROBE_CODE, {"CUDA_VISIBLE_DEVICES": value})
            theirs = sub(TORCH_CODE, {"CUDA_VISIBLE_DEVICES": value})
            row.update(probe_count=len(mine["gpus"]), torch_count=theirs["count"],
                       probe_uuids=[g["uuid"] for g in mine["gpus"]],
                       torch_uuids=[g.get("uuid") for g in theirs["gpus"]],
                       probe_warnings=mine["warnings"], **compare(mine, theirs))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        return row

    # torch's import (5-8 s) dominates each pair and the pairs are independent: run them side by side
    with ThreadPoolExecutor(max_workers=max(1, min(8, (os.cpu_count() or 2) // 2))) as pool:
        rows = list(pool.map(one, variants))
    results["visibility"] = rows
    results["visibility_all_agree"] = all(r.get("agree") for r in rows)


def check_smi_path(results: dict[str, Any]) -> None:
    # NVML made unusable (pynvml chosen and blocked), so the probe falls to nvidia-smi
    code = "import sys; sys.modules['pynvml'] = None\n" + PROBE_CODE
    smi = sub(code, {"CUDA_VISIBLE_DEVICES": None, "PYTEST_LM_NVML": "pynvml"})
    nvml = sub(PROBE_CODE, {"CUDA_VISIBLE_DEVICES": None})

    def facts(view: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys = ("uuid", "name", "capability", "memory_total", "pci_bus_id")
        return [tuple(g[k] for k in keys) for g in view["gpus"]]

    same = facts(smi) == facts(nvml)
    results["nvidia_smi_path"] = {"source": smi["source"], "agrees_with_nvml": same, "smi": smi, "nvml": nvml}
    # our ctypes binding against nvidia-ml-py's pynvml on the real library
    ours = sub(PROBE_CODE, {"CUDA_VISIBLE_DEVICES": None, "PYTEST_LM_NVML": "ctypes"})
    theirs = sub(PROBE_CODE, {"CUDA_VISIBLE_DEVICES": None, "PYTEST_LM_NVML": "pynvml"})
    results["nvml_bindings"] = {
        "agree": facts(ours) == facts(theirs)
        and (ours["driver"], ours["cuda"]) == (theirs["driver"], theirs["cuda"]),
        "ctypes": ours, "pynvml": theirs,
    }


# Where the probe's time goes, in one fresh process: the pynvml import (and whether it had bytecode
# to load), NVML's own start through pynvml, the queries, and NVML started straight through ctypes
# (what a binding of our own would pay); then nvidia-smi as a subprocess.
BREAKDOWN_CODE = textwrap.dedent("""
    import ctypes, importlib.util, json, os, subprocess, sys, time
    out = {}
    t = time.perf_counter()
    import pynvml
    out["pynvml_import_s"] = time.perf_counter() - t
    source = getattr(pynvml, "__file__", None) or ""
    cached = importlib.util.cache_from_source(source) if source.endswith(".py") else ""
    out["pynvml_file"] = source
    out["pynvml_has_bytecode"] = bool(cached) and os.path.exists(cached)
    out["dont_write_bytecode"] = sys.dont_write_bytecode
    t = time.perf_counter()
    pynvml.nvmlInit()
    out["pynvml_init_s"] = time.perf_counter() - t
    t = time.perf_counter()
    n = pynvml.nvmlDeviceGetCount()
    for i in range(n):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        pynvml.nvmlDeviceGetUUID(h); pynvml.nvmlDeviceGetName(h)
        pynvml.nvmlDeviceGetCudaComputeCapability(h); pynvml.nvmlDeviceGetMemoryInfo(h)
        pynvml.nvmlDeviceGetPciInfo(h)
    pynvml.nvmlSystemGetDriverVersion()
    out["pynvml_queries_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pynvml.nvmlShutdown()
    out["pynvml_shutdown_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    out["ctypes_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rc = lib.nvmlInit_v2()
    out["ctypes_init_s"] = time.perf_counter() - t
    out["ctypes_init_rc"] = rc
    lib.nvmlShutdown()
    t = time.perf_counter()
    smi = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,pci.bus_id,name,compute_cap,memory.total,"
                          "memory.free", "--format=csv,noheader,nounits"], capture_output=True, text=True)
    out["nvidia_smi_s"] = time.perf_counter() - t
    out["nvidia_smi_rc"] = smi.returncode
    t = time.perf_counter()
    from pytest_lmbackend.hardware import probe
    out["package_import_s"] = time.perf_counter() - t
    t = time.perf_counter()
    probe()
    out["second_probe_s"] = time.perf_counter() - t
    print(json.dumps(out))
""")


def check_timing(results: dict[str, Any], rounds: int = 7) -> None:
    bare, probes, inner = [], [], []
    for _ in range(rounds):
        bare.append(sub("print('{}')")["wall_s"])
        data = sub(PROBE_CODE)
        probes.append(data["wall_s"])
        inner.append(data["import_s"] + data["probe_s"])
    over = [p - b for p, b in zip(probes, bare, strict=True)]
    results["timing"] = {
        "bare_python_s": bare, "probe_process_s": probes, "import_plus_probe_s": inner,
        "median_bare_s": statistics.median(bare), "median_probe_process_s": statistics.median(probes),
        "median_over_bare_s": statistics.median(over), "median_import_plus_probe_s": statistics.median(inner),
        "target_s": 0.150, "meets_target": statistics.median(inner) <= 0.150,
    }
    # the same probe made to use nvidia-ml-py's pynvml instead of our ctypes binding
    with_pynvml = [sub(PROBE_CODE, {"PYTEST_LM_NVML": "pynvml"}) for _ in range(rounds)]
    results["timing"]["pynvml_import_plus_probe_s"] = [d["import_s"] + d["probe_s"] for d in with_pynvml]
    results["timing"]["median_pynvml_import_plus_probe_s"] = statistics.median(
        results["timing"]["pynvml_import_plus_probe_s"])
    breakdown = []
    for _ in range(3):
        try:
            breakdown.append(sub(BREAKDOWN_CODE))
        except Exception as exc:
            breakdown.append({"error": f"{type(exc).__name__}: {exc}"})
    results["timing"]["breakdown"] = breakdown


def plugin_installed() -> bool:
    """True when the plugin is registered through its entry point (then ``-p`` would load it twice)."""
    from importlib.metadata import entry_points

    return any(ep.value.startswith("pytest_lmbackend") for ep in entry_points(group="pytest11"))


def check_pytest(results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_gpu_suite.py").write_text(textwrap.dedent("""
            import sys
            import pytest

            @pytest.mark.lm_requires(gpus=1, capability=">=8.0", dtype="bf16")
            def test_needs_ampere(): pass

            @pytest.mark.lm_requires(gpus=64)
            def test_needs_many(): pass

            @pytest.mark.gpu_num_2
            def test_two(): pass

            def test_zz_last():
                mods = [m for m in ("torch", "transformers", "lmdeploy") if m in sys.modules]
                if "torch" in sys.modules:
                    import torch
                    assert not torch.cuda.is_initialized(), "CUDA initialised before the last test"
                print("HEAVY", mods)
        """))
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("PYTEST_LM_HARDWARE", None)
        plugin = [] if plugin_installed() else ["-p", "pytest_lmbackend.plugin"]
        # the suite reads LMDeploy's gpu_num_N (registered only where a suite opts in)
        base = [PY, "-m", "pytest", *plugin, "-p", "no:cacheprovider", "-o", "lm_markers=lmdeploy",
                str(folder)]
        out: dict[str, Any] = {}
        for name, extra in (("collect", ["--collect-only", "-q"]), ("run", ["-rs", "-s", "-v"])):
            start = time.perf_counter()
            proc = subprocess.run([*base, *extra], capture_output=True, text=True, env=env, timeout=TIMEOUT)
            out[name] = {"exit": proc.returncode, "seconds": time.perf_counter() - start,
                         "tail": (proc.stdout + proc.stderr)[-4000:]}
        probe_modules = textwrap.dedent(f"""
            import subprocess, sys, json
            import pytest
            rc = pytest.main([*{plugin!r}, "-p", "no:cacheprovider", "--collect-only", "-q",
                              "--lm-backend=auto", {str(folder)!r}])
            print(json.dumps({{"rc": int(rc), "heavy": [m for m in ("torch", "transformers", "lmdeploy")
                                                      if m in sys.modules]}}))
        """)
        try:
            out["collect_modules"] = sub(probe_modules)
        except Exception as exc:
            out["collect_modules"] = {"error": f"{type(exc).__name__}: {exc}"}
        results["pytest"] = out


def main() -> int:
    out_dir = Path(os.environ.get("OUT") or ".")
    results: dict[str, Any] = {
        "python": sys.version, "platform": platform.platform(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime()),
        "errors": {},
    }
    checks: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        # cheapest and most wanted first: a run cut short keeps what it measured
        ("timing", check_timing), ("nvidia_smi", check_smi_path), ("views", check_views),
        ("pytest", check_pytest),
    ]
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,pci.bus_id,name,compute_cap,memory.total,"
                              "memory.free,driver_version,mig.mode.current", "--format=csv"],
                             capture_output=True, text=True, timeout=30)
        results["nvidia_smi_raw"] = {"exit": smi.returncode, "out": smi.stdout[-4000:],
                                     "err": smi.stderr[-2000:]}
    except Exception as exc:
        results["errors"]["nvidia_smi_raw"] = f"{type(exc).__name__}: {exc}"
    budget = float(os.environ.get("HARDWARE_CHECK_BUDGET_S", "420"))
    began = time.perf_counter()
    for name, check in checks:
        start = time.perf_counter()
        if start - began > budget:
            results["errors"][name] = f"skipped: the {budget:g} s budget was spent before it"
            continue
        try:
            check(results)
        except Exception:
            results["errors"][name] = traceback.format_exc()[-3000:]
        results.setdefault("check_seconds", {})[name] = round(time.perf_counter() - start, 3)
        # Written after every check: a run cut short by the machine's time limit still brings back
        # whatever it measured.
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "hardware.json").write_text(json.dumps(results, indent=2, default=str))
        print(f"hardware_check: {name} done in {results['check_seconds'][name]} s", flush=True)
    if "probe_unmasked" in results and "torch_unmasked" in results:
        results["unmasked_comparison"] = compare(results["probe_unmasked"], results["torch_unmasked"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "hardware.json").write_text(json.dumps(results, indent=2, default=str))
    timing = results.get("timing", {})
    summary = {
        "gpus": len(results.get("probe_unmasked", {}).get("gpus", [])),
        "source": results.get("probe_unmasked", {}).get("source"),
        "agree_unmasked": results.get("unmasked_comparison", {}).get("agree"),
        "visibility_all_agree": results.get("visibility_all_agree"),
        "median_import_plus_probe_s": results.get("timing", {}).get("median_import_plus_probe_s"),
        "median_over_bare_s": results.get("timing", {}).get("median_over_bare_s"),
        "median_pynvml_import_plus_probe_s": timing.get("median_pynvml_import_plus_probe_s"),
        "bindings_agree": results.get("nvml_bindings", {}).get("agree"),
        "breakdown": results.get("timing", {}).get("breakdown", [None])[-1],
        "errors": sorted(results["errors"]),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
