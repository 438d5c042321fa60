"""Where training episodes come from: one string names the source.

- ``"synthetic/pointmass"``: the simulator-free point-mass set of :mod:`diffuser.data.synthetic`;
- a path ending in ``.hdf5`` / ``.h5``: a D4RL-format file;
- anything else: a local Minari dataset id ``namespace/name-vN``.
"""

from __future__ import annotations

from pathlib import Path

from diffuser.data.episodes import Episode

SYNTHETIC = "synthetic/pointmass"


def load_source(dataset: str, *, max_episodes: int | None = None, synthetic_episodes: int = 400,
                seed: int = 0) -> list[Episode]:
    """Episodes from ``dataset`` (see the module docstring), at most ``max_episodes`` of them."""
    if dataset == SYNTHETIC:
        from diffuser.data.synthetic import pointmass_episodes

        episodes = pointmass_episodes(synthetic_episodes, seed=seed)
    elif Path(dataset).suffix in (".hdf5", ".h5"):
        from diffuser.data.d4rl import load_d4rl_hdf5

        episodes = load_d4rl_hdf5(dataset)
    else:
        from diffuser.data.minari_io import load_episodes

        episodes = load_episodes(dataset, max_episodes=max_episodes)
    if max_episodes is not None:
        episodes = episodes[:max_episodes]
    if not episodes:
        raise ValueError(f"dataset {dataset!r} holds no episodes")
    return episodes
