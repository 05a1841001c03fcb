"""Which samples each optimizer step sees: a pure function of (seed, epoch, step).

The global batch of a step (`batch_size x grad_accum` samples, whatever the number of
processes) is fixed by the seed and epoch alone; each of the N ranks takes its slice (about
1/N of it) and cuts it into micro-batches of `ceil(batch_size / N)`. So a recipe means the
same optimisation on one CPU or eight GPUs: the data order and the step count do not depend
on the world size, and a resumed run continues mid-epoch exactly, with any world size.
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
        self.global_batch = batch_size * grad_accum
        self.micro_batch = math.ceil(batch_size / world_size)

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
        """This rank's micro-batches for `step` (fewer, smaller ones on a short last step).

        On a last step with fewer samples than ranks, a rank may get none: the loop then
        runs a zero-weighted pass so that every rank still joins the gradient exchange.
        """
        if self.world_size == 1 and self.grad_accum == 1:  # the common case, without the slicing
            return [order[step * self.batch_size : (step + 1) * self.batch_size]]
        mine = self.global_indices(order, step).tensor_split(self.world_size)[self.rank]
        return [m for m in mine.split(self.micro_batch) if len(m) > 0]
