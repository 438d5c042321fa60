"""Data-parallel training: the sharded data order, DDP equivalence with one process, resumes across
world sizes (2 gloo processes on the CPU, a tiny model, a few steps)."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from diffuser.training import distributed
from diffuser.training.data_order import DataOrder, ShardedBatchSampler
from diffuser.training.trainer import Trainer, TrainerConfig
from diffuser.utils import seed_everything


# ------------------------------------------------------------------------------------------ data order
def _take(sampler: ShardedBatchSampler, batches: int) -> list[list[int]]:
    it = iter(sampler)
    return [next(it) for _ in range(batches)]


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_disjoint_and_their_union_is_the_single_process_order(world_size):
    n, b, seed = 23, 4, 5  # 23 items: global batches straddle epochs
    single = _take(ShardedBatchSampler(n, world_size * b, seed), 12)
    shards = [_take(ShardedBatchSampler(n, b, seed, rank=r, world_size=world_size), 12) for r in range(world_size)]
    for k in range(12):
        union = [i for shard in shards for i in shard[k]]  # rank order = position order in the global batch
        assert union == single[k]
    # Disjoint positions: within an epoch every item appears once across all shards and batches.
    first_epoch = [i for k in range(n // (world_size * b)) for shard in shards for i in shard[k]]
    assert len(first_epoch) == len(set(first_epoch))
    stream = DataOrder(n, seed)
    assert sorted(stream.items(0, n)) == list(range(n)) and sorted(stream.items(n, n)) == list(range(n))
    assert stream.items(0, n) != stream.items(n, n)  # epochs differ


def test_resume_at_another_world_size_continues_at_the_same_item():
    n, seed = 50, 1
    stream = DataOrder(n, seed).items(0, 200)
    # Two processes with batch 3 took 7 global batches: 42 items consumed.
    position = 7 * 2 * 3
    one = _take(ShardedBatchSampler(n, 6, seed, start=position), 3)
    assert [i for batch in one for i in batch] == stream[position : position + 18]
    three = [_take(ShardedBatchSampler(n, 2, seed, rank=r, world_size=3, start=position), 3) for r in range(3)]
    assert [i for k in range(3) for shard in three for i in shard[k]] == stream[position : position + 18]
    with pytest.raises(ValueError, match="rank"):
        ShardedBatchSampler(n, 2, seed, rank=2, world_size=2)


def test_environment_is_read_from_torchrun_then_slurm():
    assert distributed.env_info({}) == distributed.DistInfo()
    assert distributed.env_info({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == distributed.DistInfo(3, 8, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "4242"}
    assert distributed.env_info(slurm) == distributed.DistInfo(5, 16, 1)
    env = dict(slurm)
    distributed._slurm_rendezvous(env)
    assert env["MASTER_ADDR"] == "gpu07" and env["MASTER_PORT"] == str(29500 + 1 + 4242)
    assert distributed._first_host("node1,node2") == "node1"
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 2) == 7 + 2 * 1_000_003


# ------------------------------------------------------------------------------------ DDP equivalence
class Regression(Dataset):
    def __init__(self, n: int = 40) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class DeterministicMLP(nn.Module):
    """No random draws in the loss, so one process with batch 2b and two with batch b must agree exactly
    (a diffusion loss draws per-rank noise and agrees only in distribution)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        pred = self.net(batch["x"]).squeeze(-1)
        return ((pred - batch["y"]) ** 2).mean(), {"mae": (pred - batch["y"]).abs().mean()}


def _trainer(run_dir, steps: int, batch_size: int) -> Trainer:
    seed_everything(0)
    cfg = TrainerConfig(steps=steps, batch_size=batch_size, lr=1e-2, ema_decay=0.9, ema_start=2, ema_every=1,
                        val_every=0, log_every=1, save_every=3, device="cpu", progress=False, seed=0)
    return Trainer(DeterministicMLP(), Regression(), cfg, run_dir)


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    out.update({f"ema.{k}": v.clone() for k, v in trainer.ema.ema_model.state_dict().items()})
    return out


