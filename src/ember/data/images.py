"""Image helpers shared by the image sources: normalisation, augmentation, file reading."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ember.data.bundle import Augment, DataInfo
from ember.data.config import AugmentConfig
from ember.data.randomness import uniform
from ember.errors import DataError

__all__ = ["channel_stats", "normalize", "denormalize", "display_png", "make_augment", "read_image",
           "decode_image", "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Pillow's own bomb threshold (about 9459 x 9459): larger images are refused before decoding.
MAX_IMAGE_PIXELS = 89_478_485


def decode_image(src: Any, mode: str, size: tuple[int, int] | None, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an image file (path or binary stream) to `mode`, resized to (width, height), in [0, 1].

    `size=None` keeps the image's own size.

    The size in the header is checked before any pixel is decoded, so a small file claiming a
    huge image (a decompression bomb) costs nothing.

    Raises:
        DataError: not an image, or over `max_pixels` pixels.
    """
    from PIL import Image, UnidentifiedImageError

    name = src if isinstance(src, (str, Path)) else "<upload>"
    try:
        with Image.open(src) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise DataError(f"image '{name}' is {width}x{height} = {width * height} pixels; "
                                f"the limit is {max_pixels}; resize it first")
            img = img.convert(mode)
            if size is not None:
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as exc:
        raise DataError(f"image '{name}' is too large ({exc}); resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image '{name}': {exc}; expected PNG or JPEG") from None


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a (N, C, H, W) tensor."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(mean.tolist()), tuple(std.tolist())


def normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def denormalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """The inverse of `normalize`, clamped to [0, 1]: a (N, C, H, W) model input as pixels again."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


def display_png(x: Tensor, info: DataInfo) -> str:
    """A (1, C, H, W) model input, de-normalised, as a base64 PNG at its own size (what the model sees)."""
    import base64
    import io

    from PIL import Image

    pixels = denormalize(x.detach().float().cpu(), info.mean, info.std)[0]  # (C, H, W)
    arr = (pixels * 255).round().to(torch.uint8).numpy()
    img = Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_augment(cfg: AugmentConfig, seed: int) -> Augment | None:
    """Random rotation/zoom, translation (edge pixels repeated) and horizontal flip, per sample."""
    if cfg.shift == 0 and not cfg.hflip and cfg.rotate == 0 and cfg.scale == 0:
        return None
    s = cfg.shift

    def augment(x: Tensor, indices: Tensor, epoch: int) -> Tensor:  # x: (B, C, H, W)
        b, _, h, w = x.shape
        if cfg.rotate > 0 or cfg.scale > 0:
            # One affine warp per sample; border padding repeats the background, which is
            # what the edge holds in digit-style images.
            angle = (uniform(seed, epoch, indices, 4) * 2 - 1) * math.radians(cfg.rotate)
            zoom = 1 + (uniform(seed, epoch, indices, 5) * 2 - 1) * cfg.scale
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                                 torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if s > 0:
            dy = (uniform(seed, epoch, indices, 1) * (2 * s + 1)).long()  # (B,) in [0, 2s]
            dx = (uniform(seed, epoch, indices, 2) * (2 * s + 1)).long()
            padded = F.pad(x, (s, s, s, s), mode="replicate")  # (B, C, H+2s, W+2s)
            rows = dy[:, None] + torch.arange(h)[None, :]  # (B, H)
            cols = dx[:, None] + torch.arange(w)[None, :]  # (B, W)
            batch = torch.arange(b)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B,H,W,C)
            x = x.permute(0, 3, 1, 2).contiguous()
        if cfg.hflip:
            flip = uniform(seed, epoch, indices, 3) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    return augment


def read_image(path: Any, info: DataInfo, max_pixels: int = MAX_IMAGE_PIXELS) -> Tensor:
    """Read a PNG/JPEG into the model's input format: (C, H, W), scaled and normalised.

    Digit-style data (one channel) expects bright ink on a dark background; a picture whose
    border is brighter than its centre (dark ink on paper) is inverted first.

    Raises:
        DataError: not an image, or over `max_pixels` pixels (see `decode_image`).
    """
    channels, height, width = info.input_shape
    mnist_like = channels == 1 and (height, width) == (28, 28) and info.extra.get("ink_on_dark", False)
    if mnist_like:  # crop, fit 20x20 and centre by mass, as the MNIST digits were made
        from ember.data.drawing import mnist_style

        gray = decode_image(path, "L", None, max_pixels)
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).mean()
        if border > gray.mean():
            gray = 1.0 - gray
        x = torch.from_numpy(mnist_style(gray))[None]
        return normalize(x[None], info.mean, info.std)[0]
    arr = decode_image(path, "L" if channels == 1 else "RGB", (width, height), max_pixels)
    if arr.ndim == 2:
        arr = arr[None]  # (1, H, W)
    else:
        arr = arr.transpose(2, 0, 1)  # (C, H, W)
    if channels == 1 and info.extra.get("ink_on_dark", False):
        border = np.concatenate([arr[0, 0], arr[0, -1], arr[0, :, 0], arr[0, :, -1]]).mean()
        if border > arr.mean():
            arr = 1.0 - arr
    x = torch.from_numpy(arr)  # every image source stores pixels in [0, 1] before normalising
    return normalize(x[None], info.mean, info.std)[0]
