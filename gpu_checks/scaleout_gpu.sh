#!/usr/bin/env bash
# Scale-out checks on a one-GPU machine: pytest-xdist pinning, the GPU memory leak check (a test that
# keeps a tensor alive) and lm_isolated, each through a real pytest run with torch on the GPU.
#
# From the repository root, with $OUT a folder that comes back:   bash gpu_checks/scaleout_gpu.sh
# The checkout is used from source (PYTHONPATH); pytest-xdist and execnet are installed from
# .gpu/extra-wheels when the machine lacks them. Writes $OUT/scaleout/{summary.txt,*.txt,*.json}.
# Exit status: the number of failed checks. Bounded: about a minute, every run under `timeout`.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO="$(pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-$REPO/gpu_out}/scaleout"
WORK="$(mktemp -d /tmp/scaleout.XXXXXX)"
mkdir -p "$OUT"
T0=$(date +%s)
FAILED=0
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset CUDA_VISIBLE_DEVICES PYTEST_LM_HARDWARE PYTEST_ADDOPTS
log() { echo "[scaleout +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/summary.txt"; }
check() {  # check NAME CONDITION-EXIT-STATUS DETAIL
  if [ "$2" -eq 0 ]; then log "PASS $1: $3"; else log "FAIL $1: $3"; FAILED=$((FAILED + 1)); fi
}

: > "$OUT/summary.txt"
{ uname -a; "$PY" -c 'import sys; print(sys.version)'; timeout 20 nvidia-smi -L; } > "$OUT/machine.txt" 2>&1
if ! "$PY" -c 'import xdist' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" .gpu/extra-wheels/*.whl \
    > "$OUT/install.txt" 2>&1 && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
"$PY" -c 'import xdist, torch, pynvml; print("xdist", xdist.__version__, "torch", torch.__version__)' \
  >> "$OUT/machine.txt" 2>&1
# Loaded by name unless this checkout is installed (its entry points would load them a second time).
PLUGINS=$("$PY" - <<'EOF'
from importlib.metadata import entry_points
if not any(ep.name == "lmbackend" for ep in entry_points(group="pytest11")):
    print(" ".join(f"-p pytest_lmbackend.{m}" for m in ("plugin", "xdist", "leak", "isolation")))
EOF
)
NVML_UUID=$("$PY" -c 'import pynvml as n; n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0); u = n.nvmlDeviceGetUUID(h); print(u.decode() if isinstance(u, bytes) else u)')
log "GPU 0 per NVML: $NVML_UUID; plugins: ${PLUGINS:-entry points}"
run() {  # run NAME SECONDS PYTEST-ARGS...
  local name=$1 limit=$2; shift 2
  (cd "$WORK" && timeout "$limit" "$PY" -m pytest -p no:cacheprovider $PLUGINS "$@") > "$OUT/$name.txt" 2>&1
  echo $?
}

# --- 1. xdist pinning ----------------------------------------------------------------------------
cat > "$WORK/test_pin.py" <<'EOF'
import json, os, pathlib
import pytest

@pytest.mark.lm_requires(gpus=1)
def test_pinned():
    import torch
    x = torch.ones(4, device="cuda")
    assert float(x.sum()) == 4.0
    record = {"worker": os.environ.get("PYTEST_XDIST_WORKER"), "mask": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "count": torch.cuda.device_count(), "torch_uuid": str(torch.cuda.get_device_properties(0).uuid)}
    pathlib.Path(os.environ["SCALEOUT_RECORD"]).write_text(json.dumps(record))

@pytest.mark.lm_requires(gpus=2)
def test_wider_than_the_worker():
    pass
EOF
export SCALEOUT_RECORD="$OUT/pin.json"
rc=$(run pin_n1 60 -n 1 -v -rs --lm-gpus-per-worker=1 --lm-leak=fail test_pin.py)
"$PY" - "$OUT/pin.json" "$NVML_UUID" <<'EOF'
import json, sys
rec, uuid = json.load(open(sys.argv[1])), sys.argv[2]
assert rec["worker"] == "gw0" and rec["mask"] == uuid, rec
assert rec["count"] == 1 and rec["torch_uuid"].lower() in uuid.lower(), rec
EOF
ok=$?; [ "$rc" -eq 0 ] || ok=1
grep -q "1 passed, 1 skipped" "$OUT/pin_n1.txt" && grep -q "needs 2 GPUs; xdist worker gw0 holds 1" \
  "$OUT/pin_n1.txt" || ok=1
