"""What every data source returns: three in-memory splits and a description of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ember.data.lazy import ItemDataset
from ember.errors import DataError

__all__ = ["DataInfo", "ArrayDataset", "DataBundle", "Augment"]

# (x, indices, epoch) -> x: applied to a training batch; randomness from (seed, epoch, index).
Augment = Callable[[Tensor, Tensor, int], Tensor]


@dataclass(frozen=True)
class DataInfo:
    """What a model and a task need to know about the data, saved into every run.

    Attributes:
        task: "classification" or "regression" (later families add their own).
        input_kind: "image" or "tabular": how `predict` reads a user's file.
        input_shape: one sample's shape, e.g. (1, 8, 8) or (4,).
        num_outputs: classes for classification, targets for regression.
        class_names: a label per class (classification only).
        feature_names: column names for tabular inputs.
        mean, std: the normalisation already applied to the inputs (per channel or feature).
        extra: source-specific facts (file hashes, sizes) recorded in the run.
    """

    task: str
    input_kind: str
    input_shape: tuple[int, ...]
    num_outputs: int
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataInfo:
        tuples = ("input_shape", "class_names", "feature_names", "mean", "std")
        values = {k: (tuple(v) if k in tuples else v) for k, v in raw.items()}
        return cls(**values)


class ArrayDataset:
    """Inputs and targets held as tensors; batches are gathered by index, not one at a time.

    Gathering a whole batch with one indexing op is what keeps the loop's overhead near a
    hand-written one; a per-sample `__getitem__` + collate would not.
    """

    def __init__(self, x: Tensor, y: Tensor, augment: Augment | None = None) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs ({len(x)}) and targets ({len(y)}) differ in length")
        self.x = x
        self.y = y
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> tuple[Tensor, Tensor]:
        """Return inputs and targets at `indices`, augmented when `train` is set."""
        x = self.x[indices]
        if train and self.augment is not None:
            x = self.augment(x, indices, epoch)
        return x, self.y[indices]

    def subset(self, indices: Tensor) -> ArrayDataset:
        return ArrayDataset(self.x[indices], self.y[indices], self.augment)


# A split: tensors in memory, or a lazy dataset reading items from disk (same methods).
Split = ArrayDataset | ItemDataset


@dataclass
class DataBundle:
    """Train, validation and test splits plus the `DataInfo` describing them."""

    train: Split
    val: Split
    test: Split
    info: DataInfo
    tokenizer: Any = None  # text sources: saved into the run as tokenizer.json
    texts: dict[str, list[str]] | None = None  # text classification: each split's raw texts (baselines)
    chat_template: str | None = None  # conversations: saved into the run as chat_template.jinja

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split '{name}'; valid: train, val, test")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def as_float(x: Any) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float32)
