"""Soft actor-critic in plain torch: the behaviour policies, on any device, without stable-baselines3.

The same algorithm and defaults as SB3's SAC (Haarnoja et al. 2018 with a learned temperature): a
tanh-squashed Gaussian actor and two Q critics, MLPs of (256, 256) ReLU, Adam at 3e-4, batch 256, γ 0.99,
Polyak τ 0.005, target entropy −act_dim, one gradient step per environment step. What differs is speed:

* the two critics are one batched ensemble (a ``(2, in, out)`` weight per layer), so each layer is one
  matrix product for both;
* the replay buffer lives on the training device and minibatches are drawn there;
* on CUDA the whole update (sampling the minibatch, three losses, three Adam steps, the Polyak update)
  is captured once as a CUDA graph and replayed, and it runs while the CPU steps the environment, so a
  step costs about one network launch instead of a few hundred.

A run writes what :func:`diffuser.collect.behaviour.train_behaviour` writes (``config.json``,
``checkpoints/step_N.{safetensors,json}``, ``log.jsonl``, ``replay.npz``), so
:func:`~diffuser.collect.behaviour.export_levels` picks medium and expert from either.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffuser.collect.policy import MLPActor, PolicyCard, save_policy
from diffuser.utils import atomic_write_bytes, progress, resolve_device

__all__ = ["SACConfig", "SAC", "train_sac"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp of the actor's log-std head


@dataclass
class SACConfig:
    env: str = "hopper"
    steps: int = 300_000             # environment steps (= gradient steps after learning_starts)
    seed: int = 0
    checkpoint_every: int = 10_000
    eval_episodes: int = 5           # deterministic episodes per checkpoint
    run_dir: str = "runs/behaviour/hopper-s0"
    device: str = "auto"             # auto | cpu | cuda[:N]
    cuda_graph: bool = True          # capture the update as a CUDA graph (CUDA only)
    time_limit_s: float | None = None  # stop early (after a final checkpoint) once this much wall time passed
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    learning_starts: int = 5_000     # uniform random actions before the first update
    command: str | None = None


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied at once: ``(n, B, in)`` -> ``(n, B, out)``."""

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class Critics(nn.Module):
    """Two Q networks as one ensemble: ``(obs, act)`` -> ``(2, B)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int = 2) -> None:
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden, 1]
        self.n = n
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        h = torch.cat([obs, act], -1).expand(self.n, -1, -1)
        for layer in self.layers[:-1]:
            h = torch.relu(layer(h))
        return self.layers[-1](h).squeeze(-1)


class GaussianActor(nn.Module):
    """tanh-squashed Gaussian policy; actions in [-1, 1]. ``layers`` + ``mu`` are what gets exported."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.mu = nn.Linear(sizes[-1], act_dim)
        self.log_std = nn.Linear(sizes[-1], act_dim)

    def _trunk(self, obs: torch.Tensor) -> torch.Tensor:
        h = obs
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mu(self._trunk(obs)))

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action and its log-probability (with the tanh change of variables)."""
        h = self._trunk(obs)
        mu = self.mu(h)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        u = mu + log_std.exp() * torch.randn_like(mu)
        a = torch.tanh(u)
        log_normal = -0.5 * ((u - mu) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2) in a form that is stable for large |u|
        log_det = 2 * (math.log(2) - u - nn.functional.softplus(-2 * u))
        return a, (log_normal - log_det).sum(-1)


class SAC:
    """Actor, critics, temperature, their optimizers and a device-resident replay buffer.

    ``update()`` takes one gradient step on a minibatch drawn from the buffer; on CUDA (with
    ``cuda_graph``) it is captured once and replayed, otherwise it runs eagerly — the same math.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, cfg: SACConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.actor = GaussianActor(obs_dim, act_dim, cfg.hidden).to(device)
        self.critics = Critics(obs_dim, act_dim, cfg.hidden).to(device)
        self.target = Critics(obs_dim, act_dim, cfg.hidden).to(device)
        self.target.load_state_dict(self.critics.state_dict())
        self.target.requires_grad_(False)
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)  # SB3's "auto": alpha starts at 1
        self.target_entropy = -float(act_dim)
        capturable = device.type == "cuda"
        adam = dict(lr=cfg.lr, capturable=capturable, foreach=True)
        self.groups = {"critic": list(self.critics.parameters()), "actor": list(self.actor.parameters()),
                       "alpha": [self.log_alpha]}
        self.opts = {k: torch.optim.Adam(ps, **adam) for k, ps in self.groups.items()}
        for ps in self.groups.values():  # static gradient buffers: the update writes into them
            for p in ps:
                p.grad = torch.zeros_like(p)
        # one row per transition: obs | act | reward | next_obs | done (terminated, not truncated)
        self.width = 2 * obs_dim + act_dim + 2
        self.buffer = torch.zeros(capacity, self.width, device=device)
        self.size = torch.zeros((), device=device)  # filled rows, as a float for the index draw
        self.losses = torch.zeros(3, device=device)  # critic, actor, alpha: the last update's
        self._graph: torch.cuda.CUDAGraph | None = None
        self._capture_failed: str | None = None

    # ------------------------------------------------------------------ update
    def _step(self) -> None:
        cfg, o, a = self.cfg, self.obs_dim, self.act_dim
        idx = (torch.rand(cfg.batch_size, device=self.device) * self.size).long()
        idx = torch.minimum(idx, (self.size - 1).long())
        batch = self.buffer[idx]
        obs, act = batch[:, :o], batch[:, o:o + a]
        rew, nobs, done = batch[:, o + a], batch[:, o + a + 1:2 * o + a + 1], batch[:, -1]
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(nobs)
            q_next = self.target(nobs, next_act).min(0).values - alpha * next_logp
            target = rew + cfg.gamma * (1 - done) * q_next
        critic_loss = 0.5 * (self.critics(obs, act) - target).pow(2).mean(-1).sum()
        new_act, logp = self.actor.sample(obs)
        # the actor's loss must not move the critics: differentiate it w.r.t. the actor alone
        actor_loss = (alpha * logp - self.critics(obs, new_act).min(0).values).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        for name, loss in (("critic", critic_loss), ("actor", actor_loss), ("alpha", alpha_loss)):
            params = self.groups[name]
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad.copy_(g)
        for opt in self.opts.values():
            opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target.parameters()), list(self.critics.parameters()), cfg.tau)
            self.losses.copy_(torch.stack([critic_loss, actor_loss, alpha_loss]).detach())

    def _capture(self) -> None:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up off the capture: allocations, cuBLAS handles, Adam state
            for _ in range(3):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        self._graph = graph

    def update(self) -> None:
        use_graph = self.device.type == "cuda" and self.cfg.cuda_graph and self._capture_failed is None
        if use_graph and self._graph is None:
            try:
                self._capture()
            except RuntimeError as err:  # fall back to eager updates; the reason goes into the log
                self._capture_failed = f"{type(err).__name__}: {err}"[:500]
                print(f"CUDA graph capture failed, updating eagerly: {self._capture_failed}", file=sys.stderr)
                return self._step()
        if self._graph is not None:  # capturing only records the kernels: replay runs them
            self._graph.replay()
        else:
            self._step()

    # ------------------------------------------------------------------ acting, buffer, export
    def add(self, i: int, obs: np.ndarray, act: np.ndarray, rew: float, next_obs: np.ndarray, done: bool) -> None:
        row = np.concatenate([obs, act, [rew], next_obs, [float(done)]]).astype(np.float32)
        self.buffer[i].copy_(torch.from_numpy(row))
        self.size.fill_(i + 1)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """A stochastic action in [-1, 1] for one observation (exploration)."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)[None]
        return self.actor.sample(x)[0][0].cpu().numpy()

    def export(self, card: PolicyCard) -> MLPActor:
        """The deterministic actor (tanh of the mean head) as an :class:`MLPActor` on the CPU."""
        actor = MLPActor(card)
        with torch.no_grad():
            for dst, src in zip(actor.layers, self.actor.layers, strict=True):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
            actor.mu.weight.copy_(self.actor.mu.weight)
            actor.mu.bias.copy_(self.actor.mu.bias)
        return actor.eval()


def train_sac(cfg: SACConfig, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Train SAC on ``cfg.env``; checkpoints, log and replay buffer under ``cfg.run_dir``.

    Returns the checkpoint records (also in ``<run_dir>/log.jsonl``). With ``time_limit_s`` the run
    stops early, after a last checkpoint, once that much wall time has passed.
    """
    import gymnasium as gym

    from diffuser.collect.behaviour import REPLAY_KEYS, _save_npz, env_id_for, evaluate_policy

    if cfg.learning_starts < 1 or cfg.steps <= cfg.learning_starts:
        raise ValueError(f"steps ({cfg.steps}) must exceed learning_starts ({cfg.learning_starts}) >= 1")
    device = resolve_device(cfg.device)
    torch.set_num_threads(1)  # batch-256 MLPs gain nothing from more; several runs can share a machine
    env_id = env_id_for(cfg.env)
    run = Path(cfg.run_dir)
    if (run / "log.jsonl").exists():
        raise FileExistsError(f"{run} already holds a training run; pick another --run-dir")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    command = cfg.command or " ".join(shlex.quote(a) for a in sys.argv)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = gym.make(env_id)
    space = env.action_space
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    obs_dim, act_dim = int(env.observation_space.shape[0]), int(space.shape[0])
    agent = SAC(obs_dim, act_dim, capacity=cfg.steps, cfg=cfg, device=device)
    config = {**asdict(cfg), "trainer": "torch-sac", "command": command, "env_id": env_id, "device": str(device),
              "torch": torch.__version__}
    atomic_write_bytes(run / "config.json", (json.dumps(config, indent=2) + "\n").encode())

    replay = {k: np.zeros((cfg.steps, *shape), dtype) for k, shape, dtype in (
        ("observations", (obs_dim,), np.float32), ("next_observations", (obs_dim,), np.float32),
        ("actions", (act_dim,), np.float32), ("rewards", (), np.float32),
        ("terminations", (), bool), ("truncations", (), bool))}
    assert set(replay) == set(REPLAY_KEYS)
    records: list[dict[str, Any]] = []
    episode_returns: list[float] = []
    start = time.time()
    obs, _ = env.reset(seed=cfg.seed)
    episode_return = 0.0
    bar = progress(total=cfg.steps, desc=f"SAC {env_id} ({device.type})",
                   disable=True if show_progress is False else None, unit="step", mininterval=5.0)

    def checkpoint(n: int) -> None:
        card = PolicyCard(env_id=env_id, obs_dim=obs_dim, act_dim=act_dim, hidden=list(cfg.hidden),
                          action_low=[float(x) for x in low], action_high=[float(x) for x in high],
                          train_steps=n, seed=cfg.seed, command=command)
        actor = agent.export(card)
        eval_seed = 1_000_000 + cfg.seed * 10_000 + len(records) * 100  # disjoint from training resets
        t0 = time.time()
        returns = evaluate_policy(actor.act, env_id, cfg.eval_episodes, eval_seed)
        card.eval_return, card.eval_return_std = float(returns.mean()), float(returns.std())
        card.eval_episodes = cfg.eval_episodes
        card.extra = {"eval_seed": eval_seed, "trainer": "torch-sac"}
        save_policy(actor, run / "checkpoints" / f"step_{n:08d}")
        _save_npz(run / "replay.npz", {k: v[:n] for k, v in replay.items()}, compressed=False)
        losses = agent.losses.tolist()
        rec = {"step": n, "wall_s": round(time.time() - start, 1), "eval_s": round(time.time() - t0, 1),
               "eval_return": card.eval_return, "eval_return_std": card.eval_return_std,
               "train_return_last10": float(np.mean(episode_returns[-10:])) if episode_returns else None,
               "train_episodes": len(episode_returns), "critic_loss": losses[0], "actor_loss": losses[1],
               "alpha": float(agent.log_alpha.detach().exp()),
               "cuda_graph": agent._graph is not None, "graph_error": agent._capture_failed}
        records.append(rec)
        with open(run / "log.jsonl", "a") as handle:
            handle.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    try:
        for n in range(cfg.steps):
            if n < cfg.learning_starts:
                action = rng.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                action = agent.act(obs)  # waits for the previous update (same stream), then...
                agent.update()           # ...launches this one, which runs while the env steps below
            next_obs, reward, terminated, truncated, _ = env.step(low + (action + 1) * (high - low) / 2)
            for key, value in (("observations", obs), ("next_observations", next_obs), ("actions", action),
                               ("rewards", reward), ("terminations", terminated), ("truncations", truncated)):
                replay[key][n] = value
            agent.add(n, obs, action, float(reward), next_obs, bool(terminated))
            episode_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                episode_returns.append(episode_return)
                episode_return = 0.0
                obs, _ = env.reset()
            bar.update(1)
            taken = n + 1
            out_of_time = cfg.time_limit_s is not None and time.time() - start > cfg.time_limit_s
            if taken % cfg.checkpoint_every == 0 or taken == cfg.steps or out_of_time:
                checkpoint(taken)
            if out_of_time:
                print(f"time limit {cfg.time_limit_s:.0f} s reached after {taken} steps", flush=True)
                break
    finally:
        bar.close()
        env.close()
    return records
