"""Composition: products of experts, MCMC correctors, costs, compatibility checks (closed forms where possible)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.compose import IncompatibleExperts, compose
from diffuser.diffusion.constraints import Constraint
from diffuser.diffusion.correctors import HMC, MALA, UHMC, ULA, LevelTarget, mala_log_acceptance
from diffuser.diffusion.costs import DiscAvoid
from diffuser.diffusion.energy import EnergyDenoiser
from diffuser.diffusion.experts import DenoiserExpert, NoiseLevel
from diffuser.diffusion.loop import sample
from diffuser.diffusion.mixtures import GaussianMixture, MixtureExpert
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.models.mlp import MLPDenoiser

# Two 1-D Gaussians that disagree: N(-1, 0.5²) · N(1, 1²) ∝ N(-0.6, 0.2).
A = GaussianMixture([[-1.0]], [[0.5]])
B = GaussianMixture([[1.0]], [[1.0]])
PRODUCT = A.product(B)
SCHEDULE = NoiseSchedule(50, "cosine")
N = 4000


def _moments(experts, corrector=None, seed=0, n=N, schedule=SCHEDULE):
    out = sample(experts, schedule, (n, 1, 1), generator=torch.Generator().manual_seed(seed), corrector=corrector)
    x = out.trajectories.flatten().double()
    return x.mean().item(), x.var().item(), out


def test_product_of_gaussians_has_the_closed_form():
    assert PRODUCT.means.item() == pytest.approx(-0.6)
    assert PRODUCT.stds.item() ** 2 == pytest.approx(0.2)


def test_naive_score_sum_is_biased_and_correctors_remove_the_bias():
    mean_true, var_true = -0.6, 0.2
    se_mean = math.sqrt(var_true / N)
    experts = [MixtureExpert(A), MixtureExpert(B)]
    naive_mean, naive_var, _ = _moments(experts)
    # Summed noised scores pull towards the wider expert and shrink the variance (REFERENCE §4).
    assert naive_mean - mean_true > 20 * se_mean
    assert naive_var < 0.8 * var_true
    for corrector in [MALA(3, 0.1, "fixed"), HMC(2, 0.2, 3, "fixed"), ULA(4, 0.02, "fixed"), UHMC(2, 0.1, 3, "fixed")]:
        mean, var, out = _moments(experts, corrector)
        # Within sampling error plus the small bias of the last (slightly noised) level and, for the
        # unadjusted ones, of the discretisation.
        tol = 4 * se_mean + (0.01 if corrector.needs_energy else 0.03)
        assert abs(mean - mean_true) < tol, (corrector, mean)
        assert abs(var - var_true) < 0.1 * var_true, (corrector, var)
        assert abs(mean - mean_true) < 0.3 * abs(naive_mean - mean_true)
        if corrector.needs_energy:
            assert 0.5 < out.acceptance_mean <= 1.0
            assert len(out.acceptance) == SCHEDULE.num_steps
            assert out.energy_evals > 0
        else:
            assert out.acceptance is None
            assert out.score_evals > SCHEDULE.num_steps


def test_weight_zero_removes_an_expert_exactly():
    for corrector in [None, ULA(2, 0.05, "fixed")]:
        alone = _moments([MixtureExpert(A)], corrector, n=64)[2]
        with_zero = _moments([MixtureExpert(A), MixtureExpert(B, weight=0.0)], corrector, n=64)[2]
        assert torch.equal(alone.trajectories, with_zero.trajectories)
        assert alone.score_evals == with_zero.score_evals


def test_negative_weight_pushes_samples_away():
    base = GaussianMixture([[0.0]], [[1.0]])
    repel = GaussianMixture([[1.0]], [[2.0]])
    # N(0,1) · N(1,2²)^(-1/2) ∝ N(-1/7, 8/7): the mean moves away from the negated expert.
    mean_alone, _, _ = _moments([MixtureExpert(base)], MALA(2, 0.2, "fixed"))
    mean, var, _ = _moments([MixtureExpert(base), MixtureExpert(repel, weight=-0.5)], MALA(2, 0.2, "fixed"))
    assert mean < mean_alone - 0.08
    assert mean == pytest.approx(-1 / 7, abs=0.06)


def test_mala_acceptance_is_the_metropolis_hastings_ratio():
    # Target N(0.3, 0.7²): E = (x - 0.3)² / (2·0.49); proposal q(y|x) = N(x - η∇E(x), 2η).
    torch.manual_seed(0)
    x, y, eta = torch.randn(5, 1, 1), torch.randn(5, 1, 1), 0.4
    energy = lambda v: ((v - 0.3) ** 2 / (2 * 0.49)).flatten(1).sum(-1)  # noqa: E731
    grad = lambda v: (v - 0.3) / 0.49  # noqa: E731
    got = mala_log_acceptance(x, y, energy(x), grad(x), energy(y), grad(y), eta)
    target = torch.distributions.Normal(0.3, 0.7)
    q = lambda to, frm: torch.distributions.Normal(frm - eta * grad(frm), math.sqrt(2 * eta)).log_prob(to)  # noqa: E731
    want = (target.log_prob(y) - target.log_prob(x) + q(x, y) - q(y, x)).flatten()
    assert torch.allclose(got, want, atol=1e-5)


def test_mala_samples_a_gaussian_energy_with_a_step_where_langevin_is_biased():
    # At σ→0 the mixture expert's energy is that of N(0, 1). With η = 1.5, ULA's chain has stationary
    # variance 1 / (1 - η/2) = 4; MALA's Metropolis test restores variance 1.
    level = NoiseLevel(0, 1.0, 1e-4, torch.zeros(2000, dtype=torch.long))
    expert = MixtureExpert(GaussianMixture([[0.0]], [[1.0]]))
    gen = torch.Generator().manual_seed(1)
    for corrector, want in [(MALA(60, 1.5, "fixed"), 1.0), (ULA(60, 1.5, "fixed"), 4.0)]:
        x = torch.randn(2000, 1, 1, generator=gen)
        with torch.no_grad():
            x, rate = corrector.run(x, LevelTarget([expert], level), gen)
        assert x.var().item() == pytest.approx(want, rel=0.15), corrector
        assert (rate is None) == (not corrector.needs_energy)
        assert rate is None or 0.2 < rate < 0.9


def test_incompatible_experts_raise_clear_errors():
    layout = TrajectoryLayout(observation_dim=4, action_dim=2)
    net = nn.Identity()
    a = DenoiserExpert(net, "epsilon", layout=layout, horizon=32, schedule=SCHEDULE, name="maze_a")
    b = DenoiserExpert(net, "epsilon", layout=TrajectoryLayout(4, 1), horizon=32, schedule=SCHEDULE, name="maze_b")
    with pytest.raises(IncompatibleExperts, match=r"layout.*maze_a.*maze_b"):
        compose(a, b)
    c = DenoiserExpert(net, "epsilon", layout=layout, horizon=16, schedule=SCHEDULE, name="short")
    with pytest.raises(IncompatibleExperts, match=r"horizon.*maze_a: 32.*short: 16"):
        compose(a, c)
    d = DenoiserExpert(net, "epsilon", layout=layout, horizon=32, schedule=NoiseSchedule(20), name="t20")
    with pytest.raises(IncompatibleExperts, match="schedule"):
        compose(a, d)
    from diffuser.data.normalizers import TrajectoryNormalizer
    from diffuser.data.episodes import Episode

    def norm(scale):
        ep = Episode(observations=np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32) * scale,
                     actions=np.zeros((10, 2), np.float32), rewards=np.zeros(10, np.float32),
                     terminations=np.zeros(10, bool), truncations=np.zeros(10, bool))
        return TrajectoryNormalizer("limits").fit([ep])

    e = DenoiserExpert(net, "epsilon", layout=layout, normalizer=norm(1.0), name="n1")
    f = DenoiserExpert(net, "epsilon", layout=layout, normalizer=norm(2.0), name="n2")
    with pytest.raises(IncompatibleExperts, match=r"normalizer.*n1.*n2"):
        compose(e, f)
    cost = DiscAvoid([0.0, 0.0], 0.5, position_dims=[2, 3])
    composition = compose(a, cost, DenoiserExpert(net, "epsilon", layout=layout, horizon=32, schedule=SCHEDULE))
    assert composition.horizon == 32 and composition.layout == layout and len(composition.experts) == 3


def test_inpainting_stays_exact_under_correctors():
    mixture = GaussianMixture(torch.zeros(1, 8 * 3), 0.5)
    constraints = [Constraint(0, [1, 2], torch.tensor([0.25, -0.75])), Constraint(-1, [0], torch.tensor([0.5]))]
    for corrector in [ULA(2, 0.05, "fixed"), MALA(2, 0.05, "fixed"), HMC(1, 0.1, 2, "fixed"), UHMC(1, 0.1, 2)]:
        out = sample([MixtureExpert(mixture)], NoiseSchedule(10), (16, 8, 3), constraints=constraints,
                     corrector=corrector, generator=torch.Generator().manual_seed(0))
        x = out.trajectories
        assert torch.equal(x[:, 0, 1:3], torch.tensor([0.25, -0.75]).expand(16, 2))
        assert torch.equal(x[:, -1, 0], torch.full((16,), 0.5))


def test_disc_avoid_moves_plans_out_of_the_disc():
    # Trajectories of 8 points near the origin; a disc of radius 0.5 (world units = 2 × normalised).
    mixture = GaussianMixture(torch.zeros(1, 8 * 2), 0.4)
    disc = DiscAvoid([0.0, 0.0], 0.5, position_dims=[0, 1], scale=[2.0, 2.0], weight=200.0, margin=0.05)

    def inside(experts):
        out = sample(experts, NoiseSchedule(20), (256, 8, 2), generator=torch.Generator().manual_seed(0))
        return disc.violated(out.trajectories).float().mean().item(), disc.distance(out.trajectories).mean().item()

    frac_plain, dist_plain = inside([MixtureExpert(mixture)])
    frac_avoid, dist_avoid = inside([MixtureExpert(mixture), disc])
    assert frac_plain > 0.8  # most plain trajectories have a point in the disc
    assert frac_avoid < 0.1 and dist_avoid > dist_plain


def test_disc_from_world_measures_world_distances():
    from diffuser.data.episodes import Episode
    from diffuser.data.normalizers import TrajectoryNormalizer

    obs = np.array([[-2.0, -1.0, 0, 0], [2.0, 3.0, 1, 1]], np.float32)  # x spans 4, y spans 4 → half 2
    ep = Episode(observations=obs, actions=np.zeros((2, 2), np.float32), rewards=np.zeros(2, np.float32),
                 terminations=np.zeros(2, bool), truncations=np.zeros(2, bool))
    normalizer = TrajectoryNormalizer("limits").fit([ep])
    layout = normalizer.layout
    disc = DiscAvoid.from_world([1.0, 1.0], 0.5, normalizer, layout)
    assert disc.position_dims == [2, 3]
    world = torch.tensor([[[1.0, 1.3, 0, 0]], [[1.0, 1.7, 0, 0]]])
    x = layout.join(normalizer.normalize_observations(world), torch.zeros(2, 1, 2))
    assert disc.violated(x).tolist() == [True, False]
    assert disc.distance(disc.positions(x))[0, 0].item() == pytest.approx(0.3, abs=1e-5)


def test_energy_denoiser_epsilon_is_sigma_times_the_energy_gradient():
    torch.manual_seed(0)
    sigmas = torch.tensor(SCHEDULE.posterior_variance).float().sqrt() + 0.1
    model = EnergyDenoiser(MLPDenoiser((1, 2), hidden=16, layers=2), sigmas)
    x, t = torch.randn(4, 1, 2), torch.tensor([0, 5, 10, 49])
    eps = model(x, t)
    y = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.energy(y, t).sum(), y)
    assert torch.allclose(eps, sigmas[t][:, None, None] * g, atol=1e-6)
    # Training differentiates the ε-prediction again (double back-propagation).
    model.train()
    loss = model(x, t).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    expert = DenoiserExpert(model.eval(), "epsilon")
    assert expert.has_energy and expert.needs_grad


def test_value_expert_and_condition_delta_terms():
    from diffuser.diffusion.experts import ConditionDelta, ValueExpert, combined_epsilon

    level = NoiseLevel(3, 0.8, 0.6, torch.full((4,), 3))
    x = torch.randn(4, 2, 3)
    # h = exp(V), V = Σ x: ε -= w·σ·∇V on x_t, and w·σ/α·∇V at x̂_0.
    on_xt = ValueExpert(lambda y, t: y.flatten(1).sum(-1), weight=2.0)
    assert torch.allclose(combined_epsilon([on_xt], x, level), torch.full_like(x, -2.0 * 0.6))
    on_x0 = ValueExpert(lambda y, t: y.flatten(1).sum(-1), weight=2.0, on="x0")
    assert torch.allclose(combined_epsilon([on_x0], x, level), torch.full_like(x, -2.0 * 0.6 / 0.8))

    class Conditional(nn.Module):
        def forward(self, x, t, cond):
            return x * 0 + cond

    delta = ConditionDelta(Conditional(), "epsilon", {"cond": 3.0}, {"cond": 1.0}, weight=0.5)
    assert torch.allclose(combined_epsilon([delta], x, level), torch.full_like(x, 0.5 * 2.0))


def test_style_windows_mark_the_windows_that_move_right_and_up():
    from diffuser.data.episodes import Episode
    from diffuser.data.normalizers import TrajectoryNormalizer
    from diffuser.data.windows import SequenceDataset
    from diffuser.experiments.maze_split import DISPLACEMENT, has_style, style_windows

    t = np.arange(40, dtype=float)
    # First half moves right, second half moves up, at 0.1 per step.
    x = np.where(t < 20, 0.1 * t, 1.9)
    y = np.where(t < 20, 0.0, 0.1 * (t - 19))
    obs = np.stack([x, y, np.zeros(40), np.zeros(40)], axis=1)
    ep = Episode(obs, np.zeros((40, 2)), np.zeros(40), np.zeros(40, bool), np.eye(40, dtype=bool)[-1])
    windows = SequenceDataset([ep], horizon=4, normalizer=TrajectoryNormalizer("gaussian").fit([ep]), stride=4)
    marks = style_windows(windows, [ep], every=1)
    start = windows.indices[marks["index"], 1]
    dx, dy = x[start + 12] - x[start], y[start + 12] - y[start]  # a window spans (4 - 1) * 4 steps
    np.testing.assert_array_equal(marks["right"], dx > DISPLACEMENT)
    np.testing.assert_array_equal(marks["up"], dy > DISPLACEMENT)
    assert marks["right"][0] and not marks["up"][0] and marks["up"][-1] and not marks["right"][-1]
    assert (marks["right"] & marks["up"]).any()  # the windows around the turn do both
    plan = np.array([[[0.0, 0.0], [0.2, 0.9]]])  # (1, H 2, xy): up by 0.9, right by 0.2
    assert has_style(plan, "up") and not has_style(plan, "right")
