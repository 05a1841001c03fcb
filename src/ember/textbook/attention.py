"""Scaled dot-product attention (Vaswani et al. 2017), forward and backward.

    S = Q Kᵀ / √d        P = softmax(S) (over the keys)        O = P V

Backward, given dO = ∂L/∂O:

    dV = Pᵀ dO     dP = dO Vᵀ     dS = P ⊙ (dP − rowsum(dP ⊙ P))     dQ = dS K / √d     dK = dSᵀ Q / √d

Masks are boolean with True = "may attend", as in `ember.models.attention`; a query that
may attend to nothing gets zero weights and zero output (and zero gradients), never NaN.
"""

from __future__ import annotations

import math

import numpy as np

from ember.textbook.activations import softmax, softmax_backward

__all__ = ["attention_forward", "attention_backward"]


def _allowed(t: int, s: int, mask: np.ndarray | None, causal: bool) -> np.ndarray:
    allowed = np.ones((t, s), dtype=bool)  # (T, S)
    if causal:
        allowed = np.tril(allowed)  # query i sees keys j ≤ i
    return allowed if mask is None else allowed & mask  # broadcast to (..., T, S)


def attention_forward(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
                      causal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """O = softmax(Q Kᵀ / √d) V and the weights P.

    Args:
        q: (..., T, d) queries; k: (..., S, d) keys; v: (..., S, dv) values (leading axes
            are batch and heads, e.g. (B, H, T, d)).
        mask: boolean, True where attention is allowed, broadcastable to (..., T, S).
        causal: also forbid query i from attending to keys j > i.
    Returns:
        O (..., T, dv) and P (..., T, S).
    """
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])  # (..., T, S)
    allowed = _allowed(q.shape[-2], k.shape[-2], mask, causal)
    # The most negative finite number, not −∞: a row with nothing allowed stays finite.
    scores = np.where(allowed, scores, np.finfo(scores.dtype).min)
    weights = np.where(allowed, softmax(scores), 0.0)  # (..., T, S)
    return weights @ v, weights  # (..., T, dv), (..., T, S)


def attention_backward(q: np.ndarray, k: np.ndarray, v: np.ndarray, weights: np.ndarray,
                       d_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dQ, dK, dV from dO (..., T, dv) and the forward pass's weights P (..., T, S).

    Masked entries have P = 0, so the softmax's backward gives them dS = 0: no mask needed here.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    dv = np.swapaxes(weights, -1, -2) @ d_out  # (..., S, T) @ (..., T, dv) -> (..., S, dv)
    dp = d_out @ np.swapaxes(v, -1, -2)  # (..., T, dv) @ (..., dv, S) -> (..., T, S)
    ds = softmax_backward(weights, dp) * scale  # (..., T, S), through S = Q Kᵀ/√d
    dq = ds @ k  # (..., T, S) @ (..., S, d) -> (..., T, d)
    dk = np.swapaxes(ds, -1, -2) @ q  # (..., S, T) @ (..., T, d) -> (..., S, d)
    return dq, dk, dv
