#!/usr/bin/env bash
# Train the three SAC behaviour policies side by side on one CUDA GPU (diffuser's torch SAC, the update
# replayed as a CUDA graph), each for at most TIME_LIMIT seconds or STEPS steps, then export medium and
# expert of each into OUT/<env>/ (what assets/policies/<env>/ holds).
#   PYTHON=...       interpreter (default python)        SEED=...  seed (default 0)
#   STEPS=...        step cap per env (default 1000000)   TIME_LIMIT=...  seconds per env (default 480)
#   DEVICE=...      torch device (default cuda)
#   OUT=...          export folder (default runs/behaviour/gpu-export)    RUNS=... run folders (default runs/behaviour)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"; SEED="${SEED:-0}"; STEPS="${STEPS:-1000000}"; TIME_LIMIT="${TIME_LIMIT:-480}"; DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-runs/behaviour/gpu-export}"; RUNS="${RUNS:-runs/behaviour}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$RUNS" "$OUT"
pids=()
for env in hopper walker2d halfcheetah; do
  "$PYTHON" -m diffuser.cli collect train-policy --env "$env" --steps "$STEPS" --seed "$SEED" --device "$DEVICE" \
    --time-limit "$TIME_LIMIT" --checkpoint-every 10000 --run-dir "$RUNS/$env-torch-s$SEED" --no-progress \
    > "$RUNS/$env-torch-s$SEED.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for env in hopper walker2d halfcheetah; do
  "$PYTHON" -m diffuser.cli collect export-policy --env "$env" --run-dir "$RUNS/$env-torch-s$SEED" \
    --out "$OUT/$env" --expert-noise 0.1 --no-progress > "$RUNS/$env-torch-s$SEED.export.json" 2>&1 &
done
wait
exit $status
