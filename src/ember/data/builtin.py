"""Sources bundled with the installed packages: no files, no download."""

from __future__ import annotations

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import DigitsConfig, TabularConfig, XorConfig
from ember.data.images import channel_stats, make_augment, normalize
from ember.data.splits import limit, split_indices

__all__ = ["load_digits", "load_xor", "load_tabular"]


def load_digits(cfg: DigitsConfig, seed: int) -> DataBundle:
    """1,797 8x8 digit images (pixel values 0..16), stratified split, per-channel normalised."""
    from sklearn.datasets import load_digits as sk_digits

    raw = sk_digits()
    images, target = raw.images, raw.target
    digits = list(cfg.classes) if cfg.classes is not None else list(range(10))
    if cfg.classes is not None:  # a subset of the digits, relabelled 0..k-1 in the given order
        keep = np.isin(target, digits)
        images, target = images[keep], np.array([digits.index(t) for t in target[keep]])
    x = torch.from_numpy(images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = torch.from_numpy(target.astype(np.int64))
    tr, va, te = split_indices(len(x), cfg, seed, labels=target)
    if cfg.per_class is not None:  # the first per_class of each class in the seeded split order
        tr = torch.cat([tr[y[tr] == c][: cfg.per_class] for c in range(len(digits))]).sort().values
    tr = limit(tr, cfg)
    mean, std = channel_stats(x[tr])
    x = normalize(x, mean, std)
    info = DataInfo(
        task="classification",
        input_kind="image",
        input_shape=(1, 8, 8),
        num_outputs=len(digits),
        class_names=tuple(str(d) for d in digits),
        mean=mean,
        std=std,
        extra={"source": "sklearn.datasets.load_digits", "ink_on_dark": True},
    )
    aug = make_augment(cfg.augment, seed)
    return DataBundle(
        ArrayDataset(x[tr], y[tr], aug), ArrayDataset(x[va], y[va]), ArrayDataset(x[te], y[te]), info
    )


def load_xor(cfg: XorConfig, seed: int) -> DataBundle:
    """XOR: inputs {0,1}^2, target a XOR b as a float (a regression target for MSE)."""
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    table = ArrayDataset(x, y)
    info = DataInfo(
        task="regression",
        input_kind="tabular",
        input_shape=(2,),
        num_outputs=1,
        feature_names=("a", "b"),
        mean=(0.0, 0.0),
        std=(1.0, 1.0),
        extra={"source": "xor truth table", "targets": ["a_xor_b"]},
    )
    return DataBundle(table, table, table, info)


def load_tabular(cfg: TabularConfig, seed: int) -> DataBundle:
    """iris / wine / breast_cancer, stratified split, standardised with train statistics."""
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }[cfg.name]
    raw = loader()
    x = torch.from_numpy(raw.data.astype(np.float32))
    y = torch.from_numpy(raw.target.astype(np.int64))
    tr, va, te = split_indices(len(x), cfg, seed, labels=raw.target)
    tr = limit(tr, cfg)
    mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    info = DataInfo(
        task="classification",
        input_kind="tabular",
        input_shape=(x.shape[1],),
        num_outputs=len(raw.target_names),
        class_names=tuple(str(c) for c in raw.target_names),
        feature_names=tuple(str(f) for f in raw.feature_names),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        extra={"source": f"sklearn.datasets.load_{cfg.name}"},
    )
    return DataBundle(
        ArrayDataset(x[tr], y[tr]), ArrayDataset(x[va], y[va]), ArrayDataset(x[te], y[te]), info
    )
