"""The user's image folder, read lazily: the file list in memory, each image decoded on demand.

Memory holds the paths and labels (a few dozen bytes per image) and the batches in flight,
whatever the number of images; decoding and augmentation run where the batch is built: in
the training process (`workers: 0`) or in the loader's worker processes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ember.data.augment import MixAugment, PixelAugment
from ember.data.bundle import DataBundle, DataInfo
from ember.data.class_folders import class_folders, empty_class_check
from ember.data.config import ImageFolderConfig
from ember.data.images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, make_augment, normalize
from ember.data.lazy import ItemDataset
from ember.data.splits import limit, split_indices
from ember.errors import DataError

__all__ = ["ImageFolderDataset", "load_image_folder", "scan_image_folder", "decode_image"]


def decode_image(path: str, size: tuple[int, int], grayscale: bool) -> np.ndarray:
    """One image file as uint8 (C, H, W), converted and resized (bilinear) to `size` (H, W)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if grayscale else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image '{path}' is too large ({exc}); resize it first") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image '{path}': {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def scan_image_folder(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, file paths, labels) of `root/<class>/**/<image>`, sorted.

    Raises:
        DataError: the folder is missing, has fewer than two classes, or holds no image.
    """
    if not root.is_dir():
        raise DataError(f"data.path: image folder '{root}' does not exist")
    classes = list(class_folders(root))
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        files += [str(f) for f in found]
        labels += [label] * len(found)
    if not files:
        raise DataError(f"data.path: no images ({', '.join(IMAGE_SUFFIXES)}) under '{root}'")
    empty_class_check(root, classes, labels, IMAGE_SUFFIXES, "images")
    for f in files:
        _check_header(f)
    return classes, files, np.asarray(labels, dtype=np.int64)


def _check_header(path: str) -> None:
    """Fail at start-up, not mid-training, on a file that is not an image or is too large to
    decode (a decompression bomb): only the header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise DataError(f"image '{path}' is too large ({exc}); resize it first") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image '{path}': {exc}") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"image '{path}' is {width}x{height} = {width * height} pixels; the limit is "
                        f"{MAX_IMAGE_PIXELS}; resize it first")


class ImageFolderDataset(ItemDataset):
    """Images read from their files per batch; pixels scaled to [0, 1], augmented, normalised.

    Args:
        files: every image path of the folder (all splits).
        labels: the class of each file.
        rows: which files this split holds.
        cfg: the source's config (size, colour, augmentation).
        seed: the run's seed (augmentation draws).
        mean, std: per-channel normalisation (empty: none).
        augmented: whether `train=True` batches are augmented (the training split).
    """

    def __init__(self, files: list[str], labels: Tensor, rows: Tensor, cfg: ImageFolderConfig, seed: int,
                 mean: tuple[float, ...] = (), std: tuple[float, ...] = (), augmented: bool = False) -> None:
        super().__init__(rows)
        # A numpy array of fixed-width bytes: one object for pickling to workers, not millions.
        self.files = np.asarray([f.encode() for f in files])
        self.labels = labels
        self.size = cfg.image_size
        self.grayscale = cfg.grayscale
        self.mean, self.std = mean, std
        aug = cfg.augment
        self.pixel = PixelAugment(aug, seed) if augmented and PixelAugment.wanted(aug) else None
        self.shift_flip = make_augment(aug, seed) if augmented else None
        self.mix = (MixAugment(aug, seed, len(rows), int(labels.max()) + 1)
                    if augmented and MixAugment.wanted(aug) else None)

    @property
    def y(self) -> Tensor:  # labels are small: held in memory, indexed like a tensor
        return self.labels[self.rows]

    def item_shape(self) -> tuple[int, ...]:
        return (1 if self.grayscale else 3, *self.size)

    def decode(self, rows: Tensor) -> Tensor:
        """Pixels in [0, 1] of the files at `rows`: (B, C, H, W) float32."""
        arrays = [decode_image(self.files[r].decode(), self.size, self.grayscale) for r in rows.tolist()]
        if not arrays:
            return torch.zeros(0, *self.item_shape())
        return torch.from_numpy(np.stack(arrays)).float().div_(255.0)

    def _pixels(self, rows: Tensor, epoch: int, train: bool, positions: Tensor) -> Tensor:
        x = self.decode(rows)
        if train and self.pixel is not None:
            x = self.pixel(x, positions, epoch)
        if self.mean:
            x = normalize(x, self.mean, self.std)
        if train and self.shift_flip is not None:
            x = self.shift_flip(x, positions, epoch)
        return x

    def _read(self, rows: Tensor, epoch: int, train: bool, positions: Tensor) -> tuple[Tensor, Tensor]:
        x = self._pixels(rows, epoch, train, positions)
        y = self.labels[rows]
        if train and self.mix is not None:
            partners = self.mix.partners(positions, epoch)
            x2 = self._pixels(self.rows[partners], epoch, train, partners)
            x, y = self.mix(x, y, x2, self.labels[self.rows[partners]], positions, epoch)
        return x, y


def _channel_stats(ds: ImageFolderDataset, count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel over `count` training images evenly spaced (float64 sums)."""
    n = len(ds)
    picks = torch.linspace(0, n - 1, min(count, n)).round().long().unique()
    total = sq = None
    pixels = 0
    for chunk in picks.split(256):
        x = ds.decode(ds.rows[chunk]).double()  # (B, C, H, W)
        s, s2 = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    assert total is not None and sq is not None
    mean = total / pixels
    var = (sq / pixels - mean * mean) * pixels / max(pixels - 1, 1)  # unbiased, as Tensor.std
    std = var.clamp_min(0).sqrt().clamp_min(1e-6)
    return tuple(mean.float().tolist()), tuple(std.float().tolist())


def load_image_folder(cfg: ImageFolderConfig, seed: int) -> DataBundle:
    """Images under `path/<class>/`, resized to `image_size`, stratified split from the seed."""
    classes, files, labels_np = scan_image_folder(cfg.path)
    labels = torch.from_numpy(labels_np)
    stratify = labels_np if np.bincount(labels_np).min() >= 3 else None
    tr, va, te = split_indices(len(files), cfg, seed, labels=stratify)
    tr = limit(tr, cfg)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    if cfg.normalize == "train":
        mean, std = _channel_stats(ImageFolderDataset(files, labels, tr, cfg, seed), cfg.stats_images)

    def split(rows: Tensor, augmented: bool = False) -> ImageFolderDataset:
        return ImageFolderDataset(files, labels, rows, cfg, seed, mean, std, augmented)

    channels = 1 if cfg.grayscale else 3
    info = DataInfo(
        task="classification", input_kind="image", input_shape=(channels, *cfg.image_size),
        num_outputs=len(classes), class_names=tuple(classes),
        mean=mean or (0.0,) * channels, std=std or (1.0,) * channels,
        extra={"source": f"image folder {cfg.path}", "images": len(files)},
    )
    return DataBundle(split(tr, augmented=True), split(va), split(te), info)
