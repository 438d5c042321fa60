#!/usr/bin/env bash
# Collect the four locomotion datasets of one env from its exported policies, niced, one thread; the
# reports (sizes, episode counts, reference scores, timings) go to results/locomotion/<env>-<level>.json.
#   scripts/collect_locomotion.sh hopper [extra options for every level, e.g. --steps 100000 --overwrite]
#   PYTHON=...  interpreter (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
env="${1:?usage: scripts/collect_locomotion.sh ENV [options]}"; shift
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p results/locomotion
for level in medium expert medium-replay medium-expert; do
  extra=("$@")
  if [ "$level" = medium-replay ] || [ "$level" = medium-expert ]; then  # --steps means buffer size / is ignored there
    extra=(); skip=0
    for a in "$@"; do
      if [ "$skip" = 1 ]; then skip=0; continue; fi
      if [ "$a" = --steps ]; then skip=1; continue; fi
      extra+=("$a")
    done
  fi
  nice -n 19 "$PYTHON" -m diffuser.cli collect locomotion --env "$env" --level "$level" --json --no-progress \
    ${extra[@]+"${extra[@]}"} > "results/locomotion/$env-$level.json"
  echo "$env $level: $(grep -E '"(steps|episodes|seconds_total|size_bytes)"' "results/locomotion/$env-$level.json" | tr -d ' \n')"
done
