"""The order in which training items are visited: one seeded stream, shared out among processes.

The stream is the concatenation of epoch permutations: epoch ``e`` is ``randperm(num_items)`` drawn from a
generator seeded by ``(seed, e)``. Item position ``p`` of the stream is therefore a pure function of the
seed, and nothing else (not the batch size, not the number of processes).

Training takes *global batches* of ``world_size * batch_size`` consecutive stream items; rank ``r``
takes the ``r``-th slice of ``batch_size`` items of each. So

* N processes with batch ``b`` see exactly the items that 1 process with batch ``N * b`` sees, in the
  same global batches (the union of the shards is the 1-process order, and the shards are disjoint);
* the data position is one number, the count of stream items consumed by all ranks together, so a run
  saved with one world size (or batch size) resumes with another at the very item where it stopped.

A batch may straddle two epochs (the stream does not drop the ragged end of an epoch), so an item can
appear twice in one batch near an epoch boundary; over the stream every item is seen equally often.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["DataOrder", "ShardedBatchSampler"]

_SEED_SPREAD = 0x9E3779B97F4A7C15  # spreads (seed, epoch) over 63 bits so neighbouring seeds do not share epochs


class DataOrder:
    """The seeded, endless stream of item indices (see the module docstring)."""

    def __init__(self, num_items: int, seed: int) -> None:
        if num_items < 1:
            raise ValueError(f"DataOrder needs at least one item, got num_items={num_items}")
        self.num_items, self.seed = int(num_items), int(seed)
        self._epoch: int | None = None
        self._perm: torch.Tensor | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s permutation of ``range(num_items)`` (the last one is cached)."""
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed((self.seed * _SEED_SPREAD + epoch) % 2**63)
            self._perm, self._epoch = torch.randperm(self.num_items, generator=generator), epoch
        assert self._perm is not None
        return self._perm

    def items(self, start: int, count: int) -> list[int]:
        """Stream positions ``[start, start + count)`` as item indices."""
        if start < 0 or count < 0:
            raise ValueError(f"stream positions must be >= 0, got start={start}, count={count}")
        out: list[int] = []
        position, end = start, start + count
        while position < end:
            epoch, offset = divmod(position, self.num_items)
            take = min(end - position, self.num_items - offset)
            out += self.permutation(epoch)[offset : offset + take].tolist()
            position += take
        return out


class ShardedBatchSampler(Sampler[list[int]]):
    """Endless batches of ``batch_size`` indices for ``rank`` of ``world_size``, starting at stream item
    ``start`` (the data position: items consumed by all ranks together, e.g. from a resume state)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.order = DataOrder(num_items, seed)
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start

    @property
    def global_batch(self) -> int:
        """Items all ranks together take per batch."""
        return self.batch_size * self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start + self.rank * self.batch_size
        while True:
            yield self.order.items(position, self.batch_size)
            position += self.global_batch
