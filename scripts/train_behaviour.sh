#!/usr/bin/env bash
# Train the three SAC behaviour policies one after another (never two at once on a small machine),
# niced, one torch/BLAS thread each; logs in runs/behaviour/<env>-s<seed>.log.
#   PYTHON=...  interpreter (default: python)      SEED=...  seed (default 0)
#   HOPPER_STEPS / HALFCHEETAH_STEPS / WALKER2D_STEPS  step budgets; CKPT_EVERY  checkpoint spacing
#   TRAINER=torch|sb3  the SAC implementation (default torch; sb3 made the committed assets/policies)
# Afterwards: diffuser collect export-policy --env ENV --run-dir runs/behaviour/ENV-s0 --expert-noise 0.1
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SEED="${SEED:-0}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p runs/behaviour
for spec in "hopper:${HOPPER_STEPS:-300000}" "halfcheetah:${HALFCHEETAH_STEPS:-300000}" "walker2d:${WALKER2D_STEPS:-300000}"; do
  env="${spec%%:*}"; steps="${spec##*:}"
  [ "$steps" -gt 0 ] || continue
  echo "$(date -u +%FT%TZ) start $env $steps steps" >> runs/behaviour/chain.log
  nice -n 19 "$PYTHON" -m diffuser.cli collect train-policy --env "$env" --steps "$steps" --seed "$SEED" \
    --trainer "${TRAINER:-torch}" --checkpoint-every "${CKPT_EVERY:-5000}" --no-progress > "runs/behaviour/$env-s$SEED.log" 2>&1
  echo "$(date -u +%FT%TZ) end $env rc=$?" >> runs/behaviour/chain.log
done
