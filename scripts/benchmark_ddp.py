"""Training throughput of data-parallel training on CPUs: 1 process vs N gloo processes.

    python scripts/benchmark_ddp.py                       # 1 vs 2 processes, 200 timed steps each
    python scripts/benchmark_ddp.py --steps 5 --warmup 2 --out /tmp/ddp.json    # a quick check

The model is the small maze model (configs/experiment/maze_umaze.yaml: the width-32 U-Net, H 32,
6-dim transitions, batch 64 per process) trained by the real Trainer on random windows of the maze's
shapes (the speed does not depend on the values, and no dataset is needed). Each setting runs in fresh
processes; the CPU threads are shared out evenly (``--threads`` in total, default all cores), so the
comparison is "the same machine, used by one process or by N". Writes steps/s and samples/s (global
batch x steps/s) per setting, with the config, torch version and git commit, to ``results/ddp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from diffuser.training import distributed  # noqa: E402


class RandomWindows(torch.utils.data.Dataset):
    """Goal windows of the maze's shapes: (H, actions + states) with the first and last state clamped."""

    def __init__(self, n: int, horizon: int, action_dim: int, state_dim: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, horizon, action_dim + state_dim, generator=g) * 2 - 1
        self.action_dim = action_dim

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i]
        return {"trajectories": x, "conditions": {0: x[0, self.action_dim:], len(x) - 1: x[-1, self.action_dim:]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, threads: int, args: dict, out_file: str) -> None:
    from diffuser.data.layout import TrajectoryLayout
    from diffuser.diffusion.model import DiffusionConfig
    from diffuser.models.temporal_unet import UNetConfig
    from diffuser.pretrained import build_diffusion
    from diffuser.training.logging import NullLogger
    from diffuser.training.trainer import Trainer, TrainerConfig
    from diffuser.utils import seed_everything

    torch.set_num_threads(threads)
    if world_size > 1:
        os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
        distributed.init_distributed("cpu")
    try:
        cfg = args["config"]
        horizon = cfg["data"]["horizon"]
        data = RandomWindows(4096, horizon, action_dim=2, state_dim=4)
        layout = TrajectoryLayout(action_dim=2, observation_dim=4)
        seed_everything(0)
        model = build_diffusion(layout, horizon, UNetConfig(**cfg["model"]), DiffusionConfig(**cfg["diffusion"]))
        trainer_cfg = TrainerConfig(**{**cfg["trainer"], "steps": args["warmup"], "batch_size": args["batch_size"],
                                       "val_every": 0, "save_every": 0, "progress": False, "device": "cpu"})
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(model, data, trainer_cfg, run_dir, logger=NullLogger())
            trainer.save = lambda: None  # nothing to keep: time the training steps only
            trainer.train()  # warm-up (allocations, oneDNN kernels, gloo buffers)
            trainer.config.steps = args["warmup"] + args["steps"]
            distributed.barrier()
            start = time.perf_counter()
            trainer.train()
            distributed.barrier()
            elapsed = time.perf_counter() - start
        if rank == 0:
            Path(out_file).write_text(json.dumps({"elapsed_s": elapsed}))
    finally:
        distributed.shutdown()


def run_setting(world_size: int, total_threads: int, args: dict) -> dict:
    threads = max(1, total_threads // world_size)
    with tempfile.TemporaryDirectory() as tmp:
        out_file = str(Path(tmp) / "rank0.json")
        mp.start_processes(_worker, args=(world_size, _free_port(), threads, args, out_file), nprocs=world_size,
                           join=True, start_method="spawn")
        elapsed = json.loads(Path(out_file).read_text())["elapsed_s"]
    steps_per_sec = args["steps"] / elapsed
    global_batch = args["batch_size"] * world_size
    return {"processes": world_size, "backend": "gloo" if world_size > 1 else None, "threads_per_process": threads,
            "batch_per_process": args["batch_size"], "global_batch": global_batch, "timed_steps": args["steps"],
            "elapsed_s": round(elapsed, 3), "steps_per_sec": steps_per_sec,
            "samples_per_sec": steps_per_sec * global_batch}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, help="per process (default: the config's, 64)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the processes")
    parser.add_argument("--experiment", default="maze_umaze", help="the training config (configs/experiment/)")
    parser.add_argument("--out", default="results/ddp.json")
    ns = parser.parse_args(argv)

    from diffuser.config import to_container
    from diffuser.demo import compose_train_config
    from diffuser.utils import atomic_path, git_commit

    config = to_container(compose_train_config([f"experiment={ns.experiment}", "run_dir=unused"]))
    args = {"config": config, "steps": ns.steps, "warmup": ns.warmup,
            "batch_size": ns.batch_size or config["trainer"]["batch_size"]}
    results = []
    for n in ns.procs:
        row = run_setting(n, ns.threads, args)
        print(f"{n} process(es): {row['steps_per_sec']:.2f} steps/s, {row['samples_per_sec']:.0f} samples/s "
              f"(global batch {row['global_batch']}, {row['threads_per_process']} thread(s) each)")
        results.append(row)
    base = results[0]["samples_per_sec"]
    for row in results:
        row["samples_speedup"] = row["samples_per_sec"] / base
    report = {
        "benchmark": "ddp_throughput",
        "description": "Training throughput of the small maze model: 1 process vs N gloo processes on CPUs "
                       "(random windows of the maze's shapes; the CPU threads shared out evenly).",
        "experiment": ns.experiment, "model": config["model"], "diffusion": config["diffusion"],
        "horizon": config["data"]["horizon"], "threads_total": ns.threads, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "git_commit": git_commit(), "command": "python scripts/benchmark_ddp.py "
        + " ".join(sys.argv[1:] if argv is None else argv), "results": results,
    }
    with atomic_path(ns.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"written: {ns.out}")
    return report


if __name__ == "__main__":
    main()
