"""Time train steps and plans at the original Diffuser's configs (same as `diffuser bench`)."""

import argparse

from diffuser.benchmark import run_benchmark

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="results/bench.json")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--configs", nargs="*")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    run_benchmark(out=a.out, repeats=a.repeats, configs=a.configs, compile=a.compile)
