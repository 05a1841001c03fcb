"""Which samples each optimizer step sees: a pure function of (seed, epoch, step).

The global batch of a step (batch_size x grad_accum x world_size samples) is fixed by the
seed and epoch alone; each rank takes its slice and cuts it into micro-batches. So the data
order does not depend on the world size, and a resumed run continues mid-epoch exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ember.data.randomness import epoch_seed

__all__ = ["BatchPlan"]


class BatchPlan:
    """Index plan for one split of `n` samples."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        grad_accum: int = 1,
        world_size: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        self.n = n
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.rank = rank
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.global_batch = batch_size * grad_accum * world_size

    def steps_per_epoch(self) -> int:
        if self.drop_last:
            return self.n // self.global_batch
        return math.ceil(self.n / self.global_batch)

    def order(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=gen)

    def global_indices(self, order: Tensor, step: int) -> Tensor:
        """All ranks' samples for optimizer step `step` of the epoch whose order is given."""
        return order[step * self.global_batch : (step + 1) * self.global_batch]

    def micro_batches(self, order: Tensor, step: int) -> list[Tensor]:
        """This rank's micro-batches for `step` (fewer, smaller ones on a short last step)."""
        if self.world_size == 1 and self.grad_accum == 1:  # the common case, without the slicing
            return [order[step * self.batch_size : (step + 1) * self.batch_size]]
        mine = self.global_indices(order, step).tensor_split(self.world_size)[self.rank]
        return [m for m in mine.split(self.batch_size) if len(m) > 0]
