#!/usr/bin/env bash
# Collect the four locomotion datasets of one env from its exported policies, niced, one thread; the
# reports (sizes, episode counts, reference scores, timings) go to results/locomotion/<env>-<level>.json.
#   scripts/collect_locomotion.sh hopper [extra options for every level, e.g. --steps 100000 --overwrite]
#   PYTHON=...  interpreter (default: python)
#   VERSION=v1 POLICY_DIR=assets/policies_v1  another policy set: ids diffuser/mujoco/<env>/<level>-v1,
#               reports results/locomotion/<env>-<level>-v1.json (default: v0 from assets/policies)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
env="${1:?usage: scripts/collect_locomotion.sh ENV [options]}"; shift
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
VERSION="${VERSION:-v0}"
suffix=""; [ "$VERSION" = v0 ] || suffix="-$VERSION"
policy_args=()
[ -z "${POLICY_DIR:-}" ] || policy_args=(--policy-dir "$POLICY_DIR")
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
  report="results/locomotion/$env-$level$suffix.json"
  nice -n 19 "$PYTHON" -m diffuser.cli collect locomotion --env "$env" --level "$level" --json --no-progress \
    --dataset-id "diffuser/mujoco/$env/$level-$VERSION" ${policy_args[@]+"${policy_args[@]}"} \
    ${extra[@]+"${extra[@]}"} > "$report"
  echo "$env $level: $(grep -E '"(steps|episodes|seconds_total|size_bytes)"' "$report" | tr -d ' \n')"
done
