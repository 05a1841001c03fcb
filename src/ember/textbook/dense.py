"""The dense (fully connected) layer and its backward pass: y = x Wᵀ + b.

The weight is laid out as `torch.nn.Linear` lays it out, (out, in), so a Linear layer's
`weight` and `bias` can be used here unchanged.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dense_forward", "dense_backward"]


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = x Wᵀ + b, i.e. yⱼ = Σᵢ Wⱼᵢ xᵢ + bⱼ for every row of x.

    Args:
        x: (N, in) inputs, one sample per row.
        w: (out, in) weights.
        b: (out,) biases.
    Returns:
        (N, out) pre-activations.
    """
    return x @ w.T + b  # (N, in) @ (in, out) + (out,) -> (N, out)


def dense_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The chain rule through y = x Wᵀ + b, given dy = ∂L/∂y.

        ∂L/∂x = dy W        ∂L/∂W = dyᵀ x        ∂L/∂b = Σₙ dyₙ

    Args:
        x: (N, in) the forward pass's inputs.
        w: (out, in) weights.
        dy: (N, out) gradient of the loss with respect to the outputs.
    Returns:
        dx (N, in), dw (out, in), db (out,).
    """
    dx = dy @ w  # (N, out) @ (out, in) -> (N, in)
    dw = dy.T @ x  # (out, N) @ (N, in) -> (out, in): summed over the batch
    db = dy.sum(axis=0)  # (out,)
    return dx, dw, db
