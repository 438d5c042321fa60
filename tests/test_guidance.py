"""Reward-seeking planning: value functions, value guidance, classifier-free return guidance, the locomotion job."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffuser.data.episodes import Episode
from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.data.windows import ValueDataset
from diffuser.diffusion.experts import ConditionDelta, NoiseLevel
from diffuser.diffusion.guides import ValueGuide
from diffuser.diffusion.model import DiffusionConfig
from diffuser.diffusion.samplers import DDIM, DDPM
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.diffusion.value import ValueEnsemble
from diffuser.models.temporal_unet import UNetConfig
from diffuser.models.value_net import ValueConfig
from diffuser.planning.locomotion import LocomotionPlanConfig, LocomotionPlanner, check_value_matches
from diffuser.pretrained import (build_diffusion, build_value, export_state, export_value_state, load_model,
                                 load_value, load_values)
from diffuser.training.checkpoint import save_export

ROOT = Path(__file__).resolve().parents[1]

LAYOUT = TrajectoryLayout(observation_dim=3, action_dim=2)
SMALL_UNET = UNetConfig(dim=8, dim_mults=(1, 2))
SMALL_VALUE = ValueConfig(dim=16, dim_mults=(1, 2))


def _episodes(n=12, length=20, seed=0, rewards=True):
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        obs = rng.normal(size=(length, 3)).cumsum(0) * 0.1
        eps.append(Episode(obs, rng.uniform(-1, 1, (length, 2)),
                           (obs[:, 0] + 1.0) if rewards else np.zeros(length), np.eye(length, dtype=bool)[-1],
                           np.zeros(length, dtype=bool)))
    return eps


def _normalizer(eps):
    return TrajectoryNormalizer("gaussian").fit(eps)


def test_value_function_fits_a_tiny_datasets_returns():
    torch.manual_seed(0)
    eps = _episodes()
    ds = ValueDataset(eps, 4, _normalizer(eps), padding="zeros", discount=0.9, termination_penalty=-5.0)
    targets = ds.window_values()
    value = build_value(LAYOUT, 4, SMALL_VALUE, num_steps=5, return_mean=float(targets.mean()),
                        return_std=float(targets.std()))
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    opt = torch.optim.Adam(value.parameters(), lr=3e-3)
    first = None
    for _ in range(800):  # enough that the fit does not hinge on the thread count's rounding
        loss, _ = value.loss(batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = value.returns(batch["trajectories"], 0).numpy()
    r2 = 1 - np.mean((pred - targets) ** 2) / np.var(targets)
    assert r2 > 0.9, r2  # clean windows: the returns are a function of the states
    assert loss.item() < 0.3 * first


def test_value_targets_are_discounted_returns_with_the_termination_penalty():
    eps = _episodes(n=1, length=6)
    ds = ValueDataset(eps, 2, _normalizer(eps), padding="zeros", discount=0.5, termination_penalty=-10.0)
    r = eps[0].rewards.astype(np.float64)
    r[-1] += -10.0
    assert ds.window_values()[0] == pytest.approx(sum(0.5 ** k * r[k] for k in range(6)), rel=1e-5)


def _cut(episode):
    """The same episode, ended by a time limit instead of a terminal state."""
    T = len(episode.rewards)
    return Episode(episode.observations, episode.actions, episode.rewards, np.zeros(T, dtype=bool),
                   np.eye(T, dtype=bool)[-1])


def test_a_cut_episode_continues_at_its_last_reward_rate():
    """Bootstrapped targets: G[t] + discount**(T - t) * rate / (1 - discount), rate over the last TAIL_STEPS."""
    from diffuser.data.windows import TAIL_STEPS

    ep = _cut(_episodes(n=1, length=TAIL_STEPS + 30)[0])
    r = ep.rewards.astype(np.float64)
    ds = ValueDataset([ep], 2, _normalizer([ep]), discount=0.9, bootstrap_truncated=True)
    T, rate = len(r), r[-TAIL_STEPS:].mean()
    expected = [sum(0.9 ** k * r[t + k] for k in range(T - t)) + 0.9 ** (T - t) * rate / 0.1 for t in range(T - 1)]
    np.testing.assert_allclose(ds.window_values(), expected, rtol=1e-5, atol=1e-5)


def test_bootstrapping_makes_a_steady_cut_episode_worth_the_same_at_every_step():
    """The reason for it: a policy earning 1 per step is worth 1 / (1 - discount) wherever the time limit falls,
    while a terminated episode (a fall) keeps its return to the end, penalty included."""
    ep = _episodes(n=1, length=50)[0]
    steady = Episode(ep.observations, ep.actions, np.ones(50), np.zeros(50, dtype=bool), np.eye(50, dtype=bool)[-1])
    ds = ValueDataset([steady, ep], 2, _normalizer([ep]), discount=0.95, termination_penalty=-3.0,
                      bootstrap_truncated=True)
    values = ds.window_values()
    np.testing.assert_allclose(values[:49], 20.0, rtol=1e-5)
    r = ep.rewards.astype(np.float64)
    r[-1] -= 3.0
    assert values[49] == pytest.approx(sum(0.95 ** k * r[k] for k in range(50)), rel=1e-5)


def test_bootstrapping_without_a_discount_is_refused():
    eps = _episodes(n=2)
    with pytest.raises(ValueError, match="discount < 1"):
        ValueDataset(eps, 4, _normalizer(eps), discount=1.0, bootstrap_truncated=True)


def test_dataset_without_rewards_is_refused():
    eps = _episodes(rewards=False)
    with pytest.raises(ValueError, match="rewards"):
        ValueDataset(eps, 4, _normalizer(eps))


def test_one_guide_step_is_diffusers_update_of_x_in_epsilon_units():
    """DDPM's posterior mean from (x, ε + scale·Δε) equals the one from (x + δ, ε), δ = scale·Σ̃·∇V."""
    schedule = NoiseSchedule(10, "cosine")
    w = torch.randn(1, 4, 5)
    guide = ValueGuide(lambda x, t: (x * w).sum((1, 2)), scale=0.7, n_guide_steps=1, t_stopgrad=0)
    x, eps = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    t = 6
    a, s = schedule.alpha_sigma(t)
    level = NoiseLevel(t, a, s, torch.full((2,), t), *schedule.alpha_sigma(t - 1))
    assert level.posterior_variance == pytest.approx(float(schedule.posterior_variance[t]), rel=1e-6)

    def mean(x_, eps_):
        return schedule.posterior((x_ - s * eps_) / a, x_, t)[0]

    delta = 0.7 * level.posterior_variance * w
    guided = mean(x, eps + guide.weight * guide.epsilon(x, level))
    torch.testing.assert_close(guided, mean(x + delta, eps), rtol=1e-5, atol=1e-6)