check pin_n1 $ok "-n 1 --lm-leak=fail: worker gw0 got CUDA_VISIBLE_DEVICES=$(cat "$OUT/pin.json" 2>/dev/null), \
the 2-GPU test skipped naming the worker (pytest exit $rc)"
rc=$(run pin_n2 60 -n 2 -rs --lm-gpus-per-worker=1 test_pin.py)
grep -q "1 passed, 1 skipped" "$OUT/pin_n2.txt"; ok=$?
[ "$rc" -eq 0 ] || ok=1
check pin_n2_extra_worker $ok "-n 2 on one GPU: the second worker holds none, the 1-GPU test ran on the \
one that holds it (pytest exit $rc)"
rc=$(run pin_auto 60 -n auto --lm-gpus-per-worker=1 test_pin.py)
grep -q "created: 1/1 worker" "$OUT/pin_auto.txt"; ok=$?; [ "$rc" -eq 0 ] || ok=1
check pin_auto $ok "-n auto starts one worker per GPU (pytest exit $rc)"

# --- 2. leak check -------------------------------------------------------------------------------
cat > "$WORK/test_leak.py" <<'EOF'
import pytest
import torch

KEEP = []

@pytest.mark.lm_requires(gpus=1)
def test_a_creates_the_context():
    x = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
    x.fill_(1)
    del x

@pytest.mark.lm_requires(gpus=1)
def test_b_keeps_a_tensor_alive():
    KEEP.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda").fill_(1))

@pytest.mark.lm_requires(gpus=1)
def test_c_frees_what_it_took():
    x = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    x.fill_(1)
    del x
EOF
rc=$(run leak 60 --lm-leak=fail -rA --durations=0 -p no:xdist test_leak.py)
grep -q "ERROR at teardown of test_b_keeps_a_tensor_alive" "$OUT/leak.txt" \
  && grep -q "256 MiB more in use" "$OUT/leak.txt" \
  && grep -q "3 passed, 1 error" "$OUT/leak.txt"; ok=$?
check leak $ok "--lm-leak=fail: only the test keeping 256 MiB alive errors, with the amount (pytest exit $rc)"
grep -E "more in use|not counted" "$OUT/leak.txt" | tee -a "$OUT/summary.txt"

# --- 3. lm_isolated ------------------------------------------------------------------------------
cat > "$WORK/test_iso.py" <<'EOF'
import os, sys
import pytest

@pytest.mark.lm_isolated
@pytest.mark.lm_requires(gpus=1)
def test_isolated_gpu():
    import torch
    assert os.environ["CUDA_VISIBLE_DEVICES"].startswith(("GPU-", "MIG-"))
    assert torch.cuda.device_count() == 1
    assert float(torch.ones(3, device="cuda").sum()) == 3.0

@pytest.mark.lm_isolated
@pytest.mark.lm_requires(gpus=1)
def test_isolated_failure_keeps_its_traceback():
    import torch
    total = float(torch.zeros(2, device="cuda").sum())
    assert total == 1.0, "expected failure"

def test_outer_process_never_started_cuda():
    torch = sys.modules.get("torch")
    assert torch is None or not torch.cuda.is_initialized()
EOF
rc=$(run isolated 90 -rA -p no:xdist test_iso.py)
grep -q "1 failed, 2 passed" "$OUT/isolated.txt" \
  && grep -q "assert total == 1.0, \"expected failure\"" "$OUT/isolated.txt" \
  && grep -q "AssertionError: expected failure" "$OUT/isolated.txt"; ok=$?
check isolated $ok "lm_isolated on the GPU: pass, failure with its traceback, outer process without CUDA (pytest exit $rc)"

log "done: $FAILED failed check(s)"
rm -rf "$WORK"
exit "$FAILED"
