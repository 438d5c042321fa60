"""2-D toy: a ring of 8 Gaussians times a bar, sampled as a product of two diffusion models.

Both factors are Gaussian mixtures, so the true product is a mixture too (computed exactly, drawn
exactly) and the noised factors have exact scores and energies. Three kinds of expert pairs are
composed:

- ``exact``: the analytic noised mixtures (no model error: what remains is the sampler's bias);
- ``score``: two small MLP ε-models trained on samples of each factor;
- ``energy``: two energy-parameterised MLPs (ε = σ∇E), which MALA and HMC can Metropolis-correct;

and sampled with plain reverse diffusion (summed scores) and with each corrector. Sample quality is
measured against exact product samples: MMD² (RBF kernels at several bandwidths) and the KL divergence
KL(true ‖ samples) between histograms on a grid.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffuser.diffusion.correctors import HMC, MALA, UHMC, ULA
from diffuser.diffusion.energy import EnergyDenoiser
from diffuser.diffusion.experts import DenoiserExpert
from diffuser.diffusion.loop import sample
from diffuser.diffusion.mixtures import GaussianMixture, MixtureExpert
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.models.mlp import MLPDenoiser

RING_RADIUS, RING_STD = 0.8, 0.08
BAR_STD = (0.7, 0.2)  # an elongated Gaussian along x
BOUNDS = (-1.3, 1.3)


def ring() -> GaussianMixture:
    angles = np.arange(8) * 2 * np.pi / 8
    return GaussianMixture(np.stack([RING_RADIUS * np.cos(angles), RING_RADIUS * np.sin(angles)], 1), RING_STD)


def bar() -> GaussianMixture:
    return GaussianMixture([[0.0, 0.0]], [list(BAR_STD)])


def default_samplers() -> dict:
    """Correctors compared (None: plain reverse diffusion with summed scores). Equal budgets: ULA and
    MALA take 4 steps per level, the Hamiltonian ones 2 trajectories of 2 leapfrog steps. Step sizes
    were picked from a small sweep with the exact experts (README)."""
    return {
        "naive": None,
        "ULA": ULA(4, 0.5),
        "UHMC": UHMC(2, 1.0, 2),
        "MALA": MALA(4, 0.02, scale="fixed"),
        "HMC": HMC(2, 1.0, 2),
    }


def train_toy_model(mixture: GaussianMixture, schedule: NoiseSchedule, *, energy: bool, steps: int,
                    seed: int, batch_size: int = 512, hidden: int = 128) -> nn.Module:
    """An ε-model (or an energy model) of ``mixture``, trained on fresh exact samples each step."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net: nn.Module = MLPDenoiser((1, 2), hidden=hidden, layers=3)
    if energy:
        net = EnergyDenoiser(net, torch.as_tensor(np.sqrt(1 - schedule.alpha_bar)))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in range(steps):
        x0 = mixture.sample(batch_size, gen)[:, None, :]
        t = torch.randint(0, schedule.num_steps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        xt = schedule.q_sample(x0, t, eps)
        if energy:
            xt.requires_grad_(True)
        loss = (net(xt, t) - eps).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.05, 0.1, 0.2, 0.5)) -> float:
    """Unbiased MMD² between point sets (n, 2) and (m, 2), summed over RBF bandwidths."""
    x, y = x.double(), y.double()
    total = 0.0
    dxx, dyy, dxy = torch.cdist(x, x).square(), torch.cdist(y, y).square(), torch.cdist(x, y).square()
    n, m = len(x), len(y)
    for h in bandwidths:
        k = lambda d: torch.exp(-d / (2 * h * h))  # noqa: E731
        kxx, kyy = k(dxx), k(dyy)
        total += float((kxx.sum() - kxx.diag().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
                       - 2 * k(dxy).mean())
    return total


def grid_kl(samples: torch.Tensor, truth: GaussianMixture, bins: int = 25) -> float:
    """KL(true ‖ samples) between the true density integrated on a grid and a smoothed histogram."""
    edges = np.linspace(*BOUNDS, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    gx, gy = np.meshgrid(centres, centres, indexing="ij")
    p = truth.log_prob(torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))).exp().numpy()
    p = p / p.sum()
    h, _, _ = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges, edges])
    q = (h.ravel() + 0.5) / (h.sum() + 0.5 * h.size)  # add-half smoothing: empty bins stay finite
    keep = p > 1e-12
    return float((p[keep] * np.log(p[keep] / q[keep])).sum())


