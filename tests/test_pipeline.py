"""End to end on tiny data: overfitting, export and resume round trips, bad checkpoints, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.data.synthetic import pointmass_episodes
from diffuser.data.windows import GoalDataset
from diffuser.diffusion.model import DiffusionConfig
from diffuser.models.temporal_unet import UNetConfig
from diffuser.planning.planner import Planner
from diffuser.pretrained import build_diffusion, export_state, load_model
from diffuser.training.checkpoint import CheckpointError, CheckpointNotFoundError
from diffuser.training.trainer import Trainer, TrainerConfig

TINY_UNET = UNetConfig(dim=8, dim_mults=(1, 2))
TINY_DIFFUSION = DiffusionConfig(num_steps=10, prediction_type="x0", clip_denoised=True)


def _setup(num_episodes=3, horizon=16):
    episodes = pointmass_episodes(num_episodes, seed=0)
    normalizer = TrajectoryNormalizer("limits").fit(episodes)
    data = GoalDataset(episodes, horizon, normalizer, padding="edge")
    return episodes, normalizer, data


def _train(tmp_path, data, normalizer, steps, **kw):
    torch.manual_seed(0)
    model = build_diffusion(data.layout, data.horizon, TINY_UNET, TINY_DIFFUSION)
    cfg = TrainerConfig(steps=steps, batch_size=16, lr=3e-3, ema_start=10_000, val_every=0, log_every=10,
                        save_every=kw.pop("save_every", 0), device="cpu", progress=False, seed=0, **kw)

    def export_fn(ema_model, step):
        return export_state(ema_model, normalizer, TINY_UNET, step=step, dataset="synthetic/pointmass")

    return Trainer(model, data, cfg, tmp_path, export_fn=export_fn), model


class OneWindow(torch.utils.data.Dataset):
    def __init__(self, dataset, index, n=64):
        self.item, self.n = dataset[index], n
        self.layout, self.horizon = dataset.layout, dataset.horizon

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.item


def test_overfit_one_trajectory_and_reproduce_it_from_its_ends(tmp_path):
    _, normalizer, data = _setup()
    item = data[5]
    trainer, model = _train(tmp_path, OneWindow(data, 5), normalizer, steps=400)
    trainer.train()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < 0.1 * losses[0], losses
    model.eval()
    x = item["trajectories"]
    out = model.sample(4, conditions={0: item["conditions"][0], -1: item["conditions"][15]},
                       generator=torch.Generator().manual_seed(0)).trajectories
    err = (out - x).abs().mean().item()
    assert err < 0.05, f"sampled trajectories are {err:.3f} away from the training trajectory"


def test_export_round_trip_gives_identical_samples(tmp_path):
    _, normalizer, data = _setup()
    trainer, _ = _train(tmp_path, data, normalizer, steps=5)
    trainer.train()
    loaded = load_model(tmp_path)  # a run folder: finds checkpoint/ inside
    tensors, config = export_state(trainer.ema.ema_model, normalizer, TINY_UNET)
    start = data[0]["conditions"][0]
    a = trainer.ema.ema_model.sample(2, conditions={0: start}, generator=torch.Generator().manual_seed(3))
    b = loaded.model.sample(2, conditions={0: start}, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.trajectories, b.trajectories)
    for key in normalizer.state_dict():
        assert torch.equal(normalizer.state_dict()[key], loaded.normalizer.state_dict()[key])


def test_resume_round_trip_gives_identical_weights_and_samples(tmp_path):
    _, normalizer, data = _setup()
    full, _ = _train(tmp_path / "full", data, normalizer, steps=8)
    full.train()
    part, _ = _train(tmp_path / "part", data, normalizer, steps=4, save_every=4)
    part.train()
    resumed, _ = _train(tmp_path / "part", data, normalizer, steps=8)
    resumed.resume(tmp_path / "part")
    resumed.train()
    a, b = load_model(tmp_path / "full"), load_model(tmp_path / "part")
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    planner_a, planner_b = Planner(a.model, a.normalizer), Planner(b.model, b.normalizer)
    start = np.array([0.1, -0.2, 0.0, 0.0])
    assert torch.equal(planner_a.plan(start, seed=1).states, planner_b.plan(start, seed=1).states)


def test_planner_constraints_hold_in_raw_units_and_seed_determinism(tmp_path):
    _, normalizer, data = _setup()
    trainer, model = _train(tmp_path, data, normalizer, steps=2)
    trainer.train()
    planner = Planner(model.eval(), normalizer)
    start, goal = np.array([0.3, -0.4, 0.05, 0.0]), np.array([-0.5, 0.6])
    plan = planner.plan(start, goal, goal_dims=[0, 1], num_samples=3, seed=0, return_chain=True)
    assert plan.states.shape == (3, 16, 4) and plan.actions.shape == (3, 16, 2)
    np.testing.assert_allclose(plan.states[:, 0].numpy(), np.repeat(start[None], 3, 0), atol=1e-5)
    np.testing.assert_allclose(plan.states[:, -1, :2].numpy(), np.repeat(goal[None], 3, 0), atol=1e-5)
    assert plan.chain.shape == (3, 11, 16, 4)
    again = planner.plan(start, goal, goal_dims=[0, 1], num_samples=3, seed=0)
    assert torch.equal(plan.states, again.states)


def test_bad_inputs(tmp_path):
    _, normalizer, data = _setup()
    trainer, model = _train(tmp_path, data, normalizer, steps=2)
    trainer.train()
    planner = Planner(model.eval(), normalizer)
    with pytest.raises(ValueError, match=r"start state must have shape \(4,\)"):
        planner.plan(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        planner.plan(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="valid horizons"):
        planner.plan(np.zeros(4), horizon=15)
    with pytest.raises(CheckpointNotFoundError):
        load_model(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="trained on dataset 'synthetic/pointmass'"):
        load_model(tmp_path, dataset="diffuser/pointmaze/umaze-v2")
    with pytest.raises(CheckpointError, match="sizes differ"):
        load_model(tmp_path, layout=TrajectoryLayout(observation_dim=11, action_dim=3))
    ckpt = tmp_path / "checkpoint"
    # A checkpoint whose config describes another model.
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["dim"] = 16
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(ckpt)
    # A truncated weights file.
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(ckpt)
    with pytest.raises(ValueError, match="valid horizons"):
        build_diffusion(data.layout, 30, UNetConfig(dim=8, dim_mults=(1, 2, 4)), TINY_DIFFUSION)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "diffuser.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_train_then_plan(tmp_path):
    run = tmp_path / "run"
    r = _cli("train", "experiment=demo_pointmass", "trainer.steps=3", "data.synthetic_episodes=6",
             "data.horizon=16", "model.dim=8", "model.dim_mults=[1,2]", f"run_dir={run}", "trainer.device=cpu",
             f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "checkpoint" / "model.safetensors").exists() and (run / "metrics.csv").exists()
    out = tmp_path / "plan.json"
    r = _cli("plan", "sample", str(run), "--start", "0.1,0.2,0,0", "--goal", "0.5,-0.5", "--goal-dims", "0,1",
             "--sampler", "ddim", "--steps", "4", "--out", str(out), "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(out.read_text())
    assert np.allclose(plan["states"][0], [0.1, 0.2, 0, 0], atol=1e-5)
    assert np.allclose(plan["states"][-1][:2], [0.5, -0.5], atol=1e-5)


def test_cli_rejects_config_typos_and_bad_checkpoints(tmp_path):
    r = _cli("train", "model.dimm=8", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode != 0 and "dimm" in r.stderr
    r = _cli("plan", "sample", str(tmp_path / "missing"), "--start", "0,0,0,0", cwd=tmp_path)
    assert r.returncode == 2 and "no checkpoint" in r.stderr.lower()
