"""Image augmentation on batches, every draw a function of (seed, epoch, sample index).

The pixel operations are kornia's (crop-and-resize, rotation, colour adjustments), given
per-sample parameters that Ember draws itself from counter-based randomness: kornia's own
random augmentations draw from the global RNG, which would tie the result to the batch's
composition, the worker and the world size. kornia is imported only when one of its
operations is configured.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ember.data.config import ImageAugmentConfig
from ember.data.randomness import uniform
from ember.errors import DataError

__all__ = ["PixelAugment", "MixAugment"]

# Salts 1-3 belong to `images.make_augment` (shift, hflip); these are disjoint from them.
_VFLIP, _ROT, _CROP_S, _CROP_R, _CROP_X, _CROP_Y = 10, 11, 12, 13, 14, 15
_BRIGHT, _CONTRAST, _SAT, _HUE = 16, 17, 18, 19
_PARTNER, _WHICH, _CUT_X, _CUT_Y, _LAM = 20, 21, 22, 23, 24


def _kornia():  # noqa: ANN202 - a module
    try:
        import kornia
    except ImportError:
        raise DataError("data.augment: crop_scale, rotate and colour jitter need kornia: "
                        "pip install 'ember[data]'") from None
    return kornia


class PixelAugment:
    """Random-resized crop, vertical flip, rotation and colour jitter on pixels in [0, 1].

    Args:
        cfg: the augmentation section.
        seed: the run's seed.
    """

    def __init__(self, cfg: ImageAugmentConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        if cfg.crop_scale or cfg.rotate or cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
            _kornia()  # imported here, once: forked workers inherit it instead of each importing it

    @staticmethod
    def wanted(cfg: ImageAugmentConfig) -> bool:
        return bool(cfg.crop_scale or cfg.vflip or cfg.rotate or cfg.brightness or cfg.contrast
                    or cfg.saturation or cfg.hue)

    def _u(self, epoch: int, idx: Tensor, salt: int) -> Tensor:
        return uniform(self.seed, epoch, idx, salt)

    def __call__(self, x: Tensor, idx: Tensor, epoch: int) -> Tensor:  # x: (B, C, H, W) in [0, 1]
        cfg = self.cfg
        b, c, h, w = x.shape
        if cfg.crop_scale is not None:
            kornia = _kornia()
            lo, hi = cfg.crop_scale
            area = lo + (hi - lo) * self._u(epoch, idx, _CROP_S)  # (B,)
            log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
            ratio = torch.exp(log_lo + (log_hi - log_lo) * self._u(epoch, idx, _CROP_R))
            cw = (torch.sqrt(area * ratio) * w).clamp(1, w)  # (B,) crop width in pixels
            ch = (torch.sqrt(area / ratio) * h).clamp(1, h)
            x0 = self._u(epoch, idx, _CROP_X) * (w - cw)
            y0 = self._u(epoch, idx, _CROP_Y) * (h - ch)
            x1, y1 = x0 + cw - 1, y0 + ch - 1
            boxes = torch.stack([torch.stack([x0, y0], -1), torch.stack([x1, y0], -1),
                                 torch.stack([x1, y1], -1), torch.stack([x0, y1], -1)], 1)  # (B, 4, 2)
            x = kornia.geometry.transform.crop_and_resize(x, boxes, (h, w))
        if cfg.vflip:
            flip = self._u(epoch, idx, _VFLIP) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-2), x)
        if cfg.rotate:
            angle = (2 * self._u(epoch, idx, _ROT) - 1) * cfg.rotate  # (B,) degrees
            x = _kornia().geometry.transform.rotate(x, angle)
        if cfg.brightness:
            x = _kornia().enhance.adjust_brightness(x, (2 * self._u(epoch, idx, _BRIGHT) - 1) * cfg.brightness)
        if cfg.contrast:
            x = _kornia().enhance.adjust_contrast(x, 1 + (2 * self._u(epoch, idx, _CONTRAST) - 1) * cfg.contrast)
        if c == 3 and cfg.saturation:
            x = _kornia().enhance.adjust_saturation(x, 1 + (2 * self._u(epoch, idx, _SAT) - 1) * cfg.saturation)
        if c == 3 and cfg.hue:
            shift = (2 * self._u(epoch, idx, _HUE) - 1) * cfg.hue * 2 * math.pi  # radians
            x = _kornia().enhance.adjust_hue(x, shift).clamp(0, 1)
        return x.contiguous()


def _beta(seed: int, epoch: int, idx: Tensor, alpha: Tensor) -> Tensor:
    """One Beta(a, a) draw per index (a from `alpha`), each from its own (seed, epoch, index)
    generator."""
    out = [np.random.default_rng([seed & 0xFFFFFFFF, epoch, i, _LAM]).beta(a, a)
           for i, a in zip(idx.tolist(), alpha.tolist(), strict=True)]
    return torch.tensor(out, dtype=torch.float32)


class MixAugment:
    """Mixup and cutmix: each sample blends with a partner picked from (seed, epoch, index).

    The partner is a sample of the whole split (read and augmented like any other), not a
    neighbour in the batch, so the result does not depend on how the step is cut into
    micro-batches. Targets become class probabilities (B, K).
    """

    def __init__(self, cfg: ImageAugmentConfig, seed: int, n: int, num_classes: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.n = n
        self.k = num_classes

    @staticmethod
    def wanted(cfg: ImageAugmentConfig) -> bool:
        return cfg.mixup > 0 or cfg.cutmix > 0

    def partners(self, idx: Tensor, epoch: int) -> Tensor:
        return (uniform(self.seed, epoch, idx, _PARTNER) * self.n).long().clamp_max(self.n - 1)

    def __call__(self, x: Tensor, y: Tensor, x2: Tensor, y2: Tensor, idx: Tensor,
                 epoch: int) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        b, _, h, w = x.shape
        use_cut = torch.zeros(b, dtype=torch.bool)
        if cfg.cutmix > 0 and cfg.mixup > 0:
            use_cut = uniform(self.seed, epoch, idx, _WHICH) < 0.5
        elif cfg.cutmix > 0:
            use_cut = torch.ones(b, dtype=torch.bool)
        alpha = torch.where(use_cut, cfg.cutmix, cfg.mixup)
        lam = _beta(self.seed, epoch, idx, alpha)  # (B,)
        # Cutmix: a box of area (1 - lam) at a random centre takes the partner's pixels.
        cut = torch.sqrt(1 - lam)
        cy = uniform(self.seed, epoch, idx, _CUT_Y) * h
        cx = uniform(self.seed, epoch, idx, _CUT_X) * w
        top = (cy - cut * h / 2).clamp(0, h).floor()
        bottom = (cy + cut * h / 2).clamp(0, h).floor()
        left = (cx - cut * w / 2).clamp(0, w).floor()
        right = (cx + cut * w / 2).clamp(0, w).floor()
        rows = torch.arange(h)[None, :, None]
        cols = torch.arange(w)[None, None, :]
        box = ((rows >= top[:, None, None]) & (rows < bottom[:, None, None])
               & (cols >= left[:, None, None]) & (cols < right[:, None, None]))  # (B, H, W)
        box_lam = 1 - ((bottom - top) * (right - left)) / (h * w)
        lam = torch.where(use_cut, box_lam, lam)
        mixed = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x2
        pasted = torch.where(box[:, None], x2, x)
        x = torch.where(use_cut[:, None, None, None], pasted, mixed)
        target = lam[:, None] * F.one_hot(y, self.k).float() + (1 - lam[:, None]) * F.one_hot(y2, self.k).float()
        return x, target
