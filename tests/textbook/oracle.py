"""Oracle helpers: float64 tensors, an absolute-tolerance check and the hypothesis profile."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import settings

# Few examples per property (shapes are tiny; each example is milliseconds): the point is
# many different shapes across runs, not many per run. Derandomized so CI is reproducible.
settings.register_profile("textbook", max_examples=12, deadline=None, derandomize=True,
                          database=None)

FORWARD_TOL = 1e-6  # every forward pass within this of PyTorch (float64)
GRAD_TOL = 1e-5  # every gradient within this of autograd (float64)


def rand(seed: int, *shape: int, scale: float = 1.0) -> np.ndarray:
    """A float64 standard-normal array from a seed (the seed is itself drawn by hypothesis)."""
    return np.random.default_rng(seed).standard_normal(shape) * scale


def leaf(a: np.ndarray) -> torch.Tensor:
    """A float64 tensor that records gradients."""
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def close(ours: np.ndarray | float, theirs: torch.Tensor | float, tol: float) -> None:
    """Assert |ours − theirs| ≤ tol everywhere (an absolute tolerance, as the issue states it)."""
    t = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    o = np.asarray(ours)
    assert o.shape == t.shape, f"shape {o.shape} != {t.shape}"
    err = float(np.abs(o - t).max()) if o.size else 0.0
    assert err <= tol, f"max |difference| {err:.3e} > {tol:g}"
