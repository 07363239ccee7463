#!/usr/bin/env bash
# Cold start-up benchmark on a GPU machine: LMDeploy's PyTorch engine and plain transformers on a
# tiny random Llama (18M parameters, local tokenizer), 2 cold rounds each, phases per round.
#
# From the repository root, with the wheel kit carried along in .gpu/kit (LMDeploy 0.18.0 without
# TurboMind plus what it imports; see docs/BENCHMARKS.md), and $OUT a folder that comes back:
#     bash gpu_checks/bench_gpu.sh
# Writes $OUT/bench.json (rewritten after every round), bench.txt (phase table), bench.png (bench.svg
# where matplotlib is missing), bench.log (progress and errors), machine.txt, status.txt. Every step
# is bounded; a failed step is recorded and the script goes on, so whatever was measured comes back.
# Ends within about 4 minutes.
# Overridable: PYTHON (python3), KIT_WHEELS (.gpu/kit/wheels), KIT_SITE (/tmp/site),
#   BENCH_ROUNDS (2), BENCH_ROUND_TIMEOUT (110 s), BENCH_TOTAL_TIMEOUT (200 s),
#   BENCH_BACKENDS (transformers,pytorch), BENCH_EAGER (1: one more pytorch round with eager_mode).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO="$(pwd)"
PY="${PYTHON:-python3}"
OUT="${OUT:-$REPO/gpu_out}"
WHEELS="${KIT_WHEELS:-$REPO/.gpu/kit/wheels}"
SITE="${KIT_SITE:-/tmp/site}"
ROUNDS="${BENCH_ROUNDS:-2}"
ROUND_TIMEOUT="${BENCH_ROUND_TIMEOUT:-110}"
TOTAL_TIMEOUT="${BENCH_TOTAL_TIMEOUT:-200}"
BACKENDS="${BENCH_BACKENDS:-transformers,pytorch}"
MODEL="${BENCH_MODEL_DIR:-/tmp/lmbench-tiny-llama}"
T0=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PIP_DISABLE_PIP_VERSION_CHECK=1
log() { echo "[bench_gpu +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/status.txt"; }

log "machine"
{
  uname -a
  "$PY" -c 'import sys; print(sys.executable, sys.version)'
  timeout 20 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,memory.used --format=csv
  timeout 20 nvidia-smi | head -n 4
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

log "kit: $WHEELS -> $SITE"
if ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  if timeout 120 bash gpu_checks/install_kit.sh "$PY" "$WHEELS" "$SITE" > "$OUT/kit-install.log" 2>&1; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    log "kit installed"
  else
    log "kit install FAILED (see kit-install.log); the pytorch backend will report itself unavailable"
  fi
else
  log "no kit wheels in $WHEELS; the pytorch backend will report itself unavailable"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

log "versions (package metadata only)"
"$PY" - >> "$OUT/machine.txt" 2>&1 <<'EOF'
from importlib import metadata
for n in ('torch', 'transformers', 'tokenizers', 'triton', 'lmdeploy', 'xgrammar', 'pydantic', 'nvidia-ml-py',
          'pytest', 'pytest-benchmark', 'matplotlib'):
    try:
        print(f'{n:18s} {metadata.version(n)}')
    except metadata.PackageNotFoundError:
        print(f'{n:18s} -')
EOF
tail -n 11 "$OUT/machine.txt"

log "tiny Llama -> $MODEL"
rm -rf "$MODEL"
# the reference size: hidden 256, 2 layers, 4 heads of 64, vocabulary 32000 (about 18M parameters)
if ! timeout 150 "$PY" -c "
from pytest_lmbackend.modeldir import tiny_llama
tiny_llama('$MODEL', vocab_size=32000, hidden_size=256, intermediate_size=768, num_layers=2, num_heads=4)
" > "$OUT/model.log" 2>&1; then
  log "model creation FAILED:"; tail -n 20 "$OUT/model.log"
  exit 1
fi
ls -la "$MODEL" >> "$OUT/model.log"

log "cold benchmark: $BACKENDS, $ROUNDS rounds, ${ROUND_TIMEOUT}s per round, ${TOTAL_TIMEOUT}s in all"
ARGS=()
IFS=',' read -r -a NAMES <<< "$BACKENDS"
for b in "${NAMES[@]}"; do ARGS+=(--backend "$b"); done
timeout -k 10 "$TOTAL_TIMEOUT" "$PY" -m pytest_lmbackend bench "$MODEL" "${ARGS[@]}" --cold \
  --rounds "$ROUNDS" --timeout "$ROUND_TIMEOUT" --save "$OUT/bench.json" --plot "$OUT/bench.png" \
  > "$OUT/bench.txt" 2> "$OUT/bench.log"
RC=$?
log "bench exit $RC (0 all rounds ok, 1 a round crashed or hung, 124 total timeout: bench.json keeps the rounds done)"
cat "$OUT/bench.txt"
tail -n 30 "$OUT/bench.log"

if [ "${BENCH_EAGER:-0}" = "1" ]; then
  log "one pytorch round with eager_mode (no CUDA-graph capture)"
  timeout -k 10 100 "$PY" -m pytest_lmbackend bench "$MODEL" --backend pytorch --rounds 1 --timeout 90 \
    --options '{"eager_mode": true}' --no-overhead --save "$OUT/bench-eager.json" \
    > "$OUT/bench-eager.txt" 2>> "$OUT/bench.log"
  log "eager exit $?"
  cat "$OUT/bench-eager.txt"
fi

# a compact digest last: a remote runner often returns only the tail of the output
"$PY" - "$OUT/bench.json" <<'EOF' || true
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    print('no bench.json:', e); sys.exit(0)
print('machine:', {k: d['machine'].get(k) for k in ('gpus', 'driver', 'cuda')})
for name, b in d['backends'].items():
    s = b['summary']
    wall = s['wall'] and s['wall']['median']
    print(f"{name}: counts={s['counts']} wall_median={wall} coverage_min={s['coverage_min']} errors={s['errors'][:2]}")
    for r in b['rounds']:
        hooks = r['info'].get('hooks_missing')
        print(f"  round {r['index'] + 1} {r['status']} wall={r['wall_s']} hooks_missing={hooks}")
        print('   ', ', '.join(f"{p['parent'] + '/' if p['parent'] else ''}{p['name']}={p['seconds']}" for p in r['phases']))
print('overhead:', d.get('overhead'), 'checks_failed:', d.get('checks_failed'))
EOF
log "done"
exit "$RC"
