"""Your own datasets as an Ember `DataBundle`: any map-style `torch.utils.data.Dataset`.

    bundle = ember.data_bundle(train_ds, val_ds, test_ds, task="classification")
    ember.train(model=net, data=bundle)          # or data=(train_ds, val_ds, test_ds)

Each item is `(input, target)`. Batches are gathered item by item and stacked (the loop
asks for a batch by indices, so data order, augmentation seeds and exact resume work as for
built-in sources). A Dataset with a `batch(indices, epoch, train)` method of its own is
used as it is. What the model is sized from (`DataInfo`: input shape, number of classes)
is read off the first item and the targets, or given explicitly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ember.data.bundle import DataBundle, DataInfo
from ember.errors import DataError

__all__ = ["ObjectDataset", "data_bundle", "refuse_rebuild"]

_TASKS = ("classification", "regression")


class _Column:
    """`dataset.x` / `dataset.y` without loading the whole split: `col[rows]` reads those rows."""

    def __init__(self, dataset: ObjectDataset, which: int) -> None:
        self.dataset, self.which = dataset, which

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Tensor:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        rows = torch.arange(len(self.dataset))[key]
        if rows.dim() == 0:
            return self.dataset.batch(rows.view(1))[self.which][0][rest]
        return self.dataset.batch(rows)[self.which][(slice(None), *rest)]


class ObjectDataset:
    """A map-style Dataset seen through Ember's batch-by-indices interface."""

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DataError(f"data: {type(dataset).__name__} is not a map-style Dataset "
                            "(it needs __len__ and __getitem__)")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def x(self) -> _Column:
        return _Column(self, 0)

    @property
    def y(self) -> _Column:
        return _Column(self, 1)

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> tuple[Tensor, Tensor]:
        """Inputs and targets at `indices`, stacked (item by item, in order)."""
        items = [self.dataset[int(i)] for i in indices]
        if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
            raise DataError("data: each item of your Dataset must be an (input, target) pair")
        return _stack([x for x, _ in items], "inputs"), _stack([y for _, y in items], "targets")

    def subset(self, indices: Tensor) -> ObjectDataset:
        return ObjectDataset(torch.utils.data.Subset(self.dataset, [int(i) for i in indices]))


def _stack(values: list[Any], what: str) -> Tensor:
    try:
        return torch.stack([torch.as_tensor(v) for v in values])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"data: your Dataset's {what} cannot be stacked into a batch ({exc})") from None


def _adapt(dataset: Any) -> Any:
    if dataset is None:
        return ObjectDataset([])
    return dataset if hasattr(dataset, "batch") else ObjectDataset(dataset)


def data_bundle(train: Any, val: Any = None, test: Any = None, task: str = "classification",
                num_classes: int | None = None, class_names: list[str] | None = None,
                input_kind: str | None = None) -> DataBundle:
    """A `DataBundle` from your own Datasets (val and test optional, but then nothing is scored).

    Args:
        train: a map-style Dataset of `(input, target)` items.
        val: the validation Dataset, same kind (optional).
        test: the test Dataset, same kind (optional).
        task: "classification" (integer class targets) or "regression" (float targets).
        num_classes: for classification; default: the largest train target + 1.
        class_names: names of the classes, in index order (sets `num_classes`).
        input_kind: "image" (C, H, W), "tabular" (a vector), "series" or "tokens"; default
            guessed from the first input's shape and dtype.

    Raises:
        DataError: an empty training set, items that are not pairs, an unknown task.
    """
    if task not in _TASKS:
        raise DataError(f"task: got {task!r}; valid: {', '.join(_TASKS)} (for other tasks, register a data "
                        "source that returns a DataBundle)")
    splits = [_adapt(train), _adapt(val), _adapt(test)]
    if len(splits[0]) == 0:
        raise DataError("data: the training set is empty")
    x0, y0 = splits[0].batch(torch.tensor([0]))
    kind = input_kind or _guess_kind(x0[0])
    if task == "classification":
        if class_names:
            num_classes = len(class_names)
        if num_classes is None:
            num_classes = int(splits[0].y[:].max()) + 1
        names = tuple(class_names or (str(i) for i in range(num_classes)))
        outputs = num_classes
    else:
        names, outputs = (), int(y0[0].numel())
    # Inputs are used as given (no normalisation): the identity, per channel or feature.
    width = int(x0.shape[1]) if kind in ("image", "tabular") else 0
    features = tuple(f"x{i}" for i in range(width)) if kind == "tabular" else ()
    info = DataInfo(task, kind, tuple(int(d) for d in x0.shape[1:]), outputs, names, features,
                    mean=(0.0,) * width, std=(1.0,) * width)
    return DataBundle(splits[0], splits[1], splits[2], info)


def _guess_kind(x: Tensor) -> str:
    if x.dim() == 3:
        return "image"
    if x.dim() == 2:
        return "series"
    return "tokens" if not x.is_floating_point() else "tabular"


def refuse_rebuild(cfg: Any, seed: int) -> DataBundle:
    """`data.name: object` names data that was passed as objects: it cannot be rebuilt from files."""
    raise DataError("this run's data was passed to ember.train as Dataset objects; pass them again "
                    "(data=...) to evaluate, predict from files, or resume it")
