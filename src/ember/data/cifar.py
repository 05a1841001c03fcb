"""CIFAR-10 from its binary batches (never the pickled ones), with verified download."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import Cifar10Config
from ember.data.download import download, sha256_file
from ember.data.images import channel_stats, make_augment, normalize
from ember.data.splits import carve_validation, subsample
from ember.errors import DataError

__all__ = ["read_cifar_batch", "load_cifar10", "URL", "SHA256"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
FOLDER = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_RECORD = 1 + 3 * 32 * 32  # label byte + CHW pixels


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one binary batch file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise DataError(f"'{path}' is not a CIFAR-10 binary batch ({raw.size} bytes, not a multiple of {_RECORD})")
    records = raw.reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"'{path}': label {labels.max()} out of range 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _extract(archive: Path, root: Path) -> None:
    """Extract only the regular files of `cifar-10-batches-bin/`, refusing anything else."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(f"{FOLDER}/")
                   and ".." not in Path(m.name).parts]
        tar.extractall(root, members=members, filter="data")


def _batch_paths(cfg: Cifar10Config) -> tuple[list[Path], Path]:
    folder = cfg.root / FOLDER
    train = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
    test = folder / "test_batch.bin"
    if all(p.is_file() for p in [*train, test]):
        return train, test
    if not cfg.download:
        missing = next(p for p in [*train, test] if not p.is_file())
        raise DataError(f"cifar10: missing '{missing}'; add data.download=true to fetch it, "
                        f"or extract cifar-10-binary.tar.gz into {cfg.root}")
    archive = download(URL, cfg.root / "cifar-10-binary.tar.gz", SHA256)
    _extract(archive, cfg.root)
    return train, test


def load_cifar10(cfg: Cifar10Config, seed: int) -> DataBundle:
    """50,000 train (validation carved out, stratified) and the official 10,000 test images."""
    train_paths, test_path = _batch_paths(cfg)
    parts = [read_cifar_batch(p) for p in train_paths]
    x_np = np.concatenate([p[0] for p in parts])
    y_np = np.concatenate([p[1] for p in parts])
    xt_np, yt_np = read_cifar_batch(test_path)
    tr, va = carve_validation(y_np, cfg.val_fraction, seed)
    tr = subsample(tr, cfg.limit, seed)
    x = torch.from_numpy(x_np.astype(np.float32) / 255.0)
    xt = torch.from_numpy(xt_np.astype(np.float32) / 255.0)
    mean, std = channel_stats(x[torch.from_numpy(tr)])
    x, xt = normalize(x, mean, std), normalize(xt, mean, std)
    y, yt = torch.from_numpy(y_np), torch.from_numpy(yt_np)
    info = DataInfo(
        task="classification", input_kind="image", input_shape=(3, 32, 32), num_outputs=10,
        class_names=CLASSES, mean=mean, std=std,
        extra={"source": "CIFAR-10 binary batches",
               "files": {p.name: sha256_file(p) for p in [*train_paths, test_path]}},
    )
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    return DataBundle(ArrayDataset(x[tr_t], y[tr_t], make_augment(cfg.augment, seed)),
                      ArrayDataset(x[va_t], y[va_t]), ArrayDataset(xt, yt), info)
