"""Activation functions and their derivatives, as forward and backward passes.

Each `*_backward` takes the upstream gradient dy = ∂L/∂y and returns ∂L/∂x; elementwise
activations multiply it by f'(x), written in terms of the output y where that is cheaper
(σ' = σ(1 − σ), tanh' = 1 − tanh²), as textbooks do.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "relu", "relu_backward",
           "softmax", "softmax_backward"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1 / (1 + e⁻ˣ), any shape; computed without overflow for large |x|."""
    # e^-|x| never overflows; for x < 0, σ(x) = eˣ / (1 + eˣ) = z / (1 + z) with z = e^-|x|.
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def sigmoid_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """∂L/∂x = dy · σ'(x) = dy · y (1 − y), where y = σ(x); same shape as y."""
    return dy * y * (1.0 - y)


def tanh(x: np.ndarray) -> np.ndarray:
    """tanh(x) = (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ), any shape."""
    return np.tanh(x)


def tanh_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """∂L/∂x = dy · (1 − y²), where y = tanh(x); same shape as y."""
    return dy * (1.0 - y * y)


def relu(x: np.ndarray) -> np.ndarray:
    """ReLU(x) = max(0, x), any shape."""
    return np.maximum(x, 0.0)


def relu_backward(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """∂L/∂x = dy · 1[x > 0] (the derivative at 0 is taken as 0, as PyTorch does)."""
    return dy * (x > 0)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(x)ᵢ = e^(xᵢ − m) / Σⱼ e^(xⱼ − m) along `axis`, with m = maxⱼ xⱼ.

    Subtracting the maximum changes nothing mathematically and keeps e^(·) ≤ 1 (no overflow).
    """
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(y: np.ndarray, dy: np.ndarray, axis: int = -1) -> np.ndarray:
    """∂L/∂xᵢ = Σⱼ dyⱼ ∂yⱼ/∂xᵢ = yᵢ (dyᵢ − Σⱼ dyⱼ yⱼ), where y = softmax(x).

    That is the Jacobian ∂yⱼ/∂xᵢ = yⱼ (δᵢⱼ − yᵢ) applied to dy without forming it.
    """
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))
