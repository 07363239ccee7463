#!/usr/bin/env bash
# The plugin on a real GPU: the example suite under --lm-backend=auto with LMDeploy's PyTorch engine,
# strict fallback against LMDeploy's own silent fallback, GPU memory after teardown, CUDA untouched
# by collection.
#
# From the repository root, with the wheel kit carried along in .gpu/kit (LMDeploy 0.18.0 without
# TurboMind plus what it imports), and $OUT a folder that comes back:
#     bash gpu_checks/plugin_gpu.sh
# Steps (each bounded; a failed step is recorded and the script goes on):
#   1. machine facts and the kit installed into $KIT_SITE (PYTHONPATH), the package from source;
#   2. collect-only of examples/ with --lm-backend=auto: no torch/transformers/lmdeploy imported;
#   3. the example suite with --lm-backend=auto (one PyTorch engine, shared by the tiny-Mistral tests),
#      with a probe recording CUDA state after collection and GPU memory before, during and after;
#   4. forced fallback: a TurboMind-bound test under a profile that claims TurboMind; LMDeploy falls
#      back to pytorch ("turbomind is not built") and strict fallback must fail it with both names;
#   5. verdicts in $OUT/verdicts.txt (one PASS/FAIL line per claim).
# Outputs in $OUT: machine.txt, collect.txt, suite.txt, suite.xml, probe.json, fallback.txt,
# verdicts.txt, status.txt. Ends within about 3 minutes.
# Overridable: PYTHON (python3), KIT_WHEELS (.gpu/kit/wheels), KIT_SITE (/tmp/site),
#   SUITE_TIMEOUT (170 s).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO="$(pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-$REPO/gpu_out}"
WHEELS="${KIT_WHEELS:-$REPO/.gpu/kit/wheels}"
SITE="${KIT_SITE:-/tmp/site}"
SUITE_TIMEOUT="${SUITE_TIMEOUT:-170}"
T0=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { echo "[plugin_gpu +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/status.txt"; }
: > "$OUT/verdicts.txt"
verdict() { echo "$1 $2" | tee -a "$OUT/verdicts.txt"; }

