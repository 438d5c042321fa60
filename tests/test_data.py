"""Fast tests of diffuser.data: episodes, normalizers, windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffuser.data import (
    Episode,
    GaussianNormalizer,
    GoalDataset,
    LimitsNormalizer,
    NotFittedError,
    SequenceDataset,
    TrajectoryNormalizer,
    ValueDataset,
    discounted_returns,
    episode_stats,
    make_normalizer,
    split_episodes,
)

S, A = 3, 2


def make_episode(T: int, seed: int = 0, terminated: bool = False, final: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, S)).astype(np.float32)
    obs[:, 2] = 5.0  # a constant dimension
    term = np.zeros(T, dtype=bool)
    trunc = np.zeros(T, dtype=bool)
    (term if terminated else trunc)[-1] = True
    return Episode(
        observations=obs,
        actions=rng.uniform(-1, 1, size=(T, A)),
        rewards=rng.normal(size=T),
        terminations=term,
        truncations=trunc,
        final_observation=rng.normal(size=S) if final else None,
        infos={"desired_goal": np.zeros((T, 2))},
    )


@pytest.fixture
def episodes() -> list[Episode]:
    return [make_episode(T, seed=i, terminated=(i == 1)) for i, T in enumerate([3, 7, 10])]


def fitted(episodes, kind="gaussian") -> TrajectoryNormalizer:
    return TrajectoryNormalizer(kind).fit(episodes)


# ---------------------------------------------------------------- episodes
def test_episode_casts_and_properties():
    ep = make_episode(5, terminated=True)
    assert ep.observations.dtype == np.float32 and ep.actions.dtype == np.float32
    assert ep.rewards.dtype == np.float32 and ep.terminations.dtype == bool
    assert len(ep) == 5 and ep.observation_dim == S and ep.action_dim == A
    assert ep.terminated and not ep.truncated
    assert ep.total_return == pytest.approx(float(ep.rewards.astype(np.float64).sum()))


def test_episode_rejects_nan_naming_field_length_and_index():
    obs = np.zeros((6, S))
    obs[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"observations.*step 4.*length 6.*clean"):
        Episode(obs, np.zeros((6, A)), np.zeros(6), np.zeros(6), np.zeros(6))
    rew = np.zeros(6)
    rew[2] = np.inf
    with pytest.raises(ValueError, match=r"rewards.*step 2"):
        Episode(np.zeros((6, S)), np.zeros((6, A)), rew, np.zeros(6), np.zeros(6))


def test_episode_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        Episode(np.zeros((7, S)), np.zeros((6, A)), np.zeros(6), np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="2-D"):
        Episode(np.zeros(6), np.zeros((6, A)), np.zeros(6), np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="1-D"):
        Episode(np.zeros((6, S)), np.zeros((6, A)), np.zeros(6), np.zeros((6, 1)), np.zeros(6))
    with pytest.raises(ValueError, match="at least one step"):
        Episode(np.zeros((0, S)), np.zeros((0, A)), np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="infos"):
        Episode(np.zeros((6, S)), np.zeros((6, A)), np.zeros(6), np.zeros(6), np.zeros(6),
                infos={"goal": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="final_observation"):
        Episode(np.zeros((6, S)), np.zeros((6, A)), np.zeros(6), np.zeros(6), np.zeros(6),
                final_observation=np.zeros(S + 1))


def test_episode_stats(episodes):
    stats = episode_stats(episodes)
    assert (stats.count, stats.total_steps, stats.min_length, stats.max_length) == (3, 20, 3, 10)
    assert stats.median_length == 7 and stats.mean_length == pytest.approx(20 / 3)
    assert stats.fraction_terminated == pytest.approx(1 / 3)
    assert stats.fraction_truncated == pytest.approx(2 / 3)
    assert stats.mean_return == pytest.approx(np.mean([ep.total_return for ep in episodes]))
    assert "3 episodes" in str(stats)


def test_split_is_deterministic_disjoint_and_keeps_train():
    eps = [make_episode(2, seed=i) for i in range(20)]
    train, val = split_episodes(eps, 0.25, seed=3)
    train2, val2 = split_episodes(eps, 0.25, seed=3)
    assert [id(e) for e in train] == [id(e) for e in train2] and [id(e) for e in val] == [id(e) for e in val2]
    assert len(val) == 5 and len(train) == 15
    assert not {id(e) for e in train} & {id(e) for e in val}
    assert {id(e) for e in train} | {id(e) for e in val} == {id(e) for e in eps}
    _, val_other = split_episodes(eps, 0.25, seed=4)
    assert [id(e) for e in val_other] != [id(e) for e in val]
    assert split_episodes(eps, 0.0, seed=0) == (eps, [])
    train, val = split_episodes(eps[:2], 0.99, seed=0)
    assert len(train) == 1 and len(val) == 1
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            split_episodes(eps, bad, seed=0)


# ---------------------------------------------------------------- normalizers
@pytest.mark.parametrize("kind", ["gaussian", "limits"])
def test_normalizer_round_trip_numpy_and_torch(kind):
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(500, 4)).astype(np.float32)
    data[:, 1] = -7.25  # constant
    norm = make_normalizer(kind).fit(data)
    assert norm.kind == kind
    y = norm.normalize(data)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == data.shape
    assert np.all(y[:, 1] == 0.0)
    back = norm.unnormalize(y)
    np.testing.assert_allclose(back, data, rtol=1e-5, atol=1e-5)
    assert np.all(back[:, 1] == np.float32(-7.25))  # constants come back exactly

    x = torch.from_numpy(data).reshape(5, 100, 4)  # (..., D)
    yt = norm.normalize(x)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32 and yt.shape == x.shape
    np.testing.assert_allclose(yt.reshape(500, 4).numpy(), y, rtol=1e-6, atol=1e-6)
    assert torch.equal(norm.unnormalize(yt)[..., 1], x[..., 1])
    y64 = norm.normalize(x.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(norm.unnormalize(y64), x.double())
    if kind == "gaussian":
        keep = [0, 2, 3]
        np.testing.assert_allclose(y[:, keep].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(y[:, keep].std(0), 1, atol=1e-4)


def test_limits_hits_minus_one_and_one_exactly():
    rng = np.random.default_rng(1)
    data = (rng.uniform(-3, 11, size=(1000, 3)) * np.array([1.0, 1e-3, 1e4])).astype(np.float32)
    norm = LimitsNormalizer().fit(data)
    for y in (norm.normalize(data), norm.normalize(torch.from_numpy(data)).numpy()):
        assert y.min() >= -1.0 and y.max() <= 1.0
        np.testing.assert_array_equal(y.min(axis=0), -1.0)
        np.testing.assert_array_equal(y.max(axis=0), 1.0)
    np.testing.assert_array_equal(norm.unnormalize(np.full((1, 3), -1.0, np.float32))[0], data.min(0))


def test_normalizer_errors():
    for norm in (GaussianNormalizer(), LimitsNormalizer()):
        with pytest.raises(NotFittedError, match="not fitted"):
            norm.normalize(np.zeros((2, 3)))
        with pytest.raises(ValueError, match="empty"):
            norm.fit(np.zeros((0, 3)))
        with pytest.raises(ValueError, match="NaN"):
            norm.fit(np.array([[0.0, 1.0], [np.nan, 2.0]]))
        norm.fit(np.ones((4, 3)))
        with pytest.raises(ValueError, match="3 dims"):
            norm.normalize(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="gaussian.*limits"):
        make_normalizer("minmax")


@pytest.mark.parametrize("kind", ["gaussian", "limits"])
def test_trajectory_normalizer_state_round_trip(episodes, kind):
    norm = fitted(episodes, kind)
    config, tensors = norm.to_config(), norm.state_dict()
    assert config == {"kind": kind, "observation_dim": S, "action_dim": A}
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert {k.split(".")[0] for k in tensors} == {"observations", "actions"}
    restored = TrajectoryNormalizer.from_state(config, {k: v.clone() for k, v in tensors.items()})

    x = torch.randn(4, 8, A + S)
    y = norm.normalize_trajectory(x)
    assert torch.equal(restored.normalize_trajectory(x), y)
    torch.testing.assert_close(norm.unnormalize_trajectory(y), x)
    # layout [actions | states]
    torch.testing.assert_close(y[..., :A], norm.normalize_actions(x[..., :A]))
    torch.testing.assert_close(y[..., A:], norm.normalize_observations(x[..., A:]))
    np.testing.assert_allclose(norm.normalize_trajectory(x.numpy()), y.numpy(), rtol=1e-6, atol=1e-6)

    with pytest.raises(ValueError, match="does not belong"):
        TrajectoryNormalizer.from_state({**config, "observation_dim": S + 1}, tensors)
    with pytest.raises(ValueError, match="transition_dim|A \\+ S|= 5"):
        norm.normalize_trajectory(torch.zeros(2, 8, A + S + 1))
    with pytest.raises(ValueError, match="unexpected"):
        TrajectoryNormalizer.from_state(config, {**tensors, "rewards.mean": torch.zeros(1)})


# ---------------------------------------------------------------- windows
@pytest.mark.parametrize("padding, expected", [("none", 0 + 3 + 6), ("edge", 20), ("zeros", 20)])
def test_window_counts(episodes, padding, expected):
    ds = SequenceDataset(episodes, horizon=5, normalizer=fitted(episodes), padding=padding)
    assert len(ds) == expected and ds.horizon == 5
    assert (ds.layout.observation_dim, ds.layout.action_dim) == (S, A)
    item = ds[0]
    assert item["trajectories"].shape == (5, A + S) and item["trajectories"].dtype == torch.float32
    assert item["mask"].shape == (5,) and item["mask"].dtype == torch.bool


def test_subset_keeps_the_chosen_windows_and_shares_the_data(episodes):
    ds = GoalDataset(episodes, horizon=4, normalizer=fitted(episodes))
    sub = ds.subset(np.array([5, 1]))
    assert len(sub) == 2 and len(ds) > 2 and sub._data is ds._data
    for k, i in enumerate([5, 1]):
        assert torch.equal(sub[k]["trajectories"], ds[i]["trajectories"])
        assert set(sub[k]["conditions"]) == {0, 3}  # still a GoalDataset
    with pytest.raises(ValueError, match="window indices"):
        ds.subset(np.array([len(ds)]))


def test_no_window_error_names_longest_episode(episodes):
    with pytest.raises(ValueError, match=r"longest.*10 steps.*padding='edge'"):
        SequenceDataset(episodes, horizon=11, normalizer=fitted(episodes))


def test_mismatched_episode_dims_error(episodes):
    other = Episode(np.zeros((8, S + 1)), np.zeros((8, A)), np.zeros(8), np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError, match="share observation and action dims"):
        SequenceDataset(episodes + [other], horizon=2, normalizer=fitted(episodes))


def test_unpadded_windows_match_the_episode_data(episodes):
    norm = fitted(episodes)
    ds = GoalDataset(episodes, horizon=4, normalizer=norm)
    for i in range(len(ds)):
        e, s = ds.indices[i]
        ep = episodes[e]
        item = ds[i]
        raw = np.concatenate([ep.actions[s:s + 4], ep.observations[s:s + 4]], axis=1)
        np.testing.assert_allclose(norm.unnormalize_trajectory(item["trajectories"]).numpy(), raw,
                                   rtol=1e-5, atol=1e-5)
        states = item["trajectories"][:, A:]
        assert set(item["conditions"]) == {0, 3}
        assert torch.equal(item["conditions"][0], states[0])
        assert torch.equal(item["conditions"][3], states[-1])
        assert item["mask"].all()


def test_edge_padding_holds_the_edge_state_with_zero_action(episodes):
    norm = fitted(episodes)
    episodes[2].final_observation = None  # falls back to the last observation
    ds = GoalDataset(episodes, horizon=6, normalizer=norm, padding="edge")
    zero_action = norm.normalize_actions(torch.zeros(A))
    for episode, start, edge in [(0, 1, episodes[0].final_observation), (2, 7, episodes[2].observations[-1])]:
        i = int(np.flatnonzero((ds.indices[:, 0] == episode) & (ds.indices[:, 1] == start))[0])
        item = ds[i]
        n_real = len(episodes[episode]) - start
        assert item["mask"].tolist() == [True] * n_real + [False] * (6 - n_real)
        pad = item["trajectories"][n_real:]
        torch.testing.assert_close(norm.unnormalize_observations(pad[:, A:]),
                                   torch.from_numpy(edge).expand(6 - n_real, S))
        assert torch.equal(pad[:, :A], zero_action.expand(6 - n_real, A))
        assert torch.equal(item["conditions"][5], item["trajectories"][-1, A:])
        assert torch.equal(item["conditions"][0], item["trajectories"][0, A:])


def test_zeros_padding_is_zero_in_normalized_space(episodes):
    ds = SequenceDataset(episodes, horizon=6, normalizer=fitted(episodes), padding="zeros")
    i = int(np.flatnonzero((ds.indices[:, 0] == 0) & (ds.indices[:, 1] == 2))[0])
    item = ds[i]
    assert item["mask"].tolist() == [True] + [False] * 5
    assert torch.all(item["trajectories"][1:] == 0)
    assert torch.any(item["trajectories"][0] != 0)
    with pytest.raises(ValueError, match="zeros"):
        GoalDataset(episodes, horizon=6, normalizer=fitted(episodes), padding="zeros")


def test_value_targets_match_hand_computed_sum(episodes):
    gamma, penalty = 0.9, -100.0
    ds = ValueDataset(episodes, horizon=2, normalizer=fitted(episodes), discount=gamma,
                      termination_penalty=penalty)
    for i in range(len(ds)):
        e, s = ds.indices[i]
        ep = episodes[e]
        r = ep.rewards.astype(np.float64)
        expected = sum(gamma ** k * r[s + k] for k in range(len(ep) - s))
        if ep.terminated:  # episode 1
            expected += gamma ** (len(ep) - 1 - s) * penalty
        value = ds[i]["values"]
        assert value.shape == (1,) and value.dtype == torch.float32
        assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_discounted_returns_long_and_blocked():
    rng = np.random.default_rng(0)
    r = rng.normal(size=1000)
    expected = np.zeros_like(r)
    acc = 0.0
    for t in range(len(r) - 1, -1, -1):
        acc = r[t] + 0.997 * acc
        expected[t] = acc
    np.testing.assert_allclose(discounted_returns(r, 0.997), expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(discounted_returns(r, 0.0), r)
    long = discounted_returns(np.ones(100_000), 0.99)  # gamma**t would underflow here
    np.testing.assert_allclose(long[:50_000], 100.0, rtol=1e-9)
    assert long[-1] == 1.0


def test_dataloader_batches_items(episodes):
    ds = ValueDataset(episodes, horizon=4, normalizer=fitted(episodes, "limits"), padding="edge")
    batch = next(iter(DataLoader(ds, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert batch["trajectories"].shape == (5, 4, A + S)
    assert batch["conditions"][0].shape == (5, S)
    assert batch["mask"].shape == (5, 4) and batch["mask"].dtype == torch.bool
    assert batch["values"].shape == (5, 1)
    gb = next(iter(DataLoader(GoalDataset(episodes, 4, fitted(episodes)), batch_size=3)))
    assert set(gb["conditions"]) == {0, 3} and gb["conditions"][3].shape == (3, S)


def test_many_steps_build_quickly():
    import time

    T = 1000
    eps = [Episode(np.full((T, 4), i, np.float32), np.zeros((T, 2)), np.ones(T), np.zeros(T), np.zeros(T))
           for i in range(200)]  # 200k steps
    start = time.perf_counter()
    ds = ValueDataset(eps, horizon=64, normalizer=fitted(eps), padding="edge")
    assert time.perf_counter() - start < 5.0
    assert len(ds) == 200 * T
    assert ds[len(ds) - 1]["mask"].sum() == 1
