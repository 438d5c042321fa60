"""Training windows: fixed-horizon slices of episodes, normalized, as torch datasets.

Every item is a dict:

- ``"trajectories"``: (H, A + S) float32, normalized, layout ``[actions | states]``
  (see :class:`~diffuser.data.layout.TrajectoryLayout`);
- ``"conditions"``: ``{timestep: (S,) float32 normalized state}``, the entries to inpaint;
- ``"mask"``: (H,) bool, True on real steps and False on padding;
- ``"values"`` (:class:`ValueDataset` only): (1,) float32 return-to-go, *not* normalized.

``torch.utils.data.default_collate`` batches them into (B, H, A + S), ``{t: (B, S)}``, (B, H), (B, 1).

Padding rules (``padding=``):

- ``"none"``: only windows lying wholly inside an episode; an episode of length T gives
  ``max(0, T - H + 1)`` windows, so episodes shorter than H contribute nothing.
- ``"edge"``: a window may start at any step of an episode (T windows per episode). Steps past the
  episode's end repeat the *edge state* with a zero action (a raw zero, then normalized), so a goal that
  was reached stays reached. The edge state is ``final_observation`` (the state after the last action)
  when the episode carries it, else the last observation.
- ``"zeros"``: windows as with ``"edge"``, but padded entries (actions and states) are 0 in normalized
  space: the original Diffuser's behaviour for locomotion.

With either padding, ``mask`` is False on padded steps, so a loss can ignore them if it wants to.

``rest_dims`` (edge padding only): state dims that are zero when the agent is at rest, i.e. its
velocities. Padded steps hold the edge state with these dims set to 0, so a window past the end of a
goal-reaching episode reads "arrive, then stay at the goal at rest": the same state a planner asks for
as its goal (position, zero velocity).

``stride`` k: a window holds every k-th step (``start, start + k, ..., start + (H-1)·k``), so H states
span ``(H-1)·k + 1`` environment steps. Planning at a stride covers long paths with short sequences (a
4x cheaper network call for the same reach at k = 4); the controller interpolates between the planned
states. Actions are the ones taken at the kept steps.

The index of ``(episode, start)`` pairs and the normalized data are built once, vectorized, in
``__init__``; ``__getitem__`` only slices.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from diffuser.data.episodes import Episode
from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import TrajectoryNormalizer

__all__ = ["PADDINGS", "SequenceDataset", "GoalDataset", "ValueDataset", "discounted_returns", "truncated_tail"]

PADDINGS = ("none", "edge", "zeros")

_BLOCK = 256


TAIL_STEPS = 100  # the reward rate a truncated episode is continued at: its mean over this many last steps


def truncated_tail(rewards: np.ndarray, discount: float) -> np.ndarray:
    """(T,) float64: what a cut episode would have earned after its last step, seen from each step t:
    ``discount**(T - t) * rate / (1 - discount)`` with ``rate`` the mean of its last ``TAIL_STEPS`` rewards."""
    T = rewards.shape[0]
    rate = float(np.mean(rewards[-TAIL_STEPS:]))
    return discount ** (T - np.arange(T, dtype=np.float64)) * rate / (1.0 - discount)


def _discount_matrix(discount: float, block: int) -> np.ndarray:
    """(block, block) upper-triangular M with M[i, j] = discount ** (j - i) for j >= i."""
    k = np.arange(block)
    lag = k[None, :] - k[:, None]
    return np.where(lag >= 0, discount ** np.maximum(lag, 0).astype(np.float64), 0.0)


def discounted_returns(rewards: np.ndarray, discount: float, _matrix: np.ndarray | None = None) -> np.ndarray:
    """Return-to-go ``G[t] = sum_k discount**k * rewards[t + k]``: (T,) -> (T,) float64.

    Computed backwards in blocks of 256 steps: one matrix product inside each block, and a scalar
    recurrence across blocks. That stays vectorized without forming ``discount**t`` for large t, which
    underflows on the 40,000-step Maze2D streams.
    """
    r = np.asarray(rewards, dtype=np.float64)
    T = r.shape[0]
    if T == 0:
        return r.copy()
    M = _discount_matrix(discount, _BLOCK) if _matrix is None else _matrix
    B = min(T, M.shape[0])
    n_blocks = -(-T // B)
    R = np.zeros(n_blocks * B)
    R[:T] = r
    R = R.reshape(n_blocks, B)
    # M's top-left corner is the same matrix for a smaller block: entries depend on j - i only.
    local = R @ M[:B, :B].T  # local[b, i] = sum_{j >= i in block b} discount**(j - i) R[b, j]
    heads = np.empty(n_blocks)  # full return-to-go at each block's first step
    carry, decay = 0.0, discount**B
    for b in range(n_blocks - 1, -1, -1):
        carry = local[b, 0] + decay * carry
        heads[b] = carry
    next_heads = np.append(heads[1:], 0.0)
    out = local + discount ** (B - np.arange(B, dtype=np.float64))[None, :] * next_heads[:, None]
    return out.reshape(-1)[:T]


class SequenceDataset(Dataset):
    """Windows of ``horizon`` steps over episodes, conditioned on the first state.

    Args:
        episodes: the episodes to cut (all with the same observation and action dims).
        horizon: H, the window length (>= 1).
        normalizer: a :class:`TrajectoryNormalizer` already fitted (once, on the training episodes).
        padding: "none" | "edge" | "zeros"; see the module docstring.
        rest_dims: state dims zeroed on padded steps (velocities), with ``padding="edge"``.
        stride: keep every ``stride``-th step (see the module docstring).

    Attributes:
        layout: the :class:`TrajectoryLayout` of the episodes.
        horizon: H.
        indices: (N, 2) int64 array of ``(episode, start)`` for every window.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        horizon: int,
        normalizer: TrajectoryNormalizer,
        padding: str = "none",
        rest_dims: Sequence[int] = (),
        stride: int = 1,
    ) -> None:
        if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if isinstance(stride, bool) or int(stride) != stride or stride < 1:
            raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
        if padding not in PADDINGS:
            raise ValueError(f"unknown padding {padding!r}; valid: {list(PADDINGS)}")
        if len(episodes) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one episode, got none")
        self.layout = _common_layout(episodes)
        _check_normalizer(normalizer, self.layout)
        self.horizon = int(horizon)
        self.stride = int(stride)
        self.padding = padding
        self.rest_dims = [int(d) for d in rest_dims]
        bad = [d for d in self.rest_dims if not 0 <= d < self.layout.observation_dim]
        if bad:
            raise ValueError(f"rest_dims {bad} are not state dims (0..{self.layout.observation_dim - 1})")
        if self.rest_dims and padding != "edge":
            raise ValueError(f"rest_dims only apply to padding='edge', got padding={padding!r}")
        self.normalizer = normalizer

        A, S = self.layout.action_dim, self.layout.observation_dim
        lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
        self._lengths = lengths
        self._offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

        # All steps of all episodes normalized in one call, laid out [actions | states].
        data = np.empty((int(lengths.sum()), A + S), dtype=np.float32)
        data[:, :A] = normalizer.normalize_actions(np.concatenate([ep.actions for ep in episodes]))
        data[:, A:] = normalizer.normalize_observations(np.concatenate([ep.observations for ep in episodes]))
        self._data = data
        self._pad_rows = self._build_pad_rows(episodes)

        span = (self.horizon - 1) * self.stride + 1  # environment steps a window covers
        counts = np.maximum(lengths - span + 1, 0) if padding == "none" else lengths.copy()
        total = int(counts.sum())
        if total == 0:
            raise ValueError(
                f"no windows of horizon {self.horizon} (stride {self.stride}: {span} steps) with "
                f"padding={padding!r}: the longest of {len(episodes)} episodes has {int(lengths.max())} steps. "
                f"Use padding='edge' (or 'zeros'), a shorter span, or stitch consecutive episodes into longer ones."
            )
        episode_ids = np.repeat(np.arange(len(episodes), dtype=np.int64), counts)
        first = np.cumsum(counts) - counts  # index of each episode's first window
        starts = np.arange(total, dtype=np.int64) - np.repeat(first, counts)
        self.indices = np.stack([episode_ids, starts], axis=1)

    def _build_pad_rows(self, episodes: Sequence[Episode]) -> np.ndarray | None:
        """(E, A + S) normalized row appended past each episode's end, or None without padding."""
        A, S = self.layout.action_dim, self.layout.observation_dim
        if self.padding == "none":
            return None
        if self.padding == "zeros":
            return np.zeros((len(episodes), A + S), dtype=np.float32)
        edge = np.stack([
            ep.final_observation if ep.final_observation is not None else ep.observations[-1]
            for ep in episodes
        ])
        rows = np.empty((len(episodes), A + S), dtype=np.float32)
        rows[:, :A] = self.normalizer.normalize_actions(np.zeros((len(episodes), A), dtype=np.float32))
        edge = np.array(edge, dtype=np.float32)
        edge[:, self.rest_dims] = 0.0
        rows[:, A:] = self.normalizer.normalize_observations(edge)
        return rows

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def subset(self, windows: np.ndarray) -> "SequenceDataset":
        """The same dataset with only the windows ``windows`` (indices into this one), sharing its data:
        e.g. the windows that show one behaviour, to train a model on that behaviour alone."""
        windows = np.asarray(windows, dtype=np.int64)
        if windows.ndim != 1 or (len(windows) and not (0 <= windows.min() and windows.max() < len(self))):
            raise ValueError(f"window indices must be a 1-D array in [0, {len(self)}), got shape {windows.shape}")
        out = copy.copy(self)
        out.indices = self.indices[windows]
        return out

    @property
    def num_episodes(self) -> int:
        return int(self._lengths.shape[0])

    def _window(self, index: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(H, A + S) normalized window, (H,) mask, episode id, start."""
        episode, start = (int(v) for v in self.indices[index])
        H, k = self.horizon, self.stride
        n_real = min(H, (int(self._lengths[episode]) - 1 - start) // k + 1)
        begin = int(self._offsets[episode]) + start
        traj = np.empty((H, self._data.shape[1]), dtype=np.float32)
        traj[:n_real] = self._data[begin : begin + (n_real - 1) * k + 1 : k]
        if n_real < H:
            traj[n_real:] = self._pad_rows[episode]
        mask = np.zeros(H, dtype=bool)
        mask[:n_real] = True
        return traj, mask, episode, start

    def _conditions(self, traj: np.ndarray) -> dict[int, torch.Tensor]:
        """Inpainting targets taken from the window itself: {0: (S,) first state}."""
        return {0: torch.from_numpy(traj[0, self.layout.state_slice].copy())}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        traj, mask, _, _ = self._window(index % len(self))
        return {
            "trajectories": torch.from_numpy(traj),
            "conditions": self._conditions(traj),
            "mask": torch.from_numpy(mask),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(windows={len(self)}, episodes={self.num_episodes}, "
            f"horizon={self.horizon}, stride={self.stride}, padding={self.padding!r}, layout={self.layout})"
        )


class GoalDataset(SequenceDataset):
    """As :class:`SequenceDataset`, conditioned on the first and the last state: ``{0: s, H-1: s'}``.

    For a padded window the last state is the edge state. ``padding="zeros"`` is refused: it would make
    the goal a vector of zeros, which no planner would ever ask for.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        horizon: int,
        normalizer: TrajectoryNormalizer,
        padding: str = "none",
        rest_dims: Sequence[int] = (),
        stride: int = 1,
    ) -> None:
        if padding == "zeros":
            raise ValueError(
                "GoalDataset conditions on the window's last state, which padding='zeros' replaces by "
                "zeros; use padding='edge' (the goal state is held) or 'none'"
            )
        super().__init__(episodes, horizon, normalizer, padding, rest_dims, stride)

    def _conditions(self, traj: np.ndarray) -> dict[int, torch.Tensor]:
        states = traj[:, self.layout.state_slice]
        return {0: torch.from_numpy(states[0].copy()), self.horizon - 1: torch.from_numpy(states[-1].copy())}


class ValueDataset(SequenceDataset):
    """As :class:`SequenceDataset`, plus ``"values"``: (1,) float32 discounted return-to-go.

    ``values = sum_k discount**k * r[start + k]`` up to the episode's end (not the window's), where the
    last reward of a terminated episode has ``termination_penalty`` added. Values are raw, not
    normalized: their scale is the reward scale, which the value model has to cope with.

    A time limit is not part of the MDP: the state does not show how many steps are left, so a return that
    stops at the cut makes the same state worth less the later it was visited (an expert's last 100 steps
    look like a policy about to fall). With ``bootstrap_truncated`` a truncated episode's return continues
    past the cut at the rate it was earning there: ``discount**(T - t) * rate / (1 - discount)`` is added,
    ``rate`` being its mean reward over the last ``TAIL_STEPS`` steps (Pardo et al. 2018, "Time limits in
    reinforcement learning", bootstrap from partial episodes; here without a learned critic).
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        horizon: int,
        normalizer: TrajectoryNormalizer,
        padding: str = "none",
        discount: float = 0.99,
        termination_penalty: float = -100.0,
        rest_dims: Sequence[int] = (),
        stride: int = 1,
        bootstrap_truncated: bool = False,
    ) -> None:
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount}")
        if bootstrap_truncated and discount >= 1.0:
            raise ValueError("bootstrap_truncated continues a cut episode's return forever, which needs "
                             f"discount < 1 (got {discount}); lower the discount or set bootstrap_truncated=false")
        if not any(np.any(ep.rewards != 0) for ep in episodes):
            raise ValueError("every reward in these episodes is 0: value targets need a dataset with rewards "
                             "(a dataset recorded without rewards cannot train a value model or a return condition)")
        super().__init__(episodes, horizon, normalizer, padding, rest_dims, stride)
        self.discount = float(discount)
        self.termination_penalty = float(termination_penalty)
        self.bootstrap_truncated = bool(bootstrap_truncated)
        matrix = _discount_matrix(self.discount, _BLOCK)
        returns = []
        for ep in episodes:
            r = ep.rewards.astype(np.float64)
            if ep.terminated:
                r[-1] += self.termination_penalty
            g = discounted_returns(r, self.discount, matrix)
            if self.bootstrap_truncated and ep.truncated and not ep.terminated:
                g += truncated_tail(r, self.discount)
            returns.append(g)
        self._returns = np.concatenate(returns).astype(np.float32)  # aligned with self._data rows

    def window_values(self) -> np.ndarray:
        """(N,) float32: the value target of every window, in index order."""
        return self._returns[self._offsets[self.indices[:, 0]] + self.indices[:, 1]]

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        episode, start = (int(v) for v in self.indices[index % len(self)])
        value = self._returns[int(self._offsets[episode]) + start]
        item["values"] = torch.tensor([value], dtype=torch.float32)
        return item


def _common_layout(episodes: Sequence[Episode]) -> TrajectoryLayout:
    obs_dims = {ep.observation_dim for ep in episodes}
    act_dims = {ep.action_dim for ep in episodes}
    if len(obs_dims) != 1 or len(act_dims) != 1:
        raise ValueError(
            f"all episodes must share observation and action dims, got observation dims "
            f"{sorted(obs_dims)} and action dims {sorted(act_dims)}"
        )
    return TrajectoryLayout(observation_dim=obs_dims.pop(), action_dim=act_dims.pop())


def _check_normalizer(normalizer: TrajectoryNormalizer, layout: TrajectoryLayout) -> None:
    if not normalizer.fitted:
        raise ValueError("the normalizer is not fitted: call normalizer.fit(train_episodes) first")
    if (normalizer.observation_dim, normalizer.action_dim) != (layout.observation_dim, layout.action_dim):
        raise ValueError(
            f"normalizer was fitted on observation_dim={normalizer.observation_dim}, "
            f"action_dim={normalizer.action_dim}, but the episodes have "
            f"observation_dim={layout.observation_dim}, action_dim={layout.action_dim}"
        )
