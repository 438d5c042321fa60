"""Train a planner with Hydra (same as `diffuser train`): python scripts/train.py [overrides] [-m for sweeps]."""

import sys

from diffuser.cli import run_hydra_train

if __name__ == "__main__":
    run_hydra_train(sys.argv[1:])