def _model(cond=False, seed=0, prediction_type="x0"):
    torch.manual_seed(seed)
    config = DiffusionConfig(num_steps=10, condition="return" if cond else "none", prediction_type=prediction_type)
    return build_diffusion(LAYOUT, 8, SMALL_UNET, config,
                           {"mean": 1.0, "std": 2.0, "max": 5.0, "q90": 4.0} if cond else None).eval()


@pytest.mark.parametrize("sampler", [DDPM(), DDIM(4)])
def test_guided_samples_move_along_a_known_value_gradient(sampler):
    # An untrained ε-network: x̂_0 follows x_t, so the guided shifts survive to the end (an untrained
    # x0-network would return its own x̂_0, blind to them, at the last step).
    model = _model(prediction_type="epsilon")
    s0 = {0: torch.zeros(64, 3)}
    final_x = lambda x, t: x[:, -1, LAYOUT.action_dim]  # V = first state dim at the last step  # noqa: E731
    means = []
    for scale in [0.0, 1.0, 4.0]:
        out = model.sample(64, conditions=s0, sampler=sampler, generator=torch.Generator().manual_seed(3),
                           experts=[ValueGuide(final_x, scale=scale, t_stopgrad=0)])
        means.append(out.trajectories[:, -1, LAYOUT.action_dim].mean().item())
        assert torch.equal(out.trajectories[:, 0, LAYOUT.state_slice], s0[0])  # the start stays clamped
    assert means[0] < means[1] < means[2], means
    # the gradient is zero on every other entry, which therefore barely moves
    assert means[2] - means[0] > 0.5


def test_guidance_off_equals_the_unguided_sampler():
    model = _model()
    value = build_value(LAYOUT, 8, SMALL_VALUE, 10)
    runs = [model.sample(4, sampler=DDIM(5), generator=torch.Generator().manual_seed(1), experts=e).trajectories
            for e in ([], [ValueGuide(value, scale=0.0)])]
    assert torch.equal(*runs)


def test_classifier_free_guidance_weight_0_is_the_unconditional_model_and_1_the_conditional():
    model = _model(cond=True)
    c = model.condition(3.0)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    uncond = model.sample(4, generator=gen()).trajectories
    delta = lambda w: ConditionDelta(model.denoiser, "x0", {"cond": c}, {}, weight=w)  # noqa: E731
    assert torch.equal(model.sample(4, generator=gen(), experts=[delta(0.0)]).trajectories, uncond)
    conditional = model.sample(4, generator=gen(), weight=0.0,
                               experts=[model.expert(cond=c.expand(4, 1))]).trajectories
    torch.testing.assert_close(model.sample(4, generator=gen(), experts=[delta(1.0)]).trajectories, conditional,
                               rtol=1e-4, atol=1e-4)
    assert not torch.allclose(conditional, uncond, atol=1e-3)  # the condition does something


def test_return_condition_training_drops_the_condition():
    model = _model(cond=True)
    model.train()
    seen = []
    original = model.denoiser.forward
    model.denoiser.forward = lambda x, t, cond=None, cond_mask=None: (seen.append(cond_mask), original(x, t, cond, cond_mask))[1]
    batch = {"trajectories": torch.randn(400, 8, 5), "values": torch.randn(400, 1)}
    model.loss(batch)
    assert 0.15 < 1 - seen[0].float().mean().item() < 0.35  # cond_dropout 0.25
    with pytest.raises(ValueError, match="values"):
        model.loss({"trajectories": torch.randn(4, 8, 5)})


def _export(tmp_path, name, model=None, normalizer=None, value=None, dataset="toy/data-v0", **meta):
    eps = _episodes()
    normalizer = normalizer or _normalizer(eps)
    path = tmp_path / name
    if value is None:
        tensors, config = export_state(model or _model(), normalizer, SMALL_UNET, dataset=dataset, step=1)
    else:
        tensors, config = export_value_state(value, normalizer, SMALL_VALUE, dataset=dataset, discount=0.99,
                                             termination_penalty=-100.0, step=1, **meta)
    save_export(path, tensors, config)
    return path


def test_value_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    value = build_value(LAYOUT, 8, SMALL_VALUE, 10, return_mean=3.0, return_std=2.0).eval()
    loaded = load_value(_export(tmp_path, "v", value=value))
    x, t = torch.randn(5, 8, 5), torch.randint(0, 10, (5,))
    with torch.no_grad():
        assert torch.equal(loaded.value.returns(x, t), value.returns(x, t))
    assert loaded.config["discount"] == 0.99
    with pytest.raises(ValueError, match="not a value function"):
        load_value(_export(tmp_path, "d"))


def test_mismatched_value_and_diffusion_models_are_refused(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    good = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                              normalizer=model.normalizer))
    check_value_matches(model, good)
    other_h = load_value(_export(tmp_path, "h", value=build_value(LAYOUT, 16, SMALL_VALUE, 10),
                                 normalizer=model.normalizer))
    with pytest.raises(ValueError, match="horizons differ"):
        check_value_matches(model, other_h)
    other_norm = load_value(_export(tmp_path, "n", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                                    normalizer=_normalizer(_episodes(seed=5))))
    with pytest.raises(ValueError, match="normalizers differ"):
        LocomotionPlanner(model, other_norm)
    other_data = load_value(_export(tmp_path, "o", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                                    normalizer=model.normalizer, dataset="toy/other-v0"))
    with pytest.raises(ValueError, match="datasets differ"):
        check_value_matches(model, other_data)


def test_planner_ranks_candidates_and_checks_the_environment(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                               normalizer=model.normalizer))
    planner = LocomotionPlanner(model, value, LocomotionPlanConfig(candidates=6, sampler="ddim", sampler_steps=3,
                                                                   execute=2))
    obs = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    a = planner.plan(obs, torch.Generator().manual_seed(0))
    b = planner.plan(obs, torch.Generator().manual_seed(0))
    assert a.actions.shape == (3, 2, 2) and a.states.shape == (3, 8, 3)
    np.testing.assert_array_equal(a.actions, b.actions)  # same seed, same decision
    np.testing.assert_allclose(a.states[:, 0], obs, atol=1e-5)  # the plan starts at the current state
    with pytest.raises(ValueError, match="observations of size 11"):
        planner.check_env(11, 2)
    with pytest.raises(ValueError, match="needs a value function"):
        LocomotionPlanner(model, None, LocomotionPlanConfig(guide="value"))
    with pytest.raises(ValueError, match="unconditional"):
        LocomotionPlanner(model, None, LocomotionPlanConfig(guide="cfg"))


