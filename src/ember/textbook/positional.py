"""Sinusoidal positional encoding (Vaswani et al. 2017).

    PE[p, 2i] = sin(p / 10000^(2i/d))        PE[p, 2i+1] = cos(p / 10000^(2i/d))

Each pair of columns is a rotation at its own frequency, from one turn per 2π positions
down to one per 10000·2π, so a fixed offset between positions is a linear map of the codes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["sinusoidal_positions"]


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """PE for positions 0..length−1: (length, dim), float64 (an odd `dim` ends with a sine)."""
    pos = np.arange(length, dtype=np.float64)[:, None]  # (T, 1)
    freq = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-math.log(10000.0) / dim))  # (⌈d/2⌉,) = 10000^(-2i/d)
    pe = np.zeros((length, dim))
    pe[:, 0::2] = np.sin(pos * freq)  # (T, ⌈d/2⌉)
    pe[:, 1::2] = np.cos(pos * freq[: dim // 2])  # (T, ⌊d/2⌋)
    return pe
