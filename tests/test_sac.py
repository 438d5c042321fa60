"""The project's own SAC (diffuser.collect.sac): its math, its update, and a tiny training run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuser.collect.policy import PolicyCard, load_policy
from diffuser.collect.sac import SAC, Critics, GaussianActor, SACConfig, train_sac


def _fill(agent: SAC, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        obs, nobs = rng.normal(size=agent.obs_dim), rng.normal(size=agent.obs_dim)
        act = rng.uniform(-1, 1, agent.act_dim)
        agent.add(i, obs, act, float(obs[0] - act[0]), nobs, bool(rng.random() < 0.1))


def test_log_prob_is_the_tanh_gaussian_density():
    torch.manual_seed(0)
    actor = GaussianActor(5, 3, (16,))
    obs = torch.randn(64, 5)
    torch.manual_seed(1)
    action, logp = actor.sample(obs)
    h = torch.relu(actor.layers[0](obs))
    mu, log_std = actor.mu(h), actor.log_std(h).clamp(-20, 2)
    base = torch.distributions.Normal(mu, log_std.exp())
    dist = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
    keep = (action.abs() < 0.999).all(-1)  # atanh is ill-conditioned at the bounds
    expected = (base.log_prob(u) - torch.log1p(-torch.tanh(u) ** 2)).sum(-1)
    assert keep.sum() > 32
    assert torch.allclose(logp[keep], expected[keep], atol=1e-3)
    assert torch.allclose(dist.log_prob(action).sum(-1)[keep], expected[keep], atol=1e-3)


def test_critic_ensemble_members_are_independent_linear_stacks():
    torch.manual_seed(0)
    critics = Critics(4, 2, (8,))
    obs, act = torch.randn(10, 4), torch.randn(10, 2)
    q = critics(obs, act)
    assert q.shape == (2, 10)
    x = torch.cat([obs, act], -1)
    for k in range(2):
        first, last = critics.layers
        h = torch.relu(x @ first.weight[k] + first.bias[k])
        assert torch.allclose(q[k], (h @ last.weight[k] + last.bias[k]).squeeze(-1), atol=1e-6)
    assert not torch.allclose(q[0], q[1])


def test_export_is_the_deterministic_actor_on_the_env_bounds():
    cfg = SACConfig(hidden=(16, 16))
    agent = SAC(6, 2, capacity=10, cfg=cfg, device=torch.device("cpu"))
    card = PolicyCard(env_id="Test-v0", obs_dim=6, act_dim=2, hidden=[16, 16], action_low=[-2.0, 0.0],
                      action_high=[2.0, 1.0])
    exported = agent.export(card)
    obs = torch.randn(7, 6)
    a = agent.actor.deterministic(obs)
    expected = a * torch.tensor([2.0, 0.5]) + torch.tensor([0.0, 0.5])
    assert torch.allclose(exported(obs), expected, atol=1e-6)


def test_update_regresses_rewards_and_moves_targets_by_tau():
    torch.manual_seed(0)
    cfg = SACConfig(hidden=(64, 64), gamma=0.0, batch_size=128, lr=1e-3)  # gamma 0: Q's target is the reward
    agent = SAC(4, 2, capacity=512, cfg=cfg, device=torch.device("cpu"))
    _fill(agent, 512)
    before_target = [p.clone() for p in agent.target.parameters()]
    agent.update()
    first = agent.losses[0].item()
    for old, new, live in zip(before_target, agent.target.parameters(), agent.critics.parameters()):
        assert torch.allclose(new, (1 - cfg.tau) * old + cfg.tau * live, atol=1e-6)
    for _ in range(300):
        agent.update()
    assert agent.losses[0].item() < 0.2 * first
    # the temperature follows the entropy target: it moves away from its start of 1
    assert not math.isclose(agent.log_alpha.item(), 0.0, abs_tol=1e-3)


@pytest.fixture
def tiny_run(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")

    def run(name: str, **kw):
        cfg = SACConfig(env="hopper", steps=300, learning_starts=100, checkpoint_every=150, eval_episodes=1,
                        hidden=(32, 32), batch_size=32, run_dir=str(tmp_path / name), command="test", **kw)
        return cfg, train_sac(cfg, show_progress=False)
    return run


def test_tiny_training_run_writes_checkpoints_log_and_replay(tiny_run):
    from diffuser.collect.behaviour import export_levels, read_log

    cfg, records = tiny_run("a")
    assert [r["step"] for r in records] == [150, 300] == [r["step"] for r in read_log(cfg.run_dir)]
    actor = load_policy(f"{cfg.run_dir}/checkpoints/step_00000300")
    assert actor.card.train_steps == 300 and actor.card.hidden == [32, 32]
    with np.load(f"{cfg.run_dir}/replay.npz") as replay:
        assert replay["observations"].shape == (300, 11) and replay["actions"].shape == (300, 3)
        assert np.abs(replay["actions"]).max() <= 1.0
        # each episode of the buffer ends in a termination or truncation, then a reset
        ends = np.flatnonzero(replay["terminations"] | replay["truncations"])
        assert len(ends) > 0
        assert not np.allclose(replay["next_observations"][ends[0]], replay["observations"][ends[0] + 1])
        inner = np.setdiff1d(np.arange(299), ends)
        assert np.allclose(replay["next_observations"][inner], replay["observations"][inner + 1])
    config = json.loads(Path(cfg.run_dir, "config.json").read_text())
    assert config["trainer"] == "torch-sac" and config["device"] == "cpu"
    summary = export_levels(cfg.run_dir, f"{cfg.run_dir}/export", eval_episodes=1, show_progress=False)
    assert summary["medium_replay"]["transitions"] == summary["medium"]["step"]


def test_training_is_deterministic_under_a_seed(tiny_run):
    _, first = tiny_run("a", seed=3)
    _, second = tiny_run("b", seed=3)
    _, other = tiny_run("c", seed=4)
    keys = ("eval_return", "critic_loss", "alpha")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    assert [r["critic_loss"] for r in first] != [r["critic_loss"] for r in other]


def test_bad_budget_and_existing_run_are_clear_errors(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="must exceed learning_starts"):
        train_sac(SACConfig(steps=100, learning_starts=100, run_dir=str(tmp_path / "x")))
    cfg, _ = tiny_run("a")
    with pytest.raises(FileExistsError, match="already holds a training run"):
        train_sac(cfg)


def test_cli_train_policy_stops_at_its_time_limit(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    pytest.importorskip("mujoco")
    from diffuser.cli import main

    run = tmp_path / "run"
    main(["collect", "train-policy", "--env", "hopper", "--steps", "5000", "--learning-starts", "100",
          "--time-limit", "0", "--eval-episodes", "1", "--run-dir", str(run), "--no-progress"])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]
    assert "trained 1 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["collect", "train-policy", "--trainer", "sb3", "--time-limit", "5", "--run-dir", str(tmp_path / "b")])