def test_value_ensemble_is_the_members_mean_minus_pessimism_times_their_spread():
    torch.manual_seed(0)
    a, b = (build_value(LAYOUT, 8, SMALL_VALUE, 10, return_mean=3.0, return_std=2.0).eval() for _ in range(2))
    x, t = torch.randn(5, 8, 5), torch.randint(0, 10, (5,))
    with torch.no_grad():
        va, vb = a(x, t), b(x, t)
        assert not torch.allclose(va, vb)  # two seeds, two different value functions
        torch.testing.assert_close(ValueEnsemble([a, b])(x, t), (va + vb) / 2)
        # Two members: the population std is half their gap.
        torch.testing.assert_close(ValueEnsemble([a, b], pessimism=1.5)(x, t), (va + vb) / 2 - 0.75 * (va - vb).abs())
        torch.testing.assert_close(ValueEnsemble([a, b]).returns(x, t), ((va + vb) / 2) * 2.0 + 3.0)
    # Members that agree exactly: the ensemble is each of them, and its gradient stays finite.
    same = ValueEnsemble([a, a], pessimism=2.0)
    xg = x.clone().requires_grad_(True)
    same(xg, t).sum().backward()
    assert torch.isfinite(xg.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(same(x, t), va, atol=1e-5, rtol=0)
    other_stats = build_value(LAYOUT, 8, SMALL_VALUE, 10, return_mean=0.0, return_std=2.0)
    with pytest.raises(ValueError, match="return statistics"):
        ValueEnsemble([a, other_stats])
    with pytest.raises(ValueError, match="at least 2"):
        ValueEnsemble([a])
    with pytest.raises(ValueError, match="pessimism"):
        ValueEnsemble([a, b], pessimism=-1)


def test_value_ensemble_loads_value_functions_of_one_checkpoint_and_plans(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    torch.manual_seed(0)
    paths = [_export(tmp_path, f"v{i}", value=build_value(LAYOUT, 8, SMALL_VALUE, 10), normalizer=model.normalizer)
             for i in range(3)]
    loaded = load_values(paths, pessimism=1.0)
    assert isinstance(loaded.value, ValueEnsemble) and loaded.config["members"] == [str(p) for p in paths]
    planner = LocomotionPlanner(model, loaded, LocomotionPlanConfig(candidates=4, sampler="ddim", sampler_steps=3))
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    plans = planner.plan(obs, torch.Generator().manual_seed(0))
    members = [load_value(p).value for p in paths]
    with torch.no_grad():
        stacked = torch.stack([m.returns(plans.trajectories, 0) for m in members])
    # The chosen plan's value is the ensemble's: mean - 1 x std of the members' raw returns.
    np.testing.assert_allclose(plans.values, (stacked.mean(0) - stacked.std(0, correction=0)).numpy(), rtol=1e-4)
    assert load_values(paths[:1]).value.__class__.__name__ == "ValueFunction"
    with pytest.raises(ValueError, match="needs an ensemble"):
        load_values(paths[:1], pessimism=1.0)
    stranger = _export(tmp_path, "s", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                       normalizer=_normalizer(_episodes(seed=5)))
    with pytest.raises(ValueError, match="normalizer"):
        load_values([paths[0], stranger])
    continued = _export(tmp_path, "b", value=build_value(LAYOUT, 8, SMALL_VALUE, 10), normalizer=model.normalizer,
                        bootstrap_truncated=True)  # other targets: returns continued past time limits
    with pytest.raises(ValueError, match="bootstrap_truncated"):
        load_values([paths[0], continued])


def test_ranking_by_the_guides_last_values_picks_their_best_candidate(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                               normalizer=model.normalizer))
    kw = dict(candidates=6, sampler="ddim", sampler_steps=3, t_stopgrad=2)
    planner = LocomotionPlanner(model, value, LocomotionPlanConfig(select="guide", **kw))
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    out = planner.plan(obs, torch.Generator().manual_seed(0))
    guide = planner.guide
    assert guide.last_t >= 2 and guide.last_values.shape == (12,)
    raw = (guide.last_values * value.value.return_std + value.value.return_mean).reshape(2, 6)
    np.testing.assert_allclose(out.values, raw.max(dim=1).values.numpy(), rtol=1e-6)
    # The same seed through the inner planner gives every candidate; the chosen ones are the guide's best.
    every = planner.planner.plan(obs, horizon=8, num_samples=6, generator=torch.Generator().manual_seed(0))
    rows = torch.arange(2) * 6 + raw.argmax(dim=1)
    torch.testing.assert_close(out.trajectories, every.trajectories[rows])
    # No guided step (scale 0 skips the guide): a separate value pass ranks, as select="value" does.
    off = LocomotionPlanner(model, value, LocomotionPlanConfig(select="guide", scale=0.0, **kw))
    ranked = LocomotionPlanner(model, value, LocomotionPlanConfig(select="value", scale=0.0, **kw))
    a, b = off.plan(obs, torch.Generator().manual_seed(0)), ranked.plan(obs, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(ValueError, match="needs guide='value'"):
        LocomotionPlanConfig(guide="none", select="guide")


def test_compiled_networks_plan_the_same_decisions(tmp_path):
    from diffuser.pretrained import compile_for_planning

    model = load_model(_export(tmp_path, "m"))
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                               normalizer=model.normalizer))
    config = LocomotionPlanConfig(candidates=4, sampler="dpmpp", sampler_steps=3, n_guide_steps=1, t_stopgrad=0)
    obs = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    batches = (obs, obs[:1])  # a second batch size, as when an evaluation's environments finish
    eager = [LocomotionPlanner(model, value, config).plan(rows, torch.Generator().manual_seed(0)) for rows in batches]
    # Dynamo's "eager" backend traces the networks as the compiler would, without code generation (fast).
    compile_for_planning(model, value, None, backend="eager")
    denoiser, network = model.model.denoiser, value.value.network
    assert hasattr(denoiser, "_orig_mod") and hasattr(network, "_orig_mod")
    compile_for_planning(model, value, backend="eager")  # a second call keeps the compiled modules
    assert model.model.denoiser is denoiser and value.value.network is network
    planner = LocomotionPlanner(model, value, config)
    for rows, reference in zip(batches, eager):
        compiled = planner.plan(rows, torch.Generator().manual_seed(0))
        torch.testing.assert_close(compiled.trajectories, reference.trajectories)
        np.testing.assert_allclose(compiled.values, reference.values, rtol=1e-5, atol=1e-6)


