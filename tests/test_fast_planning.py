"""Fast planning: solvers agree on a known distribution, warm starts, batched = one at a time."""

import numpy as np
import pytest
import torch
from torch import nn

from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.data.synthetic import pointmass_episodes
from diffuser.data.windows import GoalDataset
from diffuser.diffusion.experts import DenoiserExpert
from diffuser.diffusion.loop import sample
from diffuser.diffusion.model import DiffusionConfig
from diffuser.diffusion.noise import randn
from diffuser.diffusion.samplers import DDIM, DDPM, DPMSolverPP, make_sampler
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.models.temporal_unet import UNetConfig
from diffuser.planning.planner import Planner
from diffuser.pretrained import build_diffusion

MEANS, STDS, WEIGHTS = (-1.0, 1.5), (0.3, 0.5), (0.3, 0.7)


class MixtureDenoiser(nn.Module):
    """The exact E[x_0 | x_t] for x_0 ~ 0.3·N(-1, 0.3²) + 0.7·N(1.5, 0.5²), every entry independent."""

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule

    def forward(self, x, t):
        alpha, sigma = self.schedule.alpha_sigma_batch(t, x.ndim)
        logits, means = [], []
        for m, s, w in zip(MEANS, STDS, WEIGHTS):
            var = alpha**2 * s**2 + sigma**2
            logits.append(np.log(w) - 0.5 * torch.log(var) - 0.5 * (x - alpha * m) ** 2 / var)
            means.append(m + alpha * s**2 / var * (x - alpha * m))
        post = torch.softmax(torch.stack(logits), dim=0)
        return (post * torch.stack(means)).sum(0)


def _mixture_moments():
    m = sum(w * mu for w, mu in zip(WEIGHTS, MEANS))
    second = sum(w * (s**2 + mu**2) for w, mu, s in zip(WEIGHTS, MEANS, STDS))
    return m, np.sqrt(second - m**2)


@pytest.mark.parametrize("sampler", [DDPM(), DDIM(None, eta=1.0), DDIM(50), DPMSolverPP(20), DPMSolverPP(50)],
                         ids=repr)
def test_every_solver_samples_the_known_mixture(sampler):
    sched = NoiseSchedule(200)
    expert = DenoiserExpert(MixtureDenoiser(sched), "x0")
    x = sample([expert], sched, (4000, 2, 1), sampler=sampler, generator=torch.Generator().manual_seed(0))
    x = x.trajectories.flatten()
    mean, std = _mixture_moments()
    assert x.mean().item() == pytest.approx(mean, abs=0.05)
    assert x.std().item() == pytest.approx(std, abs=0.05)
    assert (x > 0.25).float().mean().item() == pytest.approx(WEIGHTS[1], abs=0.03)  # mode weights


def test_dpmpp_is_deterministic_given_noise_and_resets_between_calls():
    sched = NoiseSchedule(20)
    expert = DenoiserExpert(MixtureDenoiser(sched), "x0")
    noise = torch.randn(3, 4, 2)
    solver = make_sampler("dpmpp", 5)
    a = sample([expert], sched, noise.shape, sampler=solver, noise=noise).trajectories
    b = sample([expert], sched, noise.shape, sampler=solver, noise=noise).trajectories
    assert torch.equal(a, b)


def test_warm_start_level_zero_keeps_the_plan_and_level_one_is_a_cold_start():
    sched = NoiseSchedule(20)
    expert = DenoiserExpert(MixtureDenoiser(sched), "x0")
    warm = torch.randn(2, 8, 3)
    kept = sample([expert], sched, warm.shape, sampler=DDIM(5), warm_start=warm, warm_level=0.0)
    assert torch.equal(kept.trajectories, warm)
    cold = sample([expert], sched, warm.shape, sampler=DDIM(5), generator=torch.Generator().manual_seed(3))
    full = sample([expert], sched, warm.shape, sampler=DDIM(5), warm_start=warm, warm_level=1.0,
                  generator=torch.Generator().manual_seed(3))
    assert torch.equal(cold.trajectories, full.trajectories)
    part = sample([expert], sched, warm.shape, sampler=DDIM(5), warm_start=warm, warm_level=0.4,
                  return_chain=True, generator=torch.Generator().manual_seed(3))
    assert part.chain.shape[1] == 3  # 2 of 5 steps, plus the noised start
    with pytest.raises(ValueError, match="warm_level"):
        sample([expert], sched, warm.shape, warm_start=warm, warm_level=1.5)


