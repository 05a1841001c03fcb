"""ImageNet's evaluation preprocessing and normalisation, for the pretrained image backbones.

The published ImageNet accuracies of torchvision's weights are measured on images resized so
their shorter side is 256 pixels (bilinear), centre-cropped to 224x224, scaled to [0, 1] and
normalised with ImageNet's per-channel mean and std. `imagenet_eval` does the same with PIL
and NumPy, so a pretrained model scores what it was published to score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ember.data.images import MAX_IMAGE_PIXELS
from ember.errors import DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_LABELS", "imagenet_eval", "resize_shorter", "center_crop"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A few of the 1000 ImageNet-1k class names (index -> name), the ones the docs and tests name;
# the full list is not shipped.
IMAGENET_LABELS: dict[int, str] = {
    400: "academic gown",
    457: "bow tie",
    652: "military uniform",
    667: "mortarboard",
    834: "suit",
    906: "Windsor tie",
}


def resize_shorter(img: Any, size: int) -> Any:
    """A PIL image resized (bilinear) so its shorter side is `size`, keeping the aspect ratio."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # truncated, as torchvision's Resize
    new = (new_short, new_long) if w <= h else (new_long, new_short)
    return img if new == (w, h) else img.resize(new, Image.Resampling.BILINEAR)


def center_crop(img: Any, size: int) -> Any:
    """The central `size` x `size` of a PIL image at least that large."""
    w, h = img.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def imagenet_eval(src: Any, resize: int = 256, crop: int = 224) -> Tensor:
    """An image (path, binary stream or PIL image) as ImageNet evaluation input: (3, crop, crop).

    Grayscale and RGBA images are converted to RGB first.

    Raises:
        DataError: not an image, over `MAX_IMAGE_PIXELS`, or `crop` larger than `resize`.
    """
    from PIL import Image, UnidentifiedImageError

    if crop > resize:
        raise DataError(f"imagenet_eval: crop {crop} is larger than the resized shorter side {resize}")
    try:
        img = src if isinstance(src, Image.Image) else Image.open(src)
        w, h = img.size
        if w * h > MAX_IMAGE_PIXELS:
            raise DataError(f"image is {w}x{h} pixels; the limit is {MAX_IMAGE_PIXELS}; resize it first")
        rgb = center_crop(resize_shorter(img.convert("RGB"), resize), crop)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        name = src if isinstance(src, (str, Path)) else "<image>"
        raise DataError(f"cannot read image '{name}': {exc}; expected PNG or JPEG") from None
    x = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, crop, crop)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std