def test_locomotion_warm_start_level_0_keeps_the_shifted_plan_and_level_1_is_cold(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    obs = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    kw = dict(guide="none", candidates=3, sampler="ddim", sampler_steps=4, execute=2)
    cold = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw))
    first = cold.plan(obs, torch.Generator().manual_seed(0))
    shifted = cold.shift(first.trajectories)
    np.testing.assert_array_equal(shifted[:, :-2].numpy(), first.trajectories[:, 2:].numpy())  # advanced by execute
    np.testing.assert_array_equal(shifted[:, -1].numpy(), first.trajectories[:, -1].numpy())  # end held
    keep = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, warm_level=0.0))
    kept = keep.plan(obs, torch.Generator().manual_seed(1), warm_start=shifted)
    expected = shifted.clone()
    expected[:, 0, model.model.layout.state_slice] = model.normalizer.normalize_observations(torch.as_tensor(obs))
    torch.testing.assert_close(kept.trajectories, expected)  # only the current state is inpainted
    full = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, warm_level=1.0))
    again = full.plan(obs, torch.Generator().manual_seed(0), warm_start=shifted)
    torch.testing.assert_close(again.trajectories, first.trajectories)  # level 1: a cold start
    half = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, warm_level=0.5))
    mid = half.plan(obs, torch.Generator().manual_seed(0), warm_start=shifted)
    assert not torch.allclose(mid.trajectories, first.trajectories)
    with pytest.raises(ValueError, match="warm_start must be"):
        half.plan(obs, warm_start=shifted[:1])
    with pytest.raises(ValueError, match="warm_level"):
        LocomotionPlanConfig(warm_level=1.5)


def test_cold_candidates_give_the_value_ranking_a_way_out_of_the_warm_plan(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                               normalizer=model.normalizer))
    obs = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
    kw = dict(guide="none", select="value", candidates=4, sampler="ddim", sampler_steps=4, execute=2)
    planner = LocomotionPlanner(model, value, LocomotionPlanConfig(**kw, warm_level=0.0, cold_candidates=1))
    shifted = planner.shift(planner.plan(obs, torch.Generator().manual_seed(0)).trajectories)
    kept = shifted.clone()  # level 0 keeps the warm plan, with only the current state inpainted
    kept[:, 0, model.model.layout.state_slice] = model.normalizer.normalize_observations(torch.as_tensor(obs))
    distance = lambda x: (x - kept.repeat_interleave(4, 0)).flatten(1).norm(dim=1)  # noqa: E731
    planner.value.returns = lambda x, t: -distance(x)  # a value that likes the warm plan picks it
    torch.testing.assert_close(planner.plan(obs, torch.Generator().manual_seed(1), warm_start=shifted).trajectories,
                               kept)
    planner.value.returns = lambda x, t: distance(x)  # one that dislikes it picks the fresh candidate
    fresh = planner.plan(obs, torch.Generator().manual_seed(1), warm_start=shifted).trajectories
    assert ((fresh - kept).flatten(1).norm(dim=1) > 1.0).all()
    np.testing.assert_allclose(fresh[:, 0, model.model.layout.state_slice].numpy(),
                               kept[:, 0, model.model.layout.state_slice].numpy(), atol=1e-5)  # from the same state
    with pytest.raises(ValueError, match="at least one candidate continues"):
        LocomotionPlanConfig(**kw, warm_level=0.5, cold_candidates=4)
    with pytest.raises(ValueError, match="needs warm_level"):
        LocomotionPlanConfig(**kw, cold_candidates=1)
    with pytest.raises(ValueError, match="select='value'"):
        LocomotionPlanner(model, value, LocomotionPlanConfig(**{**kw, "select": "first"}, warm_level=0.5,
                                                             cold_candidates=1))