def run_toy(*, out_dir: str | Path = "assets", seed: int = 0, num_samples: int = 2000, train_steps: int = 1500,
            num_steps: int = 50, samplers: dict | None = None, figure: bool = True) -> dict:
    """Train the four toy models, sample every (experts, sampler) pair, measure, plot; returns the entry
    for results/compose.json."""
    t_start = time.time()
    schedule = NoiseSchedule(num_steps, "cosine")
    A, B = ring(), bar()
    truth = A.product(B)
    gen = torch.Generator().manual_seed(seed + 12345)
    reference = truth.sample(num_samples, gen)
    floor = {"mmd2": mmd2(truth.sample(num_samples, gen), reference), "kl": grid_kl(truth.sample(num_samples, gen), truth)}

    t0 = time.time()
    models = {(kind, name): train_toy_model(m, schedule, energy=kind == "energy", steps=train_steps, seed=seed + i)
              for kind in ("score", "energy") for i, (name, m) in enumerate([("ring", A), ("bar", B)])}
    train_seconds = time.time() - t0
    pairs = {
        "exact": [MixtureExpert(A, name="ring"), MixtureExpert(B, name="bar")],
        "score": [DenoiserExpert(models["score", n], "epsilon", name=n) for n in ("ring", "bar")],
        "energy": [DenoiserExpert(models["energy", n], "epsilon", name=n) for n in ("ring", "bar")],
    }
    samplers = samplers or default_samplers()
    rows, samples = [], {}
    for kind, experts in pairs.items():
        for name, corrector in samplers.items():
            if corrector is not None and corrector.needs_energy and kind == "score":
                continue  # a score model has no energy to test proposals with
            t0 = time.time()
            res = sample(experts, schedule, (num_samples, 1, 2), corrector=corrector,
                         generator=torch.Generator().manual_seed(seed))
            x = res.trajectories[:, 0].float()
            samples[kind, name] = x
            rows.append({"experts": kind, "sampler": name, "corrector": repr(corrector),
                         "mmd2": mmd2(x, reference), "grid_kl": grid_kl(x, truth),
                         "score_evals": res.score_evals, "energy_evals": res.energy_evals,
                         "acceptance_mean": res.acceptance_mean, "seconds": round(time.time() - t0, 2)})
    # Each factor alone, sampled by its own model: the models' own error, for reference.
    single = {}
    for kind in ("score", "energy"):
        for name, m in (("ring", A), ("bar", B)):
            res = sample([pairs[kind][0 if name == "ring" else 1]], schedule, (num_samples, 1, 2),
                         generator=torch.Generator().manual_seed(seed))
            single[f"{kind}/{name}"] = mmd2(res.trajectories[:, 0], m.sample(num_samples, gen))
    entry = {
        "config": {"ring": {"modes": 8, "radius": RING_RADIUS, "std": RING_STD}, "bar": {"std": list(BAR_STD)},
                   "schedule": repr(schedule), "num_samples": num_samples, "train_steps": train_steps,
                   "model": "MLPDenoiser(hidden=128, layers=3)", "samplers": {k: repr(v) for k, v in samplers.items()}},
        "seed": seed, "rows": rows, "noise_floor": floor, "single_model_mmd2": single,
        "train_seconds": round(train_seconds, 1), "wall_seconds": round(time.time() - t_start, 1),
        "command": "diffuser compose toy",
    }
    if figure:
        entry["figure"] = str(plot_toy(samples, truth, Path(out_dir) / "compose_toy.png", rows))
    return entry


def plot_toy(samples: dict, truth: GaussianMixture, path: Path, rows: list[dict]) -> Path:
    from diffuser.viz.plans import _plt, _save

    plt = _plt()

    kinds = ["exact", "score", "energy"]
    names = list(dict.fromkeys(k[1] for k in samples))
    fig, axes = plt.subplots(len(kinds), len(names), figsize=(2.6 * len(names), 2.6 * len(kinds)), squeeze=False)
    g = np.linspace(*BOUNDS, 200)
    gx, gy = np.meshgrid(g, g, indexing="xy")
    dens = truth.log_prob(torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))).exp().numpy().reshape(gx.shape)
    by_key = {(r["experts"], r["sampler"]): r for r in rows}
    for i, kind in enumerate(kinds):
        for j, name in enumerate(names):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlim(*BOUNDS), ax.set_ylim(*BOUNDS), ax.set_aspect("equal")
            ax.contourf(gx, gy, dens, levels=12, cmap="Blues")
            if (kind, name) not in samples:
                ax.text(0, 0, "needs energies", ha="center", va="center", fontsize=8)
            else:
                x = samples[kind, name][:600].numpy()
                ax.scatter(x[:, 0], x[:, 1], s=2, c="crimson", alpha=0.6)
                r = by_key[kind, name]
                ax.set_title(f"{kind} · {name}\nMMD² {r['mmd2']:.4f}  KL {r['grid_kl']:.2f}", fontsize=8)
    fig.suptitle("ring × bar: samples (red) over the true product density (blue)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
