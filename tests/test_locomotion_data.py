"""Locomotion datasets: exported actors, collection into Minari, episode splits, loaders, errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")
minari = pytest.importorskip("minari")
pytest.importorskip("mujoco")

from diffuser.collect.behaviour import evaluate_policy  # noqa: E402
from diffuser.collect.locomotion import (  # noqa: E402
    REF_SEED, collect_locomotion_report, default_dataset_id, locomotion_reference_scores, replay_episodes)
from diffuser.collect.policy import MLPActor, PolicyCard, PolicyError, load_policy, save_policy  # noqa: E402

ENV_ID = "Hopper-v5"
MEDIUM, EXPERT = default_dataset_id("hopper", "medium"), default_dataset_id("hopper", "expert")


def _random_actor(seed: int, hidden=(16, 16)) -> MLPActor:
    torch.manual_seed(seed)
    card = PolicyCard(env_id=ENV_ID, obs_dim=11, act_dim=3, hidden=list(hidden), action_low=[-1.0] * 3,
                      action_high=[1.0] * 3, train_steps=0, seed=seed, command="test", eval_return=0.0)
    actor = MLPActor(card)
    with torch.no_grad():  # large output weights so that actions reach the bounds sometimes
        actor.mu.weight.mul_(5.0)
    return actor.eval()


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture
def policies(tmp_path):
    root = tmp_path / "policies"
    save_policy(_random_actor(1), root / "hopper" / "medium")
    save_policy(_random_actor(2), root / "hopper" / "expert")
    return root


def _collect(policies, level="medium", steps=300, **kw):
    kw.setdefault("ref_episodes", 2)
    kw.setdefault("max_episode_steps", 40)  # short time limit: both kinds of episode end in a tiny run
    return collect_locomotion_report("hopper", level, steps, policy_dir=policies, progress=False, **kw)


def test_exported_actor_round_trips(tmp_path):
    actor = _random_actor(0, hidden=(32, 8))
    weights, card_path = save_policy(actor, tmp_path / "p" / "medium")
    assert weights.name == "medium.safetensors" and card_path.name == "medium.json"
    loaded = load_policy(tmp_path / "p" / "medium")
    assert loaded.card == actor.card
    obs = np.random.default_rng(0).normal(size=(64, 11)).astype(np.float32) * 3
    a, b = actor.act(obs), loaded.act(obs)
    assert np.array_equal(a, b) and a.shape == (64, 3) and np.all(np.abs(a) <= 1)
    np.testing.assert_allclose(loaded.act(obs[0]), a[0], atol=1e-6)  # batched BLAS may differ in the last bit
    # the forward pass is tanh(mu(relu(...))) rescaled onto the bounds
    h = obs
    for layer in actor.layers:
        h = np.maximum(h @ layer.weight.detach().numpy().T + layer.bias.detach().numpy(), 0)
    ref = np.tanh(h @ actor.mu.weight.detach().numpy().T + actor.mu.bias.detach().numpy())
    np.testing.assert_allclose(a, ref, atol=1e-5)
    # a card that does not describe the weights is refused, and a missing file is named
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "hidden": [32, 9]}))
    with pytest.raises(PolicyError, match="does not match"):
        load_policy(tmp_path / "p" / "medium")
    with pytest.raises(PolicyError, match="expert.safetensors"):
        load_policy(tmp_path / "p" / "expert")


def test_export_from_sb3_matches_its_deterministic_actions():
    sb3 = pytest.importorskip("stable_baselines3")
    from diffuser.collect.behaviour import actor_from_sb3

    env = gym.make(ENV_ID)
    model = sb3.SAC("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"net_arch": [16, 16]})
    card = PolicyCard(env_id=ENV_ID, obs_dim=11, act_dim=3, hidden=[16, 16], action_low=[-1.0] * 3,
                      action_high=[1.0] * 3)
    actor = actor_from_sb3(model, card)
    obs = np.random.default_rng(1).normal(size=(32, 11)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(actor.act(obs), expected, atol=1e-6)
    env.close()


def test_collect_writes_minari_dataset_with_episode_splits_and_scores(store, policies):
    report = _collect(policies, seed=3)
    ds = minari.load_dataset(MEDIUM)
    assert ds.total_steps == 300 and ds.total_episodes == report.episodes
    episodes = list(ds.iterate_episodes())
    assert report.terminated_episodes > 0 and report.truncated_episodes > 0
    actor = load_policy(policies / "hopper" / "medium")
    env = gym.make(ENV_ID, max_episode_steps=40)
    for k, ep in enumerate(episodes):
        n = len(ep.rewards)
        assert ep.observations.shape == (n + 1, 11) and ep.actions.shape == (n, 3)
        assert not ep.terminations[:-1].any() and not ep.truncations[:-1].any()
        assert ep.terminations[-1] != ep.truncations[-1]  # exactly one way to end
        if ep.truncations[-1] and k < len(episodes) - 1:
            assert n == 40  # the time limit (the last episode is cut by the end of the run instead)
        # replaying the recorded actions from the recorded seed gives the same states and rewards
        obs, _ = env.reset(seed=3 + k)
        np.testing.assert_allclose(ep.observations[0], obs)
        for t in range(n):
            obs, r, term, trunc, _ = env.step(ep.actions[t])
            assert r == pytest.approx(ep.rewards[t]) and term == ep.terminations[t]
        np.testing.assert_allclose(ep.observations[-1], obs)
        # actions are the actor's plus N(0, 0.1^2) noise, clipped
        noise = ep.actions - np.clip(actor.act(ep.observations[:-1].astype(np.float32)), -1, 1)
        assert np.abs(noise).max() < 0.6 and np.all(np.abs(ep.actions) <= 1)
    env.close()
    assert sum(len(ep.rewards) for ep in episodes) == 300
    # reference scores: random policy and deterministic expert, on the standard env
    meta_min, meta_max = ds.storage.metadata["ref_min_score"], ds.storage.metadata["ref_max_score"]
    expert = load_policy(policies / "hopper" / "expert")
    assert (meta_min, meta_max) == pytest.approx(locomotion_reference_scores("hopper", expert, 2))
    assert meta_max == pytest.approx(evaluate_policy(expert.act, ENV_ID, 2, REF_SEED).mean())
    assert ds.storage.metadata["num_episodes_average_score"] == 2
    assert ds.recover_environment(eval_env=True).spec.max_episode_steps == 1000


def test_loaders_build_trajectory_windows(store, policies):
    from diffuser.data.normalizers import TrajectoryNormalizer
    from diffuser.data.sources import load_source
    from diffuser.data.windows import SequenceDataset, ValueDataset

    _collect(policies, steps=400)
    episodes = load_source(MEDIUM)
    assert sum(len(ep) for ep in episodes) == 400
    assert any(ep.terminated for ep in episodes) and all(ep.final_observation is not None for ep in episodes)
    assert all(np.abs(ep.rewards).sum() > 0 for ep in episodes)
    from diffuser.data.prepare import dataset_stats

    stats = dataset_stats(episodes, printer=None)
    assert "end in a termination" in str(stats) and not stats.has_goals
    assert stats.success_fraction == pytest.approx(np.mean([ep.terminated for ep in episodes]))
    normalizer = TrajectoryNormalizer("gaussian").fit(episodes)
    windows = SequenceDataset(episodes, 32, normalizer, padding="zeros")  # the locomotion recipe
    item = windows[0]
    traj = item["trajectories"] if isinstance(item, dict) else item[0]
    assert tuple(traj.shape) == (32, 14)
    assert len(windows) == 400  # zero padding: a window at every step
    values = ValueDataset(episodes, 32, normalizer, padding="zeros")
    assert len(values) == 400
    # terminations reach the value targets (penalty at a fall), truncations do not
    index = {(int(e), int(s)): i for i, (e, s) in enumerate(values.indices)}
    for k, ep in enumerate(episodes):
        last = values[index[(k, len(ep) - 1)]]["values"].item()
        expected = ep.rewards[-1] + (values.termination_penalty if ep.terminated else 0.0)
        assert last == pytest.approx(expected, abs=1e-4)


def test_medium_replay_splits_the_buffer(store, policies):
    rng = np.random.default_rng(0)
    n = 25
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    term = np.zeros(n, bool)
    trunc = np.zeros(n, bool)
    term[4], trunc[14] = True, True  # episodes of 5, 10 and (cut) 10 steps
    arrays = {"observations": obs[:-1], "next_observations": obs[1:], "actions": rng.uniform(-1, 1, (n, 3)),
              "rewards": rng.normal(size=n), "terminations": term, "truncations": trunc}
    np.savez(policies / "hopper" / "medium_replay.npz", **arrays)
    episodes = replay_episodes(policies / "hopper" / "medium_replay.npz")
    assert [len(ep.rewards) for ep in episodes] == [5, 10, 10]
    assert [(ep.terminations[-1], ep.truncations[-1]) for ep in episodes] == [(True, False), (False, True),
                                                                              (False, True)]
    report = _collect(policies, "medium-replay", steps=None)
    ds = minari.load_dataset(default_dataset_id("hopper", "medium-replay"))
    assert report.steps == ds.total_steps == n and ds.total_episodes == 3
    first = next(ds.iterate_episodes())
    np.testing.assert_allclose(first.observations, obs[:6], rtol=1e-6)


def test_compact_replay_round_trips_and_keeps_episode_final_observations(tmp_path):
    from diffuser.collect.behaviour import compact_replay, expand_replay

    rng = np.random.default_rng(1)
    n = 12
    obs = rng.normal(size=(n + 1, 4)).astype(np.float32)
    nxt = obs[1:].copy()
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    term[3], trunc[7] = True, True
    nxt[[3, 7]] = rng.normal(size=(2, 4))  # an episode's last next-observation is not the next row's reset state
    arrays = {"observations": obs[:-1], "next_observations": nxt, "actions": rng.normal(size=(n, 2)),
              "rewards": rng.normal(size=n), "terminations": term, "truncations": trunc}
    small = compact_replay(arrays)
    assert "next_observations" not in small and small["final_observations"].shape == (3, 4)  # rows 3, 7, 11
    back = expand_replay(small)
    assert set(back) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(back[key], arrays[key])
    np.savez(tmp_path / "full.npz", **arrays)
    np.savez(tmp_path / "small.npz", **small)
    for full_ep, small_ep in zip(replay_episodes(tmp_path / "full.npz"), replay_episodes(tmp_path / "small.npz"),
                                 strict=True):
        np.testing.assert_array_equal(full_ep.observations, small_ep.observations)
    shuffled = dict(arrays, next_observations=nxt[::-1].copy())
    with pytest.raises(ValueError, match="not in time order"):
        compact_replay(shuffled)
    np.savez(tmp_path / "broken.npz", **{k: v for k, v in small.items() if k != "final_observations"})
    with pytest.raises(ValueError, match="neither next_observations nor final_observations"):
        replay_episodes(tmp_path / "broken.npz")


def test_medium_expert_is_the_concatenation(store, policies):
    with pytest.raises(PolicyError, match="Collect them first"):
        _collect(policies, "medium-expert")
    _collect(policies, "medium", steps=120, seed=1)
    _collect(policies, "expert", steps=150, seed=2)
    report = _collect(policies, "medium-expert")
    combined = list(minari.load_dataset(default_dataset_id("hopper", "medium-expert")).iterate_episodes())
    parts = [*minari.load_dataset(MEDIUM).iterate_episodes(), *minari.load_dataset(EXPERT).iterate_episodes()]
    assert report.steps == 270 and len(combined) == len(parts)
    for a, b in zip(combined, parts):
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_missing_policy_and_existing_dataset_are_clear_errors(store, policies, tmp_path, capsys):
    with pytest.raises(PolicyError, match="train-policy"):
        collect_locomotion_report("hopper", "medium", 100, policy_dir=tmp_path / "nowhere", progress=False)
    assert not store.exists() or not any(store.rglob("metadata.json"))
    first = _collect(policies, steps=100, seed=0)
    with pytest.raises(FileExistsError, match="already exists.*--overwrite"):
        _collect(policies, steps=100)
    again = _collect(policies, steps=200, overwrite=True)
    assert again.steps == 200 and minari.load_dataset(MEDIUM).total_steps == 200 != first.steps
    assert not [p for p in store.iterdir() if p.name.startswith(".")]

    from diffuser.collect.cli import add_collect_parser

    parser = argparse.ArgumentParser(prog="diffuser")
    add_collect_parser(parser.add_subparsers(dest="cmd", required=True))
    nowhere = ["--policy-dir", str(tmp_path / "nowhere"), "--dataset-id", "cli/x-v0"]
    for argv, message in ((nowhere, "behaviour policy not found"),
                          (["--policy-dir", str(policies)], "already exists")):
        args = parser.parse_args(["collect", "locomotion", "--steps", "100", "--no-progress", *argv])
        with pytest.raises(SystemExit) as info:
            args.func(args)
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_interrupted_collection_leaves_nothing(store, policies, monkeypatch):
    real = minari.create_dataset_from_buffers

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _collect(policies, steps=100)
    assert not (store / MEDIUM).exists()
    assert not [p for p in store.iterdir() if p.name.startswith(".staging")]


def test_missing_dataset_error_names_the_collect_command(store):
    from diffuser.data.minari_io import DatasetNotFoundError, load_episodes

    with pytest.raises(DatasetNotFoundError, match="diffuser collect locomotion --env hopper --level medium-replay"):
        load_episodes("diffuser/mujoco/hopper/medium-replay-v0")
    with pytest.raises(DatasetNotFoundError, match="written as diffuser/mujoco/walker2d/expert-v0"):
        load_episodes("mujoco/walker2d/expert-v0")


def _fake_run(tmp_path, returns):
    """A train-policy run folder whose log claims ``returns`` (step -> evaluated return), with random actors."""
    run = tmp_path / "run"
    with open(tmp_path / "log.jsonl", "w") as log:
        for k, (step, ret) in enumerate(returns.items()):
            actor = _random_actor(k)
            actor.card.train_steps, actor.card.eval_return = step, ret
            save_policy(actor, run / "checkpoints" / f"step_{step:08d}")
            log.write(json.dumps({"step": step, "eval_return": ret}) + "\n")
    (tmp_path / "log.jsonl").rename(run / "log.jsonl")
    n = max(returns)
    arrays = {"observations": np.zeros((n, 11), np.float32), "next_observations": np.zeros((n, 11), np.float32),
              "actions": np.zeros((n, 3), np.float32), "rewards": np.arange(n, dtype=np.float32),
              "terminations": np.zeros(n, bool), "truncations": np.zeros(n, bool)}
    np.savez(run / "replay.npz", **arrays)
    return run


def test_export_noise_robust_expert_and_forced_expert_rank_medium_against_their_expert(tmp_path):
    from diffuser.collect.behaviour import export_levels

    returns = {1000: 100.0, 2000: 300.0, 3000: 700.0, 4000: 900.0, 5000: 1000.0, 6000: 950.0}
    run = _fake_run(tmp_path, returns)
    summary = export_levels(run, tmp_path / "noisy", eval_episodes=2, show_progress=False, expert_noise=0.1,
                            expert_candidates=3)
    noisy = {int(k): v for k, v in summary["expert_noisy_returns"].items()}
    assert sorted(noisy) == [4000, 5000, 6000]  # the three best-evaluated checkpoints
    assert summary["expert"]["step"] == max(noisy, key=lambda k: (noisy[k], k))
    expert = summary["expert"]["step"]
    before = {k: v for k, v in returns.items() if k < expert}
    assert summary["medium"]["step"] == min(before, key=lambda k: (abs(before[k] - returns[expert] / 3), k))
    card = json.loads((tmp_path / "noisy" / "expert.json").read_text())
    assert "action noise" in card["extra"]["pick"] and len(card["extra"]["noisy_returns_of_candidates"]) == 3
    forced = export_levels(run, tmp_path / "forced", eval_episodes=2, show_progress=False, expert_step=2000)
    assert forced["expert"]["step"] == 2000 and forced["medium"]["step"] == 1000  # a third of 300, not of 1000
    with pytest.raises(ValueError, match="expert_noise must be >= 0"):
        export_levels(run, tmp_path / "bad", expert_noise=-1.0)


def test_export_picks_medium_and_expert_and_cuts_the_replay(tmp_path):
    from diffuser.collect.behaviour import export_levels

    returns = {1000: 50.0, 2000: 310.0, 3000: 700.0, 4000: 1000.0, 5000: 900.0}  # medium: 1000/3 -> step 2000
    run = _fake_run(tmp_path, returns)
    summary = export_levels(run, tmp_path / "out", eval_episodes=2, show_progress=False)
    assert summary["medium"]["step"] == 2000 and summary["expert"]["step"] == 4000
    medium = load_policy(tmp_path / "out" / "medium")
    assert medium.card.level == "medium" and medium.card.train_steps == 2000 and medium.card.eval_episodes == 2
    with np.load(tmp_path / "out" / "medium_replay.npz") as replay:
        np.testing.assert_array_equal(replay["rewards"], np.arange(2000))
        assert "next_observations" not in replay and replay["final_observations"].shape == (1, 11)
    assert (tmp_path / "out" / "training_log.jsonl").read_text() == (run / "log.jsonl").read_text()


def test_medium_expert_of_another_version_concatenates_that_version(store, policies):
    _collect(policies, "medium", steps=120, seed=1)  # v0: must not be picked up for v1
    _collect(policies, "medium", steps=130, seed=3, dataset_id="diffuser/mujoco/hopper/medium-v1")
    with pytest.raises(PolicyError, match="expert-v1"):
        _collect(policies, "medium-expert", dataset_id="diffuser/mujoco/hopper/medium-expert-v1")
    _collect(policies, "expert", steps=150, seed=2, dataset_id="diffuser/mujoco/hopper/expert-v1")
    report = _collect(policies, "medium-expert", dataset_id="diffuser/mujoco/hopper/medium-expert-v1")
    assert report.steps == 280
    assert report.extra["sources"] == ["diffuser/mujoco/hopper/medium-v1", "diffuser/mujoco/hopper/expert-v1"]


def test_a_dataset_version_is_collected_from_its_own_policies_and_recorded_apart(store, policies, tmp_path):
    from diffuser.locomotion_job import ensure_locomotion_dataset, record_locomotion

    with pytest.raises(ValueError, match="look like v0"):
        default_dataset_id("hopper", "medium", "1")
    dataset_id = ensure_locomotion_dataset("hopper", "medium", steps=120, version="v1", policy_dir=str(policies))
    assert dataset_id == "diffuser/mujoco/hopper/medium-v1"
    assert (store / dataset_id / "data" / "metadata.json").is_file()
    assert not (store / MEDIUM).exists()  # v0 untouched
    table = tmp_path / "table.json"
    result = {"score": 1.0, "score_se": 0.1, "episodes": 2}
    for version in ("v0", "v1"):
        record_locomotion({"env": "hopper", "level": "medium", "dataset_version": version, "dataset": dataset_id,
                           "dataset_average": {}, "reference_scores": {}, "training": {}, "results": {"none": result},
                           "seeds": [0], "git_commit": None, "command": None}, table)
    assert set(json.loads(table.read_text())["rows"]) == {"hopper-medium", "hopper-medium-v1"}


def test_a_missing_versioned_dataset_defaults_to_that_versions_policies(store):
    """Without --policy-dir a missing vN dataset comes from assets/policies_vN, never from v0's policies,
    and a version without a policy set is a clear error before anything is collected."""
    from diffuser.collect.locomotion import DEFAULT_POLICY_DIR, default_policy_dir
    from diffuser.locomotion_job import ensure_locomotion_dataset

    assert default_policy_dir("v0") == DEFAULT_POLICY_DIR
    assert default_policy_dir("v1") == DEFAULT_POLICY_DIR.parent / "policies_v1"
    with pytest.raises(FileNotFoundError, match="--policy-dir"):
        ensure_locomotion_dataset("hopper", "medium-replay", version="v9")
    assert not (store / "diffuser/mujoco/hopper/medium-replay-v9").exists()


def test_the_plan_job_collects_the_whole_replay_buffer_like_the_collect_command(store, policies, monkeypatch):
    """A missing medium-replay dataset holds the whole buffer (collect_locomotion's 200,000-step default
    would cut a longer one), and --dataset-steps still caps it."""
    import diffuser.collect.locomotion as loco
    from diffuser.locomotion_job import ensure_locomotion_dataset

    calls = []
    monkeypatch.setattr(loco, "collect_locomotion", lambda **kw: calls.append(kw))
    ensure_locomotion_dataset("hopper", "medium-replay", version="v1", policy_dir=str(policies))
    ensure_locomotion_dataset("hopper", "medium-replay", steps=500, version="v1", policy_dir=str(policies))
    assert [c["steps"] for c in calls] == [None, 500]