def test_avoid_falls_chooses_among_the_candidates_that_stay_healthy_longest(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10),
                               normalizer=model.normalizer))
    obs = np.random.default_rng(3).normal(size=(2, 3)).astype(np.float32)
    kw = dict(guide="none", candidates=4, sampler="ddim", sampler_steps=3, avoid_falls=True)
    planner = LocomotionPlanner(model, value, LocomotionPlanConfig(**kw, select="first"))
    with pytest.raises(ValueError, match="set_health_rule"):
        planner.plan(obs)
    with pytest.raises(ValueError, match="never terminates"):
        planner.set_health_rule(None)
    # How long each candidate's plan stays healthy (start-major: start 0's four candidates, then start 1's).
    steps = torch.tensor([3, 8, 8, 5, 8, 8, 8, 8])
    planner.set_health_rule(SimpleNamespace(healthy_steps=lambda states: steps))
    every = planner.planner.plan(obs, horizon=8, num_samples=4, generator=torch.Generator().manual_seed(0)).trajectories
    chosen = planner.plan(obs, torch.Generator().manual_seed(0)).trajectories
    torch.testing.assert_close(chosen, every[[1, 4]])  # start 0: the first healthy one; start 1: the first
    assert planner.fall_checks == {"decisions": 2, "switched": 1}
    ranked = LocomotionPlanner(model, value, LocomotionPlanConfig(**kw, select="value"))
    ranked.set_health_rule(SimpleNamespace(healthy_steps=lambda states: steps))
    ranked.value.returns = lambda x, t: torch.tensor([10.0, 1.0, 2.0, 20.0, 0.0, 5.0, 1.0, 1.0])
    plans = ranked.plan(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(plans.trajectories, every[[2, 5]])  # the best value among the healthiest
    np.testing.assert_array_equal(plans.values, [2.0, 5.0])
    assert ranked.fall_checks == {"decisions": 2, "switched": 1}


def test_consensus_and_averaged_plans_follow_the_candidates(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    obs = np.random.default_rng(4).normal(size=(2, 3)).astype(np.float32)
    kw = dict(guide="none", candidates=5, sampler="ddim", sampler_steps=3, execute=2)
    consensus = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, select="consensus"))
    every = consensus.planner.plan(obs, horizon=8, num_samples=5, generator=torch.Generator().manual_seed(0))
    x = every.trajectories.reshape(2, 5, -1)
    pairwise = torch.cdist(x, x).square().sum(-1)  # (2, 5) summed squared distance to the other candidates
    medoid = pairwise.argmin(dim=1)
    chosen = consensus.plan(obs, torch.Generator().manual_seed(0))
    torch.testing.assert_close(chosen.trajectories, every.trajectories[torch.arange(2) * 5 + medoid])
    mean = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, average=5, avoid_falls=True))
    steps = torch.tensor([8, 8, 2, 8, 8, 8, 8, 8, 8, 8])  # start 0's third candidate falls: left out of its mean
    mean.set_health_rule(SimpleNamespace(healthy_steps=lambda states: steps))
    averaged = mean.plan(obs, torch.Generator().manual_seed(0))
    actions = every.actions.reshape(2, 5, 8, -1)
    np.testing.assert_allclose(averaged.actions[0], actions[0, [0, 1, 3, 4], :2].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(averaged.actions[1], actions[1, :, :2].mean(0).numpy(), atol=1e-5)
    torch.testing.assert_close(averaged.trajectories[1], every.trajectories[5:].mean(0))
    assert averaged.values is None and mean.fall_checks == {"decisions": 2, "switched": 1}
    # Averaging the two best by value: the top two of each start, and the mean of their values.
    value = load_value(_export(tmp_path, "v", value=build_value(LAYOUT, 8, SMALL_VALUE, 10), normalizer=model.normalizer))
    top = LocomotionPlanner(model, value, LocomotionPlanConfig(**kw, select="value", average=2))
    top.value.returns = lambda x, t: torch.tensor([1.0, 4.0, 3.0, 0.0, 2.0, 0.0, 0.0, 9.0, 8.0, 1.0])
    ranked = top.plan(obs, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(ranked.actions[0], actions[0, [1, 2], :2].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(ranked.actions[1], actions[1, [2, 3], :2].mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(ranked.values, [3.5, 8.5])
    torch.testing.assert_close(ranked.trajectories, every.trajectories[[1, 2, 7, 8]].reshape(2, 2, 8, -1).mean(1))
    # The same mean executed, while the next decision refines the best candidate alone.
    best = LocomotionPlanner(model, value, LocomotionPlanConfig(**kw, select="value", average=2, warm_level=0.5,
                                                                warm_from="best"))
    best.value.returns = top.value.returns
    from_best = best.plan(obs, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(from_best.actions, ranked.actions, atol=1e-6)
    torch.testing.assert_close(from_best.trajectories, every.trajectories[[1, 7]])
    with pytest.raises(ValueError, match="average must be in"):
        LocomotionPlanConfig(**kw, average=6)
    with pytest.raises(ValueError, match="warm_from needs warm_level"):
        LocomotionPlanConfig(**kw, warm_from="best")
    with pytest.raises(ValueError, match="warm_from must be one of"):
        LocomotionPlanConfig(**kw, warm_level=0.5, warm_from="mean")


def _linear_dynamics_episodes(n=10, length=60, seed=0):
    """s_{t+1} = s_t + B a_t, with B of full column rank: each action is recoverable from the change of state."""
    rng = np.random.default_rng(seed)
    b = np.array([[0.5, 0.0], [0.0, 0.3], [0.2, -0.4]], dtype=np.float32)
    eps = []
    for _ in range(n):
        actions = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        states = np.concatenate([rng.normal(size=(1, 3)), actions @ b.T]).cumsum(0).astype(np.float32)
        eps.append(Episode(states[:-1], actions, np.zeros(length), np.zeros(length, dtype=bool),
                           np.eye(length, dtype=bool)[-1], final_observation=states[-1]))
    return eps


def test_inverse_dynamics_learns_the_actions_of_known_dynamics_and_round_trips(tmp_path):
    from diffuser.pretrained import export_inverse_state, load_inverse
    from diffuser.training.inverse_dynamics import InverseFitConfig, fit_inverse_dynamics, transitions

    eps = _linear_dynamics_episodes()
    s, s1, a = transitions(eps)
    assert len(s) == 600 and torch.allclose(s1[:59], s[1:60])  # the final observation completes each episode
    config = InverseFitConfig.from_overrides(["steps=300", "batch_size=128", "members=2", "hidden=64", "held_out=0.2"])
    model, report = fit_inverse_dynamics(eps, config, progress=False)
    assert report["held_out_transitions"] == 120 and report["transitions"] == 480  # split by episode
    assert report["held_out_mse"] < 0.05 * report["action_variance"]
    members = model.member_actions(s[:5], s1[:5])
    assert members.shape == (2, 5, 2) and torch.allclose(model(s[:5], s1[:5]), members.mean(0))
    tensors, cfg = export_inverse_state(model, dataset="toy/linear-v0", fit=config.to_dict(), report=report)
    save_export(tmp_path / "g", tensors, cfg)
    loaded = load_inverse(tmp_path / "g")
    with torch.no_grad():
        assert torch.equal(loaded.model(s, s1), model(s, s1))
    assert loaded.config["dataset"] == "toy/linear-v0" and loaded.config["fit"]["net"]["members"] == 2
    with pytest.raises(ValueError, match="not an inverse-dynamics model"):
        load_inverse(_export(tmp_path, "m"))
    with pytest.raises(ValueError, match="not a value function"):
        load_value(tmp_path / "g")
    with pytest.raises(ValueError, match="KEY=VALUE with KEY one of"):
        InverseFitConfig.from_overrides(["member=2"])
    with pytest.raises(ValueError, match="must be >= 1"):
        InverseFitConfig.from_overrides(["members=0"])
    with pytest.raises(ValueError, match="members takes an integer, not '2.5'"):
        InverseFitConfig.from_overrides(["members=2.5"])


def test_planner_executes_inverse_dynamics_actions_between_its_planned_states(tmp_path):
    from diffuser.models.inverse_dynamics import InverseDynamics, InverseDynamicsConfig
    from diffuser.pretrained import LoadedInverse

    model = load_model(_export(tmp_path, "m"))
    obs = np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32)
    kw = dict(guide="none", candidates=3, sampler="ddim", sampler_steps=3, execute=2)
    torch.manual_seed(1)
    g = LoadedInverse(InverseDynamics(3, 2, InverseDynamicsConfig(hidden=16)).eval(), {})
    plain = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw)).plan(obs, torch.Generator().manual_seed(0))
    inverse = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, inverse_weight=1.0), inverse=g)
    chosen = inverse.plan(obs, torch.Generator().manual_seed(0))  # guide "none": each start's first candidate
    np.testing.assert_allclose(chosen.states, plain.states)  # the same plan...
    states = torch.as_tensor(plain.states)
    with torch.no_grad():
        inferred = g.model(states[:, :2], states[:, 1:3]).numpy()
    np.testing.assert_allclose(chosen.actions, inferred, atol=1e-5)  # ...executed with g's actions
    assert not np.allclose(chosen.actions, plain.actions, atol=1e-3)
    half = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, inverse_weight=0.5), inverse=g)
    np.testing.assert_allclose(half.plan(obs, torch.Generator().manual_seed(0)).actions,
                               0.5 * (plain.actions + inferred), atol=1e-5)
    with pytest.raises(ValueError, match="none was given"):
        LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, inverse_weight=1.0))
    with pytest.raises(ValueError, match="maps states of size 4"):
        LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, inverse_weight=1.0),
                          inverse=LoadedInverse(InverseDynamics(4, 2), {}))
    with pytest.raises(ValueError, match="needs a horizon above it"):
        LocomotionPlanner(model, None, LocomotionPlanConfig(**{**kw, "execute": 8}, inverse_weight=1.0), inverse=g)
    with pytest.raises(ValueError, match="inverse_weight must be in"):
        LocomotionPlanConfig(inverse_weight=1.5)