def test_grouped_generators_draw_what_each_would_draw_alone():
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    both = randn((4, 3), gens)
    assert torch.equal(both[:2], torch.randn(2, 3, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(both[2:], torch.randn(2, 3, generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="divide"):
        randn((3, 3), gens)


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp"])
def test_batched_planning_equals_planning_one_at_a_time(sampler):
    torch.manual_seed(0)
    episodes = pointmass_episodes(4, seed=0)
    normalizer = TrajectoryNormalizer("limits").fit(episodes)
    data = GoalDataset(episodes, 16, normalizer, padding="edge")
    model = build_diffusion(data.layout, 16, UNetConfig(dim=8, dim_mults=(1, 2)),
                            DiffusionConfig(num_steps=8, prediction_type="x0", clip_denoised=True)).eval()
    planner = Planner(model, normalizer, sampler=make_sampler(sampler, 4 if sampler == "dpmpp" else None))
    starts = np.array([[0.1, 0.2, 0, 0], [-0.5, 0.4, 0.1, 0], [0.7, -0.7, 0, 0.2]])
    goals = np.array([[0.5, -0.5, 0, 0], [0.0, 0.0, 0, 0], [-0.6, 0.6, 0, 0]])
    seeds = [11, 12, 13]
    batched = planner.plan(starts, goals, num_samples=2, seed=seeds).states
    alone = torch.cat([planner.plan(starts[i], goals[i], num_samples=2, seed=seeds[i]).states for i in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one per start"):
        planner.plan(starts, goals, seed=[1, 2])


def test_locomotion_bench_table_and_figure_name_each_solver_row(tmp_path):
    from diffuser.benchmark_locomotion import SOLVERS, markdown, plot_decisions

    rows = [{"guide": "value", "sampler": "ddim", "steps": 3, "warm_level": None, "n_guide_steps": 1,
             "network_calls_per_decision": 3, "decision_ms_1env_64cand": 80.0, "decision_ms_10env_16cand": 120.0,
             "score": 75.0, "score_se": 2.0},
            {"guide": "none", "sampler": "dpmpp", "steps": 3, "warm_level": 0.67, "n_guide_steps": None,
             "network_calls_per_decision": 2, "decision_ms_1env_64cand": 30.0, "decision_ms_10env_16cand": 50.0,
             "score": 70.0, "score_se": 1.0}]
    table = markdown({"rows": rows}).splitlines()
    assert len(table) == 4
    assert table[2] == "| value | ddim 3, 1 grad step | 3 | 80.0 | 120.0 | 75.0 ± 2.0 |"
    assert table[3] == "| none | dpmpp 3 warm 0.67 | 2 | 30.0 | 50.0 | 70.0 ± 1.0 |"
    compiled = {"compiled_decision_ms_1env_64cand": 20.0, "compiled_decision_ms_10env_16cand": 35.0,
                "eager_again_decision_ms_1env_64cand": 31.0}
    table = markdown({"rows": [{**rows[1], **compiled}], "compiled": True}).splitlines()
    assert table[0].count("|") == table[1].count("|") == table[2].count("|") == 10
    assert table[2] == "| none | dpmpp 3 warm 0.67 | 2 | 30.0 | 50.0 | 20.0 | 35.0 | 31.0 | 70.0 ± 1.0 |"
    assert plot_decisions(rows, str(tmp_path / "f.png")).stat().st_size > 0
    assert len({s[:3] + (s[3] or 2,) for s in SOLVERS}) == len(SOLVERS), "a solver row is listed twice"


def test_locomotion_bench_solver_subset_by_name():
    from diffuser.benchmark_locomotion import SOLVERS, select_solvers, solver_key

    assert len({solver_key(*s) for s in SOLVERS}) == len(SOLVERS), "two solver rows share a name"
    assert solver_key("dpmpp", 3, 0.67, 1) == "dpmpp3-warm0.67-grad1" and solver_key("ddpm", None, None, None) == "ddpm"
    assert select_solvers(None) == SOLVERS
    picked = select_solvers(["dpmpp3-warm0.67-grad1", "ddim5"])  # SOLVERS' order, not the caller's
    assert picked == [("ddim", 5, None, None), ("dpmpp", 3, 0.67, 1)]
    with pytest.raises(ValueError, match="unknown solver row.*ddim7.*choose from"):
        select_solvers(["ddim7"])
