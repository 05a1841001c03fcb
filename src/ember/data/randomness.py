"""Counter-based randomness: a value for each (seed, epoch, index, salt), independent of batch.

Because each sample's random draw depends only on its own coordinates, augmentation is the
same whatever the batch size, the world size or where a resumed run restarts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["uniform", "epoch_seed"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # Arrays of uint64 wrap on overflow, which is exactly what splitmix64 wants.
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        h = _splitmix64(h ^ np.uint64(p & 0xFFFFFFFFFFFFFFFF))
    return h[0]


def uniform(seed: int, epoch: int, index: Tensor, salt: int) -> Tensor:
    """Uniform floats in [0, 1), one per entry of `index`, a pure function of the arguments."""
    idx = index.detach().cpu().numpy().astype(np.uint64)
    z = _splitmix64(idx ^ _key(seed, epoch, salt))
    return torch.from_numpy(((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).astype(np.float32))


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for the shuffle of `epoch`."""
    return int(_key(seed, epoch, 0x5EED) >> np.uint64(1))
