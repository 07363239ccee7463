#!/usr/bin/env bash
# Every GPU check of the project in one bounded run, for a machine lent for a few minutes.
# From the repository root, with .gpu/kit (and .gpu/extra-wheels) carried along and $OUT a folder
# that comes back:   bash gpu_checks/run_all.sh [STEP...]
# STEPs: hardware bench scaleout plugin (default: all, in that order); name some to run only those.
# Order: most valuable first, each check in its own $OUT subfolder and under its own time limit,
# strictly one after another (the leak check reads device-wide NVML memory and the start-up
# benchmark times cold starts: neither may share the GPU with another check).
# Limits (seconds) are overridable: BENCH_S, PLUGIN_S, SCALEOUT_S, HARDWARE_S.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
BASE="${OUT:-$(pwd)/gpu_out}"
mkdir -p "$BASE"
T0=$(date +%s)
WANT=" ${*:-hardware bench scaleout plugin} "
for s in $WANT; do
  case "$s" in hardware|bench|scaleout|plugin) ;; *) echo "run_all: unknown step '$s'" >&2; exit 2;; esac
done
step() {  # step NAME LIMIT COMMAND...
  local name="$1" limit="$2"; shift 2
  case "$WANT" in *" $name "*) ;; *) return 0;; esac
  echo "[run_all +$(($(date +%s) - T0))s] $name (limit ${limit}s)" | tee -a "$BASE/run_all.txt"
  local rc=0
  timeout -k 5 "$limit" "$@" > "$BASE/$name.log" 2>&1 || rc=$?
  echo "[run_all +$(($(date +%s) - T0))s] $name exit $rc" | tee -a "$BASE/run_all.txt"
  tail -n 15 "$BASE/$name.log"
}
step hardware "${HARDWARE_S:-90}" env OUT="$BASE/hardware" HARDWARE_CHECK_BUDGET_S=60 python3 gpu_checks/hardware_check.py
step bench "${BENCH_S:-200}" env OUT="$BASE/bench" KIT_SITE=/tmp/site-bench BENCH_TOTAL_TIMEOUT=170 bash gpu_checks/bench_gpu.sh
step scaleout "${SCALEOUT_S:-60}" env OUT="$BASE" bash gpu_checks/scaleout_gpu.sh
step plugin "${PLUGIN_S:-140}" env OUT="$BASE/plugin" KIT_SITE=/tmp/site-plugin SUITE_TIMEOUT=110 bash gpu_checks/plugin_gpu.sh
echo "[run_all +$(($(date +%s) - T0))s] done" | tee -a "$BASE/run_all.txt"