log "machine"
{
  uname -a
  "$PY" -c 'import sys; print(sys.executable, sys.version)'
  timeout 20 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,memory.used --format=csv
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

log "kit: $WHEELS -> $SITE"
if ls "$WHEELS"/*.whl > /dev/null 2>&1 \
   && timeout 120 "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl \
        > "$OUT/kit-install.log" 2>&1; then
  log "kit installed"
else
  log "kit missing or install failed (kit-install.log): the pytorch backend will report itself unavailable"
fi
# The package travels as source; its pytest11 entry point is not installed, so the plugin is named.
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
PLUGIN=(-p no:cacheprovider)
if ! "$PY" -c 'import sys; from importlib.metadata import entry_points as e
sys.exit(0 if any(p.name == "lmbackend" for p in e(group="pytest11")) else 1)' 2>/dev/null; then
  PLUGIN+=(-p pytest_lmbackend.plugin)
fi

# A probe plugin, written outside the repository: CUDA state after collection, GPU memory (whole device,
# from NVML) before the first test, while a pipeline is alive, and after the session's teardown.
PROBE_DIR="$(mktemp -d)"
cat > "$PROBE_DIR/lm_gpu_probe.py" <<'EOF'
import json
import os
import sys

import pytest

RECORD = {}
HEAVY = ("torch", "transformers", "lmdeploy")


def _device():
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return {"used_mib": info.used // 2**20, "total_mib": info.total // 2**20}
    except Exception as exc:
        return {"error": repr(exc)}


def _torch():
    torch = sys.modules.get("torch")
    if torch is None:
        return {"imported": False}
    out = {"imported": True, "cuda_initialized": bool(torch.cuda.is_initialized())}
    if out["cuda_initialized"]:
        out["allocated_mib"] = torch.cuda.memory_allocated() // 2**20
        out["reserved_mib"] = torch.cuda.memory_reserved() // 2**20
    return out


def _save():
    with open(os.environ["LM_PROBE_OUT"], "w") as f:
        json.dump(RECORD, f, indent=1)


def pytest_collection_finish(session):
    RECORD["after_collection"] = {"heavy_modules": [m for m in HEAVY if m in sys.modules],
                                  "torch": _torch(), "device": _device()}
    _save()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        if "lm_pipeline" in getattr(item, "fixturenames", ()):
            RECORD.setdefault("during", []).append({"test": item.nodeid, "device": _device(),
                                                    "torch": _torch()})
            _save()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # runs after the session-scoped fixtures (the pipeline cache) were torn down
    RECORD["after_teardown"] = {"torch": _torch(), "device": _device()}
    _save()
EOF
export PYTHONPATH="$PROBE_DIR:$PYTHONPATH"

log "versions"
timeout 30 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/machine.txt"
from importlib import metadata
for n in ("torch", "transformers", "lmdeploy", "pytest", "nvidia-ml-py", "tokenizers", "safetensors"):
    try:
        print(f"  {n:14s} {metadata.version(n)}")
    except metadata.PackageNotFoundError:
        print(f"  {n:14s} -")
EOF

log "2. collect-only, --lm-backend=auto"
LM_PROBE_OUT="$OUT/collect-probe.json" timeout 90 "$PY" -m pytest "${PLUGIN[@]}" -p lm_gpu_probe examples \
  --collect-only -q --lm-backend=auto > "$OUT/collect.txt" 2>&1
echo "exit $?" >> "$OUT/collect.txt"
tail -n 3 "$OUT/collect.txt"

log "3. example suite, --lm-backend=auto (timeout ${SUITE_TIMEOUT}s)"
LM_PROBE_OUT="$OUT/probe.json" timeout -k 10 "$SUITE_TIMEOUT" "$PY" -m pytest "${PLUGIN[@]}" -p lm_gpu_probe \
  examples --lm-backend=auto -rA --junitxml="$OUT/suite.xml" > "$OUT/suite.txt" 2>&1
SUITE_RC=$?
echo "exit $SUITE_RC" >> "$OUT/suite.txt"
sed -n '1,14p' "$OUT/suite.txt"; tail -n 25 "$OUT/suite.txt"

log "4. forced fallback: TurboMind claimed by the profile, not built in LMDeploy"
timeout 90 "$PY" -m pytest "${PLUGIN[@]}" examples/test_generation.py -k test_turbomind_llama \
  --lm-hardware=examples/profiles/h100x8-lmdeploy.toml -rA > "$OUT/fallback.txt" 2>&1
echo "exit $?" >> "$OUT/fallback.txt"
tail -n 12 "$OUT/fallback.txt"

log "5. verdicts"
"$PY" - "$OUT" "$SUITE_RC" <<'EOF' | tee -a "$OUT/verdicts.txt"
import json, os, re, sys

out, suite_rc = sys.argv[1], int(sys.argv[2])
def read(name):
    try:
        return open(os.path.join(out, name)).read()
    except OSError:
        return ""
def load(name):
    try:
        return json.loads(read(name))
    except ValueError:
        return {}

def say(ok, claim):
    print(("PASS" if ok else "FAIL"), claim)

col = load("collect-probe.json").get("after_collection", {})
say(col.get("heavy_modules") == [], f"collect-only --lm-backend=auto imports no engine: {col.get('heavy_modules')}")
probe = load("probe.json")
after_col = probe.get("after_collection", {})
say(bool(after_col) and not after_col.get("torch", {}).get("cuda_initialized", False),
    f"CUDA not initialised after collection of the full run: {after_col.get('torch')}")
suite = read("suite.txt")
say(suite_rc == 0, f"example suite exit {suite_rc}: {(re.findall(r'=+ (.*) in [0-9.]+s', suite) or ['?'])[-1]}")
started = re.search(r"PASSED examples/test_generation.py::test_pipeline_runs_the_engine_it_was_given", suite)
say(bool(started), "lm_pipeline started LMDeploy's PyTorch engine (realized engine == pytorch)")
say("PASSED examples/test_generation.py::test_greedy_generation_is_repeatable" in suite,
    "greedy generation on the PyTorch engine is repeatable")
during = probe.get("during", [])
after = probe.get("after_teardown", {})
base = after_col.get("device", {}).get("used_mib")
peak = max((d.get("device", {}).get("used_mib", 0) for d in during), default=None)
end = after.get("device", {}).get("used_mib")
torch_end = after.get("torch", {})
freed = None not in (base, peak, end) and peak > base and end - base <= max(1024, (peak - base) // 10)
say(freed, f"GPU memory free after teardown: before {base} MiB, with a pipeline {peak} MiB, "
           f"after teardown {end} MiB; torch after: {torch_end}")
fb = read("fallback.txt")
say("strict fallback: the test's backend is turbomind, but LMDeploy runs pytorch" in fb
    and "turbomind is not built" in fb,
    "strict fallback caught LMDeploy's silent fallback: "
    + ((re.findall(r"strict fallback: .*", fb) or ["(not found)"])[0][:300]))
EOF
log "done"
exit 0