def _worker(rank: int, world_size: int, port: int, root: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    info = distributed.init_distributed("cpu")
    assert info.world_size == world_size and distributed.current().rank == rank
    try:
        root_path = Path(root)
        full = _trainer(root_path / "ddp_full", steps=6, batch_size=4)
        full.train()
        torch.save(_weights(full), root_path / f"ddp_full_rank{rank}.pt")
        _trainer(root_path / "ddp_half", steps=3, batch_size=4).train()  # interrupted at 3 of 6
        resumed = _trainer(root_path / "single_half", steps=6, batch_size=4)  # a 1-process run, resumed by 2
        assert resumed.resume() == 3
        resumed.train()
        torch.save(_weights(resumed), root_path / f"resumed_by_two_rank{rank}.pt")
    finally:
        distributed.shutdown()


def _start_two_processes(worker, root: str) -> None:
    """Run ``worker(rank, 2, port, root)`` on two ranks, forked from a fresh forkserver where there is one.

    Plain fork copies this pytest process, whose OpenMP pool and helper threads from earlier tests can
    leave a lock held in the children (a hang); spawn is safe but re-imports torch in each child (tens of
    seconds here). A forkserver is a fresh process that imports torch (and the torch._dynamo that DDP's
    constructor imports) once; the children fork from it, clean and fast."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed"])
        mp.start_processes(worker, args=(2, _free_port(), root), nprocs=2, join=True, start_method="forkserver")
    else:
        mp.spawn(worker, args=(2, _free_port(), root), nprocs=2, join=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0, msg=key)


def _logged(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_two_gloo_processes_train_like_one_with_the_doubled_batch(tmp_path):
    reference = _trainer(tmp_path / "single_full", steps=6, batch_size=8)
    reference.train()
    expected = _weights(reference)
    _trainer(tmp_path / "single_half", steps=3, batch_size=8).train()

    _start_two_processes(_worker, str(tmp_path))

    rank0, rank1 = (torch.load(tmp_path / f"ddp_full_rank{r}.pt") for r in range(2))
    _assert_close(rank0, expected)
    _assert_close(rank1, rank0)  # weights and EMA identical on every rank
    for r in range(2):  # a 1-process run resumed by 2 processes continues the same data order
        _assert_close(torch.load(tmp_path / f"resumed_by_two_rank{r}.pt"), expected)
    # The logged loss is the mean over ranks, i.e. the global batch's loss: the same as one process logs.
    ddp_log, single_log = _logged(tmp_path / "ddp_full" / "metrics.csv"), _logged(tmp_path / "single_full" / "metrics.csv")
    assert [row["step"] for row in ddp_log] == [str(s) for s in range(1, 7)]
    for a, b in zip(ddp_log, single_log):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)

    # A 2-process run interrupted at step 3, resumed by one process with the doubled batch.
    resumed = _trainer(tmp_path / "ddp_half", steps=6, batch_size=8)
    with pytest.warns(UserWarning, match="2-process run with 1 processes: the data order continues at item 24"):
        assert resumed.resume() == 3
    resumed.train()
    assert resumed.step == 6
    _assert_close(_weights(resumed), expected)


# ------------------------------------------------------------------------------------------- resume
class Crashing(DeterministicMLP):
    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.calls, self.crash_at = 0, crash_at

    def loss(self, batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().loss(batch)


def test_resume_after_an_interruption_continues_the_step_count(tmp_path):
    cfg = dict(steps=7, batch_size=8, lr=1e-2, val_every=0, log_every=1, save_every=2, device="cpu", progress=False)
    seed_everything(0)
    trainer = Trainer(Crashing(crash_at=6), Regression(), TrainerConfig(**cfg), tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.train()  # dies in step 6; the last save was at step 4
    seed_everything(0)
    again = Trainer(Crashing(), Regression(), TrainerConfig(**cfg), tmp_path)
    assert again.resume() == 4
    assert again.train()["start_step"] == 4 and again.step == 7
    assert [row["step"] for row in _logged(tmp_path / "metrics.csv")] == [str(s) for s in range(1, 8)]
    seed_everything(0)
    uninterrupted = Trainer(Crashing(), Regression(), TrainerConfig(**cfg), tmp_path / "straight")
    uninterrupted.train()
    _assert_close(_weights(again), _weights(uninterrupted))
