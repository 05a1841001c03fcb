"""The training feed: each optimizer step's micro-batches, built in or out of the process.

`StepLoader.steps(order, epoch, start, stop)` yields, for every step of the epoch from
`start`, the list of `(x, y)` micro-batches `dataset.batch(indices, epoch, train=True)`
returns for this rank's indices of that step. With `workers: 0` they are built in the training
process when asked for, as before; with `workers: N` they are built by N `torch.utils.data`
worker processes, `prefetch` steps ahead each, and pinned on CUDA.

Which samples a step holds comes from the `BatchPlan` and every random draw inside `batch`
from (seed, epoch, index), so a step's tensors are the same whichever process built them:
the weights do not depend on `workers`, and a resumed run restarts at `start` exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ember import errors
from ember.errors import EmberError

__all__ = ["StepLoader", "step_index_lists", "BatchSource"]

Batch = tuple[Tensor, Tensor]


class BatchSource(Protocol):
    """What a training split offers the loader (ArrayDataset and the streaming datasets)."""

    def __len__(self) -> int: ...

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> Batch: ...


class _Plan(Protocol):
    def global_indices(self, order: Tensor, step: int) -> Tensor: ...

    def micro_batches(self, order: Tensor, step: int) -> list[Tensor]: ...


def step_index_lists(plan: _Plan, order: Tensor, step: int) -> list[Tensor]:
    """This rank's micro-batch indices for `step`; a rank left without samples gets the step's
    first sample (the loop runs it zero-weighted so that every rank joins the exchange)."""
    parts = plan.micro_batches(order, step)
    return parts or [plan.global_indices(order, step)[:1]]


class _StepDataset(Dataset):
    """Maps a key (epoch, index lists of one step) to that step's micro-batches."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, list[list[int]]]) -> list[Batch] | str:
        epoch, parts = key
        try:
            return [self.source.batch(torch.tensor(p, dtype=torch.long), epoch, train=True) for p in parts]
        except EmberError as exc:
            # Sent back as its one line: re-raised in a worker it would carry the worker's traceback.
            return f"{type(exc).__name__}:{exc}"


class _StepKeys:
    """The keys of steps `start` .. `stop - 1`, made as the loader asks for them (a list of
    every step's indices up front would hold the whole epoch as Python ints)."""

    def __init__(self, plan: _Plan, order: Tensor, epoch: int, start: int, stop: int) -> None:
        self.plan, self.order, self.epoch, self.start, self.stop = plan, order, epoch, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[tuple[int, list[list[int]]]]:
        for step in range(self.start, self.stop):
            yield self.epoch, [idx.tolist() for idx in step_index_lists(self.plan, self.order, step)]


def _one_thread(_worker_id: int) -> None:
    # N workers on a few cores: one intra-op thread each avoids oversubscription. The
    # ops a batch runs give the same values whatever the thread count.
    torch.set_num_threads(1)


class StepLoader:
    """Builds the steps' micro-batches for `source` following `plan`.

    Args:
        source: the training split (anything with `__len__` and `batch(indices, epoch, train)`).
        plan: the `BatchPlan` that says which indices each step and rank takes.
        workers: worker processes (0: build each step in this process when it is asked for).
        prefetch: steps each worker keeps ready ahead.
        pin_memory: page-lock the batches (set on CUDA so the copy to the device is async).
    """

    def __init__(self, source: BatchSource, plan: _Plan, workers: int = 0, prefetch: int = 2,
                 pin_memory: bool = False) -> None:
        self.source = source
        self.plan = plan
        self.workers = workers
        self.prefetch = prefetch
        self.pin_memory = pin_memory

    def steps(self, order: Tensor, epoch: int, start: int, stop: int) -> Iterator[list[Batch]]:
        """Micro-batches of steps `start` .. `stop - 1` of `epoch`, one list per step.

        Closing the iterator (or dropping it) stops the worker processes.
        """
        if self.workers == 0:
            for step in range(start, stop):
                yield [self.source.batch(idx, epoch, train=True)
                       for idx in step_index_lists(self.plan, order, step)]
            return
        if stop <= start:
            return
        keys = _StepKeys(self.plan, order, epoch, start, stop)
        loader: DataLoader[Any] = DataLoader(
            _StepDataset(self.source), batch_size=None, sampler=keys, num_workers=self.workers,
            prefetch_factor=self.prefetch, pin_memory=self.pin_memory, worker_init_fn=_one_thread,
            # Its own generator: starting workers must not draw from the global RNG, which
            # the model's dropout uses (the weights would then depend on `workers`).
            generator=torch.Generator().manual_seed(epoch),
        )
        it = iter(loader)
        try:
            for item in it:
                if isinstance(item, str):
                    kind, _, message = item.partition(":")
                    raise getattr(errors, kind, errors.DataError)(message)
                yield item
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:  # a run stopped mid-epoch: don't wait for the GC
                shutdown()
