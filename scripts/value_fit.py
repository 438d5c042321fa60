"""How well a trained value function fits the returns of its held-out episodes, at a few noise levels.

    python scripts/value_fit.py runs/locomotion/hopper-me-v1-g999/value_boot_s0 \
        --out results/value_fit_hopper-medium-expert-v1_g999_boot.json

writes the report (R² and MAE at t = 0, T/2 and T-1; the value function's targets; git commit and command)
and the scatter of predicted vs true returns (``--figure``; default: beside the report, as .png; its numbers
also go to a .json beside the figure). ``diffuser plan locomotion`` measures the same for the models it
trains; this script is for value functions trained on their own (``diffuser train-value``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffuser.pretrained import RETURN_TARGET_KEYS, load_value
from diffuser.utils import atomic_path, git_commit
from diffuser.viz.values import plot_value_fit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("value", help="a value-function export or its run directory")
    p.add_argument("--out", required=True, help="the report, a .json file")
    p.add_argument("--figure", help="default: the report's path with .png")
    p.add_argument("--windows", type=int, default=2000, help="held-out windows to score")
    p.add_argument("--seed", type=int, default=0, help="which windows and noise")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".json":
        raise SystemExit(f"--out {out} should be a .json file")
    loaded = load_value(args.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_value_fit(loaded, args.figure or out.with_suffix(".png"),
                            windows=args.windows, seed=args.seed)
    fit = json.loads(Path(figure).with_suffix(".json").read_text())
    config = loaded.config
    report = {"value": args.value, "diffusion_checkpoint": config.get("diffusion_checkpoint"),
              "dataset": config.get("dataset"), "steps": config.get("step"), "trainer_seed": config.get("seed"),
              "targets": {k: config.get(k) for k in RETURN_TARGET_KEYS},
              "windows": args.windows, "seed": args.seed, **fit, "figure": str(figure),
              "git_commit": git_commit(), "command": "python " + " ".join(sys.argv)}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    levels = [k for k in fit if k != "held_out"]
    print(", ".join(f"t = {t}: R² {fit[t]['r2']:.2f}, MAE {fit[t]['mae']:.0f}" for t in levels) + f" → {out}")


if __name__ == "__main__":
    main()