def test_inverse_dynamics_screen_executes_the_inferred_action_between_planned_states(tmp_path):
    spec = importlib.util.spec_from_file_location("inverse_dynamics_screen", ROOT / "scripts" / "inverse_dynamics_screen.py")
    screen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(screen)
    model = load_model(_export(tmp_path, "m"))
    obs = np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32)
    planner = LocomotionPlanner(model, None, LocomotionPlanConfig(guide="none", candidates=3, sampler="ddim",
                                                                  sampler_steps=3, execute=2))
    every = planner.planner.plan(obs, horizon=8, num_samples=3, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    inverse = screen.InverseDynamics(torch.zeros(3), torch.ones(3), action_dim=2)
    screen.with_inverse_actions(planner, inverse)
    chosen = planner.plan(obs, torch.Generator().manual_seed(0))  # guide "none": each start's first candidate
    with torch.no_grad():
        expected = inverse(every.states[[0, 3], :2], every.states[[0, 3], 1:3]).clamp(-1, 1)
    np.testing.assert_allclose(chosen.actions, expected.numpy(), atol=1e-5)
    assert not np.allclose(chosen.actions, every.actions[[0, 3], :2].numpy(), atol=1e-3)  # not the plan's own


def test_ceiling_pulls_the_predicted_plan_down_by_its_weight_times_the_excess():
    from diffuser.diffusion.costs import Ceiling
    from diffuser.diffusion.experts import combined_epsilon

    class Fixed:  # a density expert predicting ε = 0.3 everywhere
        weight, uses_x0 = 1.0, False

        def epsilon(self, x, level):
            return torch.full_like(x, 0.3)

    x = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0))
    level = NoiseLevel(t=9, alpha=0.05, sigma=math.sqrt(1 - 0.05 ** 2), t_batch=torch.full((2,), 9))
    x0 = (x - level.sigma * 0.3) / level.alpha  # the fixed expert's prediction
    limit = float(x0[..., 3].median())
    for weight in (1.0, 0.5):
        eps = combined_epsilon([Fixed(), Ceiling([limit], [3], weight=weight)], x, level)
        pulled = (x - level.sigma * eps) / level.alpha
        excess = (x0[..., 3] - limit).clamp(min=0)
        torch.testing.assert_close(pulled[..., 3], x0[..., 3] - weight * excess)  # over the limit: pulled down
        torch.testing.assert_close(pulled[..., [0, 1, 2, 4]], x0[..., [0, 1, 2, 4]])  # other coordinates: untouched
    ceiling = Ceiling.from_world([2.0], _normalizer(_episodes()), LAYOUT, (1,))
    assert ceiling.position_dims == [LAYOUT.state_dims([1])[0]]
    with pytest.raises(ValueError, match="limit needs 1 values"):
        Ceiling([1.0, 2.0], [3])


def test_speed_limit_keeps_planned_speeds_under_it(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    obs = np.zeros((2, 3), dtype=np.float32)
    kw = dict(guide="none", candidates=3, sampler="ddim", sampler_steps=3)
    free = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw)).plan(obs, torch.Generator().manual_seed(0))
    limit = float(np.quantile(free.states[:, 1:, 2], 0.3))  # coordinate 2 plays the forward speed
    limited = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, speed_limit=limit))
    with pytest.raises(ValueError, match="does not say"):
        limited.set_forward_speed_index(None)
    limited.set_forward_speed_index(2)
    limited.set_forward_speed_index(2)  # set twice: still one cost
    assert [getattr(e, "name", None) for e in limited.planner.experts].count("speed_limit") == 1
    plans = limited.plan(obs, torch.Generator().manual_seed(0))
    assert free.states[:, 1:, 2].max() > limit + 0.1
    assert plans.states[:, 1:, 2].max() <= limit + 1e-4  # the last step's x̂_0 is the plan: projected under
    np.testing.assert_allclose(plans.states[:, 0], obs, atol=1e-5)  # the start state stays inpainted
    assert LocomotionPlanner(model, None, LocomotionPlanConfig(**kw)).set_forward_speed_index(None) is None
    with pytest.raises(ValueError, match="speed_weight must be > 0"):
        LocomotionPlanConfig(speed_limit=2.0, speed_weight=0.0)
    with pytest.raises(ValueError, match="outside the model's 3"):
        limited.set_forward_speed_index(7)


