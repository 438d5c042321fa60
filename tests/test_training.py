"""Trainer, EMA, checkpoints, logging and the shared utils, on a tiny stand-in model (runs in seconds)."""

from __future__ import annotations

import csv
import io
import json
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from diffuser.training import (
    EMA,
    CheckpointError,
    CheckpointNotFoundError,
    CSVLogger,
    NonFiniteLossError,
    Trainer,
    TrainerConfig,
    learning_rate,
    load_export,
    load_resume,
    save_export,
)
from diffuser.training import checkpoint as checkpoint_module
from diffuser.utils import atomic_path, progress, require_package, resolve_device, seed_everything


TRUE_W = torch.tensor([1.0, -2.0, 0.5])


class DictDataset(Dataset):
    """Items shaped like the real ones: a dict with a nested ``conditions`` dict keyed by timestep."""

    def __init__(self, n: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ TRUE_W + 0.3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "conditions": {0: self.x[i, :2]}}


class TinyRegressor(nn.Module):
    """Linear regression whose loss draws from torch, numpy and python RNGs (as diffusion losses draw
    timesteps and noise), so that exact resumption really depends on restoring every RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.register_buffer("offset", torch.zeros(1))
        self.calls = 0
        self.crash_at: int | None = None  # simulated crash (e.g. the machine going down) at this call
        self.nan_at: int | None = None

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        self.calls += 1
        if self.crash_at == self.calls:
            raise RuntimeError("simulated crash")
        jitter = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        x = batch["x"] * jitter + 0.01 * torch.randn_like(batch["x"])
        assert batch["conditions"][0].shape[-1] == 2  # the nested dict survived collation
        pred = self.linear(x).squeeze(-1) + self.offset
        loss = ((pred - batch["y"]) ** 2).mean()
        if self.nan_at == self.calls:
            loss = loss * float("nan")
        return loss, {"mae": (pred - batch["y"]).abs().mean()}


def make_model(seed: int = 0) -> TinyRegressor:
    seed_everything(seed)
    return TinyRegressor()


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------- trainer
def test_loss_decreases_and_logs_are_written(tmp_path):
    cfg = TrainerConfig(steps=120, batch_size=8, lr=0.05, log_every=10, val_every=40, val_batches=2,
                        save_every=0, ema_start=0, ema_every=1, ema_decay=0.9, progress=False)
    trainer = Trainer(make_model(), DictDataset(64), cfg, tmp_path, val_dataset=DictDataset(16, seed=1))
    summary = trainer.train()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(10, 121, 10))
    assert records[-1]["loss"] < 0.05 * records[0]["loss"]
    assert summary["step"] == 120 and summary["loss"] == records[-1]["loss"]
    assert summary["val_loss"] is not None and summary["val_loss"] < 0.1
    for key in ("loss", "mae", "lr", "grad_norm", "steps_per_sec"):
        assert key in records[0]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records)
    assert rows[0]["val_loss"] == "" and rows[3]["val_loss"] != ""  # column added at the first validation
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()  # the final save


def _resume_config(**overrides) -> TrainerConfig:
    base = dict(steps=6, batch_size=4, grad_accumulation=2, lr=1e-2, ema_start=2, ema_every=1, ema_decay=0.9,
                save_every=3, val_every=2, val_batches=2, log_every=1, progress=False, seed=7)
    return TrainerConfig(**{**base, **overrides})


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_resume_matches_uninterrupted_run(tmp_path, lr_schedule):
    data, val = DictDataset(20), DictDataset(8, seed=1)  # 5 batches per epoch: the run crosses epochs
    config = lambda: _resume_config(lr_schedule=lr_schedule)  # noqa: E731
    full = Trainer(make_model(), data, config(), tmp_path / "a", val_dataset=val)
    full.train()

    model = make_model()
    crashed = Trainer(model, data, config(), tmp_path / "b", val_dataset=val)
    model.crash_at = 9  # first micro-batch of step 5, after the save at step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    assert load_resume(tmp_path / "b" / "resume.pt")["step"] == 3

    resumed = Trainer(make_model(seed=123), data, config(), tmp_path / "b", val_dataset=val)
    assert resumed.resume(tmp_path / "b") == 3  # a run directory or the resume file itself
    resumed.train()
    for name, want in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], want), name
    for name, want in full.ema.ema_model.state_dict().items():
        assert torch.equal(resumed.ema.ema_model.state_dict()[name], want), name
    # The logs match too: the crashed run's step-4 row was dropped on resume and logged again.
    strip = lambda rows: [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in rows]  # noqa: E731
    logs_a = read_jsonl(tmp_path / "a" / "metrics.jsonl")
    logs_b = read_jsonl(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in logs_b] == [1, 2, 3, 4, 5, 6]
    assert strip(logs_a) == strip(logs_b)
    if lr_schedule == "cosine":  # the logged rate of step s (1-based) is the schedule's at s - 1
        want = [learning_rate(config(), s - 1) for s in range(1, 7)]
        assert [r["lr"] for r in logs_b] == pytest.approx(want) and want[-1] < 0.1 * want[0]


def test_cosine_learning_rate_closed_form():
    cfg = TrainerConfig(steps=100, lr=1e-3, lr_schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 50) == pytest.approx(0.5e-3)
    assert learning_rate(cfg, 25) == pytest.approx(1e-3 * (1 + np.cos(np.pi / 4)) / 2)
    assert learning_rate(cfg, 100) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(TrainerConfig(steps=100, lr=1e-3), 99) == 1e-3  # constant


def test_nan_loss_raises_and_keeps_last_checkpoint(tmp_path):
    model = make_model()
    trainer = Trainer(model, DictDataset(20), _resume_config(steps=10, save_every=2, grad_accumulation=1,
                                                              lr=3e-3), tmp_path)
    model.nan_at = 3
    with pytest.raises(NonFiniteLossError, match=r"step 3.*lower learning rate \(lr=0.003\)"):
        trainer.train()
    assert load_resume(tmp_path / "resume.pt")["step"] == 2
    assert load_export(tmp_path / "checkpoint")[1]["step"] == 2


def test_export_fn_and_export_config(tmp_path):
    def export_fn(ema_model, step):
        tensors = {f"model.{k}": v for k, v in ema_model.state_dict().items()}
        tensors["normalizer.mean"] = torch.arange(3.0)
        return tensors, {"model": {"dim": 3}, "dataset": "toy-v0"}

    trainer = Trainer(make_model(), DictDataset(20), _resume_config(steps=2, val_every=0), tmp_path,
                      export_fn=export_fn)
    trainer.train()
    tensors, config = load_export(tmp_path / "checkpoint")
    assert torch.equal(tensors["normalizer.mean"], torch.arange(3.0))
    assert torch.equal(tensors["model.linear.weight"], trainer.ema.ema_model.linear.weight)
    assert config["model"] == {"dim": 3} and config["step"] == 2 and config["trainer"]["seed"] == 7


def test_config_validation():
    with pytest.raises(ValueError, match="'adam', 'adamw'"):
        TrainerConfig(optimizer="sgdd")
    with pytest.raises(ValueError, match="steps"):
        TrainerConfig(steps=0)
    with pytest.raises(ValueError, match="lr"):
        TrainerConfig(lr=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainerConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr_schedule.*'constant', 'cosine'"):
        TrainerConfig(lr_schedule="linear")


# ----------------------------------------------------------------------------------------------- EMA
def test_ema_copies_then_blends():
    model = nn.Linear(2, 2)
    model.register_buffer("stat", torch.zeros(2))
    ema = EMA(model, decay=0.9, start_step=2, update_every=2)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.stat.fill_(5.0)
    ema.update(1)  # before start_step: a plain copy
    assert torch.equal(ema.ema_model.weight, model.weight) and torch.equal(ema.ema_model.stat, model.stat)

    old = ema.ema_model.weight.detach().clone()
    with torch.no_grad():
        model.weight.mul_(3.0)
    ema.update(3)  # not a multiple of update_every: unchanged
    assert torch.equal(ema.ema_model.weight, old)
    ema.update(4)
    torch.testing.assert_close(ema.ema_model.weight, 0.9 * old + 0.1 * model.weight)
    assert not ema.ema_model.weight.requires_grad

    fresh = nn.Linear(2, 2)
    fresh.register_buffer("stat", torch.ones(2))
    other = EMA(fresh, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.ema_model.weight, ema.ema_model.weight)
    assert torch.equal(other.ema_model.stat, ema.ema_model.stat)


# ---------------------------------------------------------------------------------------- checkpoint
def _tensors() -> dict[str, torch.Tensor]:
    weight = torch.randn(4, 3)
    return {"model.w": weight, "model.w_tied": weight, "model.t": weight.t(),  # shared storage, a view
            "model.steps": torch.arange(5), "normalizer.mean": torch.randn(3).double()}


def test_export_round_trip(tmp_path):
    tensors = _tensors()
    config = {"model": {"dim_mults": [1, 4, 8], "horizon": 128}, "dataset": "toy-v0", "step": 10, "lr": 2e-4}
    save_export(tmp_path / "ckpt", tensors, config)
    loaded, loaded_config = load_export(tmp_path / "ckpt")
    assert loaded_config == config
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["format_version"] == 1


def test_load_export_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
        load_export(tmp_path / "missing")
    directory = tmp_path / "ckpt"
    save_export(directory, _tensors(), {"a": 1})
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt or truncated"):
        load_export(directory)

    save_export(directory, _tensors(), {"a": 1})
    config_path = directory / "config.json"
    text = config_path.read_text()
    config_path.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="config.json"):
        load_export(directory)
    config_path.write_text(text.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_export(directory)
    config_path.unlink()
    with pytest.raises(CheckpointNotFoundError, match="config.json is missing"):
        load_export(directory)


def test_crash_during_save_keeps_previous_export(tmp_path, monkeypatch):
    directory = tmp_path / "ckpt"
    old = _tensors()
    save_export(directory, old, {"step": 1})

    def crashing_writer(tensors, path, metadata):
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "_write_safetensors", crashing_writer)
    with pytest.raises(OSError, match="disk full"):
        save_export(directory, {"model.w": torch.zeros(2)}, {"step": 2})
    tensors, config = load_export(directory)
    assert config == {"step": 1} and torch.equal(tensors["model.w"], old["model.w"])
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]


def test_corrupt_resume_file(tmp_path):
    path = tmp_path / "resume.pt"
    path.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="resume.pt"):
        load_resume(path)


# ------------------------------------------------------------------------------------- logging/utils
def test_csv_logger_new_keys_and_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    logger = CSVLogger(path)
    logger.log(1, {"loss": 1.0})
    logger.log(2, {"loss": 0.5, "val_loss": torch.tensor(0.7)})
    logger.log(3, {"loss": 0.25})
    logger.close()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["val_loss"] for r in rows] == ["", "0.699999988079071", ""]
    CSVLogger(path, resume_from=2).close()  # a run resumed from step 2 re-does step 3
    with open(path, newline="") as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["1", "2"]


def test_atomic_path_cleans_up_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new but unfinished")
            raise KeyError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_require_package_and_progress_switch(monkeypatch):
    with pytest.raises(ImportError, match=r"pip install 'diffuser-planner\[viz\]'"):
        require_package("surely_not_an_installed_module_xyz", "viz")
    for env, disable, shown in (("0", False, False), ("1", None, True), ("", True, False)):
        monkeypatch.setenv("DIFFUSER_PROGRESS", env)
        bar = progress(range(3), disable=disable, file=io.StringIO())
        assert bar.disable != shown
        bar.close()


def test_seed_everything_repeats_all_rngs():
    seed_everything(3)
    first = (random.random(), float(np.random.rand()), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == first
