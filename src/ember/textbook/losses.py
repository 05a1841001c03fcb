"""Loss functions and their gradients with respect to the predictions."""

from __future__ import annotations

import numpy as np

__all__ = ["mse", "mse_grad", "cross_entropy", "cross_entropy_grad", "log_softmax"]


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error L = (1/M) Σ (ŷ − y)², averaged over all M entries (torch's mean).

    Args:
        pred, target: the same shape, e.g. (N, out).
    """
    return float(np.mean((pred - target) ** 2))


def mse_grad(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """∂L/∂ŷ = 2 (ŷ − y) / M; same shape as pred."""
    return 2.0 * (pred - target) / pred.size


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax(z)ₖ = zₖ − m − log Σⱼ e^(zⱼ − m) over the last axis, m = maxⱼ zⱼ."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """L = −(1/N) Σₙ log softmax(zₙ)[yₙ]: the mean negative log-likelihood of the labels.

    Args:
        logits: (N, K) unnormalised scores.
        labels: (N,) integer classes in [0, K).
    """
    n = logits.shape[0]
    return float(-log_softmax(logits)[np.arange(n), labels].mean())


def cross_entropy_grad(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """∂L/∂z = (softmax(z) − onehot(y)) / N: (N, K), the famous "prediction minus target"."""
    n = logits.shape[0]
    grad = np.exp(log_softmax(logits))  # (N, K) probabilities
    grad[np.arange(n), labels] -= 1.0
    return grad / n