def test_speed_limit_by_choice_executes_a_candidate_under_it(tmp_path):
    model = load_model(_export(tmp_path, "m"))
    obs = np.zeros((2, 3), dtype=np.float32)
    kw = dict(guide="none", candidates=4, sampler="ddim", sampler_steps=3, select="first", speed_limit_by="choice")
    probe = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, speed_limit=0.0))
    every = probe.planner.plan(obs, horizon=8, num_samples=4, generator=torch.Generator().manual_seed(0))
    peaks = every.states[:, 1:, 2].amax(dim=1).reshape(2, 4)  # coordinate 2 plays the forward speed
    limit = float(peaks[0].median())  # start 0: two candidates under it; start 1: maybe none
    planner = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, speed_limit=limit))
    with pytest.raises(ValueError, match="set_forward_speed_index"):
        planner.plan(obs)
    planner.set_forward_speed_index(2)
    assert not any(getattr(e, "name", None) == "speed_limit" for e in planner.planner.experts)  # no cost: a choice
    chosen = planner.plan(obs, torch.Generator().manual_seed(0)).trajectories
    under = peaks <= torch.maximum(peaks.min(dim=1, keepdim=True).values, torch.tensor(limit))
    expected = [int(under[i].nonzero()[0]) + 4 * i for i in range(2)]  # the first candidate allowed
    torch.testing.assert_close(chosen, every.trajectories[expected])
    assert planner.speed_checks == {"decisions": 2, "switched": int((~under[:, 0]).sum())}
    # A limit no candidate keeps: the one that exceeds it least.
    strict = LocomotionPlanner(model, None, LocomotionPlanConfig(**kw, speed_limit=float(peaks.min()) - 1.0))
    strict.set_forward_speed_index(2)
    torch.testing.assert_close(strict.plan(obs, torch.Generator().manual_seed(0)).trajectories,
                               every.trajectories[peaks.argmin(dim=1) + torch.tensor([0, 4])])
    with pytest.raises(ValueError, match="speed_limit_by must be one of cost, choice"):
        LocomotionPlanConfig(speed_limit=2.0, speed_limit_by="select")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_forward_speed_index_reads_the_roots_forward_velocity(env_id):
    pytest.importorskip("mujoco")
    import gymnasium as gym

    from diffuser.envs.body import forward_speed_index

    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    assert obs[forward_speed_index(env)] == env.unwrapped.data.qvel[0] != 0
    wide = gym.make(env_id, exclude_current_positions_from_observation=False)
    obs, _ = wide.reset(seed=0)
    obs, *_ = wide.step(wide.action_space.sample())
    assert obs[forward_speed_index(wide)] == wide.unwrapped.data.qvel[0]
    assert forward_speed_index(gym.make("Pendulum-v1")) is None


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5"])
def test_health_rule_is_the_envs_own_termination_rule(env_id):
    """The rule applied to observations agrees with the env's is_healthy on states near its boundary."""
    pytest.importorskip("mujoco")
    import gymnasium as gym

    from diffuser.envs.health import HealthRule

    env = gym.make(env_id)
    env.reset(seed=0)
    rule = HealthRule.from_env(env)
    sim = env.unwrapped
    rng = np.random.default_rng(0)
    agree, healthy = [], []
    for _ in range(200):
        qpos = sim.init_qpos + rng.normal(scale=0.4, size=sim.model.nq)
        qvel = rng.normal(scale=3.0, size=sim.model.nv)
        sim.set_state(qpos, qvel)
        obs = torch.as_tensor(sim._get_obs())
        agree.append(bool(rule.healthy(obs)) == bool(sim.is_healthy))
        healthy.append(bool(sim.is_healthy))
    assert all(agree) and 0 < sum(healthy) < len(healthy)  # both sides of the boundary were tried
    assert rule.healthy(torch.as_tensor(np.stack([sim._get_obs()] * 2))).shape == (2,)
    plan = torch.zeros(2, 6, env.observation_space.shape[0])
    plan[..., rule.z_index] = 1.25  # upright: inside both envs' height ranges
    plan[1, 4:, rule.z_index] = 0.1  # the second plan falls at its fifth state
    assert rule.healthy_steps(plan).tolist() == [6, 4]
    assert HealthRule.from_env(gym.make("HalfCheetah-v5")) is None  # it never falls
    assert HealthRule.from_env(gym.make(env_id, terminate_when_unhealthy=False)) is None


def test_episode_speed_profile_is_distance_over_time_per_window():
    from diffuser.evaluation.locomotion import _speeds

    # x at steps 0, 100, 200 and at the end (250), dt 0.01 s: 1 m in 1 s, 2 m in 1 s, 0.5 m in 0.5 s.
    assert _speeds([0.0, 1.0, 3.0, 3.5], 250, 0.01) == [1.0, 2.0, 1.0]
    assert _speeds([0.0, 1.0, 3.0], 200, 0.01) == [1.0, 2.0]  # an end on a window's edge adds no window
    assert _speeds([0.0], 0, 0.01) == []


