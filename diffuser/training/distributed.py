"""Data-parallel training with PyTorch's own stack: a process group, DDP, a few collectives.

Launch with ``torchrun`` (one node or many) or ``srun`` under SLURM; each process trains on its own
shard of every global batch (``diffuser.training.data_order``) and DDP averages the gradients, so the
optimizer sees the gradient of the whole global batch. Nothing here is needed for one process: every
helper falls back to the single-process answer when no process group is running.

Where the process group's settings come from:

* ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
* SLURM (``srun``, one task per process): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; the
  master is the first host of ``SLURM_JOB_NODELIST`` unless ``MASTER_ADDR`` is set, and the port is
  derived from ``SLURM_JOB_ID`` unless ``MASTER_PORT`` is set (every task computes the same one).

The backend is ``nccl`` when the processes train on CUDA devices and ``gloo`` on CPUs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "RANK_SEED_STRIDE",
    "DistInfo",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "current",
    "env_info",
    "init_distributed",
    "mean_over_ranks",
    "rank_device",
    "rank_seed",
    "shutdown",
]

# Each rank's diffusion noise comes from seed + rank * this: a large prime, so the ranks' streams are
# unrelated for any realistic seed, and rank 0 keeps exactly the single-process seed.
RANK_SEED_STRIDE = 1_000_003
_DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its global rank, the number of processes, its rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, saves checkpoints and draws progress bars."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + re.split(r"[-,]", ranges)[0]


def env_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """The rank and world size the environment describes: torchrun's variables first, then SLURM's,
    else one process."""
    env = os.environ if environ is None else environ
    try:
        if "WORLD_SIZE" in env and "RANK" in env:  # torchrun (also inside a SLURM allocation)
            return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    except ValueError as err:
        raise ValueError(f"bad distributed environment variable: {err}") from err
    return DistInfo()


def _slurm_rendezvous(env: dict[str, str]) -> None:
    """Fill MASTER_ADDR / MASTER_PORT from SLURM's variables where torchrun did not set them."""
    if "MASTER_ADDR" not in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise ValueError("SLURM_PROCID is set but neither MASTER_ADDR nor SLURM_JOB_NODELIST is; "
                             "set MASTER_ADDR to the first node's address")
        env["MASTER_ADDR"] = _first_host(nodelist)
    if "MASTER_PORT" not in env:
        # Every task of the job derives the same port; jobs sharing a node get different ones.
        env["MASTER_PORT"] = str(_DEFAULT_PORT + 1 + int(env.get("SLURM_JOB_ID", "0")) % 10_000)


def _wants_cuda(device: str | torch.device) -> bool:
    name = str(device)
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def init_distributed(device: str | torch.device = "auto", timeout_minutes: float = 30) -> DistInfo:
    """Join the process group the environment describes (a no-op for one process, or when joined already).

    ``device`` is the trainer's device setting: CUDA means backend ``nccl`` with this process pinned to
    ``cuda:LOCAL_RANK``; anything else means ``gloo``.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; it cannot train on several processes")
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        _slurm_rendezvous(os.environ)  # type: ignore[arg-type]
    backend = "gloo"
    if _wants_cuda(device):
        if torch.cuda.device_count() <= info.local_rank:
            raise RuntimeError(f"local rank {info.local_rank} needs a CUDA device, but this node has "
                               f"{torch.cuda.device_count()}; start at most that many processes per node")
        torch.cuda.set_device(info.local_rank)
        backend = "nccl"
    dist.init_process_group(backend, init_method="env://", rank=info.rank, world_size=info.world_size,
                            timeout=timedelta(minutes=timeout_minutes))
    return info


def current() -> DistInfo:
    """This process's place in the running process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """A CUDA device without an index becomes this process's own GPU, ``cuda:LOCAL_RANK``."""
    if info.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", info.local_rank)
    return device


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s random draws (diffusion noise and timesteps)."""
    return seed + rank * RANK_SEED_STRIDE


def _collective_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: list[float]) -> list[float]:
    """Element-wise mean of ``values`` over all ranks (one all-reduce; the identity for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    packed = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return (packed / dist.get_world_size()).tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
