"""Datasets that keep an index in memory and read each item from disk when it is asked for.

They offer what `ArrayDataset` offers (`len`, `batch`, `subset`, `x`, `y`), so the loop,
evaluation and the tools take them unchanged: `x` is a view that reads the rows it is indexed
with (`ds.x[:8]`, `ds.x[idx]`), and `y` is held in memory when it is small (labels), or is a
view too (a language model's next tokens).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["ItemDataset", "LazyRows", "as_index"]


def as_index(key: Any, n: int) -> Tensor:
    """The row indices an int, slice, list or tensor key selects from `n` rows."""
    if isinstance(key, slice):
        return torch.arange(n)[key]
    if isinstance(key, int):
        if not -n <= key < n:
            raise IndexError(f"index {key} is out of range for {n} rows")
        return torch.tensor([key % n])
    idx = torch.as_tensor(key)
    if idx.dtype == torch.bool:
        return idx.nonzero().flatten()
    return idx.long().flatten() % max(n, 1)


class LazyRows:
    """Rows produced by `read(indices) -> Tensor` when indexed, like a tensor's first axis."""

    def __init__(self, read: Any, n: int, row_shape: tuple[int, ...]) -> None:
        self._read = read
        self._n = n
        self.row_shape = row_shape

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._n, *self.row_shape))

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # torch.equal(rows, t), torch.cat([rows, ...]): read the rows, then call through.
        def whole(a: Any) -> Any:
            if isinstance(a, LazyRows):
                return a[:]
            if isinstance(a, list | tuple):
                return type(a)(whole(v) for v in a)
            return a

        return func(*whole(tuple(args)), **{k: whole(v) for k, v in (kwargs or {}).items()})

    def __getattr__(self, name: str) -> Any:
        # Any other tensor method (max, float, numpy...) reads every row: fine for the small
        # splits tools inspect whole, and the reason the loop and evaluation never call one.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self[:], name)

    @property
    def dtype(self) -> torch.dtype:
        return self._read(torch.zeros(1, dtype=torch.long)).dtype if self._n else torch.float32

    def __getitem__(self, key: Any) -> Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        rows = self._read(as_index(key, self._n))
        if isinstance(key, int):
            rows = rows[0]
        return rows[(slice(None), *rest)] if rest and not isinstance(key, int) else (
            rows[rest] if rest else rows)


class ItemDataset:
    """Base of the lazy datasets: `indices` into a source, `read(indices, epoch, train)` per batch.

    Subclasses implement `_read(rows, epoch, train, positions)`, where `rows` are indices into
    the whole source and `positions` the indices within this split: randomness is drawn from the
    positions, as `ArrayDataset`'s augmentations do.
    """

    def __init__(self, rows: Tensor) -> None:
        self.rows = rows.long()

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, rows: Tensor, epoch: int, train: bool, positions: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> tuple[Tensor, Tensor]:
        """Inputs and targets at `indices` (positions in this split), augmented when `train`."""
        return self._read(self.rows[indices], epoch, train, indices)

    def subset(self, indices: Tensor) -> ItemDataset:
        """The same source restricted to `indices` (positions in this split)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.rows = self.rows[indices]
        return clone

    @property
    def x(self) -> LazyRows:
        return LazyRows(lambda idx: self.batch(idx)[0], len(self), self.item_shape())

    @property
    def y(self) -> Tensor | LazyRows:
        return LazyRows(lambda idx: self.batch(idx)[1], len(self), ())

    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.batch(torch.zeros(1, dtype=torch.long))[0].shape[1:]) if len(self) else ()
