"""Gaussian noise from one generator, or from one generator per group of batch rows.

With G generators for a batch of B rows (G dividing B), generator g fills rows g·B/G … (g+1)·B/G − 1,
drawing them in one call, exactly as it would for a batch of B/G alone. So planning for G environments
at once (B/G candidates each, a seed each) gives each environment the plans it would get alone with its
seed, up to float rounding in the network: batched planning changes speed, never the answer.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def randn(shape: Sequence[int], generator: Generators, device: torch.device | str | None = None,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of ``shape``; a sequence of generators fills equal groups of rows of dim 0."""
    shape = tuple(int(s) for s in shape)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    gens = list(generator)
    if not gens or shape[0] % len(gens):
        raise ValueError(f"{len(gens)} generators for a batch of {shape[0]} rows: the count must divide the batch")
    rows = (shape[0] // len(gens), *shape[1:])
    return torch.cat([torch.randn(rows, generator=g, device=device, dtype=dtype) for g in gens])


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded generator per seed."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]