def test_collect_train_plan_smoke(tmp_path, monkeypatch, capsys):
    """collect → train (diffusion + value) → plan, through the CLI, on a tiny budget."""
    pytest.importorskip("mujoco")
    from diffuser.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    main(["collect", "locomotion", "--env", "hopper", "--level", "medium", "--steps", "400", "--ref-episodes", "2",
          "--no-progress"])
    out = tmp_path / "job"
    main(["plan", "locomotion", "--env", "hopper", "--level", "medium", "--episodes", "2", "--seeds", "0",
          "--candidates", "2", "--sampler-steps", "2", "--warm-level", "0.5", "--max-episode-steps", "6", "--out", str(out), "--no-figures",
          "--record", str(tmp_path / "table.json"),
          "trainer.steps=3", "trainer.batch_size=8", "trainer.val_every=0", "trainer.save_every=0",
          "trainer.ema_start=0", "model.dim=8", "data.horizon=8", "data.discount=0.995",
          "value:trainer.steps=3", "value:trainer.batch_size=8",
          "value:trainer.val_every=0", "value:trainer.save_every=0", "value:value.dim=16", "value:trainer.ema_start=0",
          "value:bootstrap_truncated=true"])
    report = json.loads((out / "locomotion.json").read_text())
    assert set(report["results"]) == {"value", "cfg", "none"}
    assert report["training"]["diffusion"]["horizon"] == 8  # the override reached the model and the record
    assert report["training"]["diffusion"]["discount"] == 0.995  # likewise the returns' discount...
    value_config = load_value(report["training"]["value"]["checkpoint"]).config
    assert value_config["discount"] == 0.995  # ...and the value function's
    assert value_config["bootstrap_truncated"] and report["training"]["value"]["bootstrap_truncated"]
    assert report["training"]["diffusion"]["bootstrap_truncated"] is False  # the value's override stays its own
    for guide, r in report["results"].items():
        assert r["episodes"] == 2 and 1 <= r["length"] <= 6 and math.isfinite(r["score"])
        episode = json.loads((out / f"episodes_{guide}.jsonl").read_text().splitlines()[0])
        assert len(episode["speed"]) == 1 and math.isfinite(episode["speed"][0])  # one (short) window
        assert r["planner"]["warm_level"] == 0.5
        lines = (out / f"episodes_{guide}.jsonl").read_text().splitlines()
        assert len(lines) == 2 and {"seed", "ret", "score", "length"} <= set(json.loads(lines[0]))
    assert report["dataset_average"]["episodes"] > 0
    # The trained models given back, the value function as a (two-member) ensemble: recorded from their configs.
    diffusion, value = report["training"]["diffusion"]["checkpoint"], report["training"]["value"]["checkpoint"]
    main(["plan", "locomotion", "--env", "hopper", "--level", "medium", "--checkpoint", diffusion, "--value", value, value,
          "--value-pessimism", "1", "--guides", "value", "--episodes", "1", "--seeds", "0", "--candidates", "2",
          "--sampler-steps", "2", "--max-episode-steps", "3", "--out", str(tmp_path / "given"), "--no-figures",
          "--speed-limit", "1.5", "--speed-weight", "0.5"])
    given_report = json.loads((tmp_path / "given" / "locomotion.json").read_text())
    planner = given_report["results"]["value"]["planner"]
    assert (planner["speed_limit"], planner["speed_weight"]) == (1.5, 0.5)
    given = given_report["training"]
    assert given["given"] and given["diffusion"]["steps"] == 3 and given["value"]["steps"] == 3
    assert given["value"]["checkpoint"] == [value, value] and given["value"]["pessimism"] == 1.0
    assert given["diffusion"]["weights"] == report["training"]["diffusion"]["weights"]
    # What the return condition asks for: the training windows' pace and falls per return decile.
    spec = importlib.util.spec_from_file_location("return_pace", ROOT / "scripts" / "return_pace.py")
    pace_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pace_script)
    pace = pace_script.main(["--checkpoint", diffusion, "--targets", "q90", "z0", "--out", str(tmp_path / "pace.json")])
    assert sum(d["windows"] for d in pace["deciles"]) == pace["all"]["windows"] > 0
    assert pace["targets"]["z0"]["return"] == pytest.approx(pace["return_stats"]["mean"], abs=0.1)
    assert 0 <= pace["targets"]["q90"]["at_or_above"]["fall_share"] <= 1 and (tmp_path / "pace.png").exists()
    # Actions read off an inverse-dynamics model the job fits, then the same model given back.
    inverse_args = ["plan", "locomotion", "--env", "hopper", "--level", "medium", "--checkpoint", diffusion,
                    "--guides", "none", "--episodes", "1", "--seeds", "0", "--candidates", "2", "--sampler-steps", "2",
                    "--max-episode-steps", "3", "--no-figures", "--inverse-weight", "1"]
    main([*inverse_args, "--out", str(tmp_path / "inverse"), "inverse:steps=5", "inverse:batch_size=16"])
    fitted = json.loads((tmp_path / "inverse" / "locomotion.json").read_text())
    g = fitted["training"]["inverse"]
    assert g["config"]["steps"] == 5 and g["dataset"] == report["dataset"] and math.isfinite(g["held_out_mse"])
    assert fitted["results"]["none"]["planner"]["inverse_weight"] == 1.0
    main([*inverse_args, "--out", str(tmp_path / "inverse_given"), "--inverse", g["checkpoint"]])
    again = json.loads((tmp_path / "inverse_given" / "locomotion.json").read_text())["training"]["inverse"]
    assert again["weights"] == g["weights"] and again["held_out_mse"] == g["held_out_mse"]
    with pytest.raises(SystemExit):
        main([*inverse_args[:-2], "--out", str(tmp_path / "unused"), "--inverse", g["checkpoint"]])
    assert "--inverse-weight is 0" in capsys.readouterr().err
    table = json.loads((tmp_path / "table.json").read_text())
    assert set(table["rows"]["hopper-medium"]) >= {"value", "cfg", "none", "dataset_average"}
    # The speed profiles of the run's episodes beside the data's.
    spec = importlib.util.spec_from_file_location("speed_profile", ROOT / "scripts" / "speed_profile.py")
    speed_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed_script)
    speed_script.main(["--dataset", report["dataset"], "--runs", str(out), "--windows", "2", "--start", "100",
                       "--out", str(tmp_path / "speed.json")])
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert len(speed["dataset_speed"]) == 2 and math.isfinite(speed["dataset_speed"][0])
    assert set(speed["runs"][str(out)]) == {"value", "cfg", "none"} and (tmp_path / "speed.png").exists()
    assert speed["runs"][str(out)]["cfg"]["speed"] == [pytest.approx(float(np.mean(
        [json.loads(line)["speed"][0] for line in (out / "episodes_cfg.jsonl").read_text().splitlines()])), abs=1e-3)]
    spec = importlib.util.spec_from_file_location("locomotion_table", ROOT / "scripts" / "locomotion_table.py")
    table_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table_script)
    row = table["rows"]["hopper-medium"]
    assert table_script._planner(row) == "DDIM 2 warm 0.5, H 8, γ 0.995, value returns continued past the cut"
    # Guides recorded with different samplers (a value row re-run) are named apart; a value scale other
    # than 1 is named once.
    rerun = {**row, "value": {**row["value"], "planner": {**row["value"]["planner"], "scale": 0.1,
                                                           "sampler": "dpmpp", "sampler_steps": 3}}}
    assert table_script._planner(rerun) == ("value guidance: DPM-Solver++ 3 warm 0.5; "
                                            "classifier-free, unguided: DDIM 2 warm 0.5, H 8, γ 0.995, "
                                            "value returns continued past the cut, value scale 0.1")
    assert table_script._solver({"sampler": "dpmpp", "sampler_steps": 3, "warm_level": 0.67, "candidates": 16,
                                 "cold_candidates": 4}) == "DPM-Solver++ 3 warm 0.67 (4 of 16 cold)"
    assert table_script._guide_name("cfg", {"select": "value", "inverse_weight": 1.0}) == \
        "classifier-free, ranked by value, actions from inverse dynamics"
    assert table_script._guide_name("none", {"inverse_weight": 0.5}) == "unguided, actions 0.5 inverse dynamics"
    assert [table_script._version(k) for k in ("hopper-medium", "hopper-medium-v1", "walker2d-medium-replay-v12")] \
        == ["v0", "v1", "v12"]


def test_plan_locomotion_sampler_steps_default_per_sampler():
    """`--sampler ddpm` alone must work (it takes every step); the few-step samplers default to 5."""
    from diffuser.planning.locomotion import sampler_steps_or_default as _locomotion_sampler_steps
    from diffuser.diffusion.samplers import DDPM, make_sampler

    assert isinstance(make_sampler("ddpm", _locomotion_sampler_steps("ddpm", None)), DDPM)
    assert _locomotion_sampler_steps("ddim", None) == 5 and _locomotion_sampler_steps("dpmpp", 3) == 3
    with pytest.raises(ValueError, match="ddpm visits every training step"):
        make_sampler("ddpm", _locomotion_sampler_steps("ddpm", 5))
