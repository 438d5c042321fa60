"""Closed forms of the diffusion process and the behaviour of the one sampling loop."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion import predictions as P
from diffuser.diffusion.constraints import Constraint, Inpaint, state_constraints
from diffuser.diffusion.experts import DenoiserExpert
from diffuser.diffusion.loop import sample
from diffuser.diffusion.model import DiffusionConfig, TrajectoryDiffusion
from diffuser.diffusion.objective import loss_weights
from diffuser.diffusion.samplers import DDIM, DDPM, make_sampler
from diffuser.diffusion.schedules import NoiseSchedule, make_betas


class GaussianDenoiser(nn.Module):
    """The exact x0-predictor E[x_0 | x_t] for data ~ N(mu, s² I), a closed-form stand-in for a network."""

    def __init__(self, schedule, mu=1.5, s=0.5, prediction_type="x0"):
        super().__init__()
        self.schedule, self.mu, self.s, self.prediction_type = schedule, mu, s, prediction_type

    def forward(self, x, t):
        alpha, sigma = self.schedule.alpha_sigma_batch(t, x.ndim)
        x0 = self.mu + alpha * self.s**2 / (alpha**2 * self.s**2 + sigma**2) * (x - alpha * self.mu)
        eps = (x - alpha * x0) / sigma
        return {"x0": x0, "epsilon": eps, "v": alpha * eps - sigma * x0}[self.prediction_type]


# --- schedules and closed forms ---------------------------------------------------------------

def test_cosine_schedule_matches_formula():
    T, s = 50, 0.008
    betas = make_betas(T, "cosine")
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = np.cumprod(1 - betas)
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    # The last step is where β is clipped at 0.999 (ᾱ_T would otherwise be ~0 exactly).
    np.testing.assert_allclose(alpha_bar[:-1], expected[:-1], rtol=1e-10)
    assert betas[-1] == pytest.approx(0.999) and betas.min() > 0


def test_linear_schedule_endpoints():
    betas = make_betas(10, "linear", beta_start=1e-4, beta_end=2e-2)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(2e-2)


def test_q_sample_closed_form_and_moments():
    sched = NoiseSchedule(20)
    x0 = torch.full((20000, 1), 2.0)
    t = torch.full((20000,), 7)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    xt = sched.q_sample(x0, t, noise)
    ab = sched.alpha_bar[7]
    torch.testing.assert_close(xt, math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise)
    assert xt.mean().item() == pytest.approx(2 * math.sqrt(ab), abs=0.02)
    assert xt.var().item() == pytest.approx(1 - ab, rel=0.05)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_posterior_matches_bayes_rule(schedule):
    sched = NoiseSchedule(30, schedule)
    x0, xt = torch.randn(4, 8, 3, dtype=torch.float64), torch.randn(4, 8, 3, dtype=torch.float64)
    for t in [1, 10, 29]:
        beta, ab, ab_prev = sched.betas[t], sched.alpha_bar[t], sched.alpha_bar[t - 1]
        # q(x_{t-1}|x_t,x0) ∝ N(x_t; √α_t x_{t-1}, β_t) N(x_{t-1}; √ᾱ_{t-1} x0, 1-ᾱ_{t-1})
        precision = (1 - beta) / beta + 1 / (1 - ab_prev)
        var = 1 / precision
        mean = var * (math.sqrt(1 - beta) * xt / beta + math.sqrt(ab_prev) * x0 / (1 - ab_prev))
        got_mean, got_var = sched.posterior(x0, xt, t)
        torch.testing.assert_close(got_mean, mean)
        assert got_var == pytest.approx(var, rel=1e-9)


@pytest.mark.parametrize("kind", ["epsilon", "x0", "v"])
def test_prediction_conversions_round_trip(kind):
    x0, eps = torch.randn(3, 16, 4, dtype=torch.float64), torch.randn(3, 16, 4, dtype=torch.float64)
    alpha, sigma = math.sqrt(0.3), math.sqrt(0.7)
    xt = alpha * x0 + sigma * eps
    target = P.training_target(kind, x0, eps, alpha, sigma)
    x0_hat, eps_hat = P.to_x0_eps(target, kind, xt, alpha, sigma)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    torch.testing.assert_close(P.score_to_eps(P.eps_to_score(eps, sigma), sigma), eps)


def test_loss_weights():
    layout = TrajectoryLayout(observation_dim=4, action_dim=2)
    w = loss_weights(layout, 8, action_weight=10.0, loss_discount=0.9)
    assert w.shape == (8, 6)
    assert torch.all(w[0, :2] == 10.0)
    torch.testing.assert_close(w[:, 3].mean(), torch.tensor(1.0))
    assert w[1, 0] / w[2, 0] == pytest.approx(1 / 0.9)


# --- the sampling loop --------------------------------------------------------------------------

def _expert(sched, kind="x0"):
    return DenoiserExpert(GaussianDenoiser(sched, prediction_type=kind), kind)


def test_ddim_eta0_is_deterministic_given_noise():
    sched = NoiseSchedule(20)
    noise = torch.randn(2, 8, 3)
    a = sample([_expert(sched)], sched, noise.shape, sampler=DDIM(5), noise=noise,
               generator=torch.Generator().manual_seed(1)).trajectories
    b = sample([_expert(sched)], sched, noise.shape, sampler=DDIM(5), noise=noise,
               generator=torch.Generator().manual_seed(2)).trajectories
    assert torch.equal(a, b)


def test_ddim_all_steps_eta1_equals_ddpm():
    sched = NoiseSchedule(15)
    noise = torch.randn(3, 8, 2)
    outs = []
    for sampler in [DDPM(), DDIM(None, eta=1.0)]:
        g = torch.Generator().manual_seed(5)
        outs.append(sample([_expert(sched)], sched, noise.shape, sampler=sampler, noise=noise, generator=g).trajectories)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("sampler", "kind"), [
    (DDPM(), "x0"), (DDIM(200, eta=1.0), "epsilon"), (DDIM(200, eta=0.0), "v"), (DDIM(200, eta=0.0), "x0"),
])
def test_exact_denoiser_recovers_data_distribution(sampler, kind):
    # With the exact denoiser of N(1.5, 0.5²) every sampler must return that distribution, up to a
    # discretisation bias that vanishes with the number of steps (hence T = 1000 here).
    sched = NoiseSchedule(1000)
    g = torch.Generator().manual_seed(0)
    x = sample([_expert(sched, kind)], sched, (2000, 2, 2), sampler=sampler, generator=g).trajectories
    assert x.mean().item() == pytest.approx(1.5, abs=0.03)
    assert x.std().item() == pytest.approx(0.5, abs=0.015)


def test_constraints_hold_exactly_and_chain_shape():
    sched = NoiseSchedule(10)
    layout = TrajectoryLayout(observation_dim=4, action_dim=2)
    start, goal = torch.randn(3, 4), torch.randn(3, 2)
    cons = state_constraints(layout, {0: start}) + [Constraint(-1, layout.state_dims([0, 1]), goal)]
    out = sample([_expert(sched)], sched, (3, 16, 6), constraints=cons, return_chain=True,
                 generator=torch.Generator().manual_seed(0))
    x = out.trajectories
    assert torch.equal(layout.states(x)[:, 0], start)
    assert torch.equal(layout.states(x)[:, -1, :2], goal)
    assert out.chain.shape == (3, 11, 16, 6)
    assert torch.equal(layout.states(out.chain)[:, :, 0], start[:, None].expand(3, 11, 4))


def test_same_seed_same_sample_and_different_seed_differs():
    sched = NoiseSchedule(10)
    run = lambda seed: sample([_expert(sched)], sched, (2, 8, 3), generator=torch.Generator().manual_seed(seed)).trajectories
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_two_gaussian_experts_sum_scores():
    # The product of N(m1, s²) and N(m2, s²) experts; at t near 0 the summed eps is the product's eps.
    sched = NoiseSchedule(10)
    e1 = DenoiserExpert(GaussianDenoiser(sched, mu=1.0, prediction_type="epsilon"), "epsilon", weight=0.5)
    e2 = DenoiserExpert(GaussianDenoiser(sched, mu=-1.0, prediction_type="epsilon"), "epsilon", weight=0.5)
    x = sample([e1, e2], sched, (4000, 2, 1), generator=torch.Generator().manual_seed(0)).trajectories
    assert x.mean().item() == pytest.approx(0.0, abs=0.05)


# --- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionConfig(prediction_type="score")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIM(50).timesteps(NoiseSchedule(20))
    with pytest.raises(ValueError, match="ddim"):
        make_sampler("ddpm", num_inference_steps=5)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("euler")
    with pytest.raises(ValueError, match="outside a horizon"):
        Inpaint.from_constraints([Constraint(20, [0], torch.zeros(1))], (1, 8, 3))
    with pytest.raises(ValueError, match="NaN"):
        Inpaint.from_constraints([Constraint(0, [0], torch.tensor([float("nan")]))], (1, 8, 3))
    sched = NoiseSchedule(5)
    with pytest.raises(ValueError, match="initial noise"):
        sample([_expert(sched)], sched, (1, 8, 3), noise=torch.zeros(1, 8, 4))


def test_model_loss_rejects_wrong_dims():
    layout = TrajectoryLayout(observation_dim=4, action_dim=2)
    model = TrajectoryDiffusion(nn.Identity(), layout, horizon=8, config=DiffusionConfig(num_steps=5))
    with pytest.raises(ValueError, match=r"\(B, H, 6\)"):
        model.loss({"trajectories": torch.zeros(2, 8, 5)})
    with pytest.raises(ValueError, match="horizon"):
        model.loss({"trajectories": torch.zeros(2, 16, 6)})


@pytest.mark.parametrize("mask_padding", [True, False])
def test_padded_steps_leave_the_loss_only_when_masked(mask_padding):
    layout = TrajectoryLayout(observation_dim=2, action_dim=1)
    cfg = DiffusionConfig(num_steps=5, prediction_type="x0", mask_padding=mask_padding)
    model = TrajectoryDiffusion(nn.Conv1d(3, 3, 1), layout, horizon=8, config=cfg)
    model.denoiser.forward = lambda x, t: torch.zeros_like(x)  # a fixed prediction: the loss sees only targets
    x = torch.randn(2, 8, 3)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    changed = x.clone()
    changed[:, 5:] += 10.0
    losses = []
    for traj in (x, changed):
        torch.manual_seed(0)
        losses.append(model.loss({"trajectories": traj, "mask": mask})[0].item())
    assert (losses[0] == losses[1]) == mask_padding
