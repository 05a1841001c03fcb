"""Update rules: gradient descent, SGD with momentum, Adam and AdamW, as torch.optim does them.

Each optimizer holds a list of parameter arrays and updates them in place from a list of
gradients of the same shapes, one `step(grads)` per optimizer step. The conventions are
torch.optim's exactly (momentum's first buffer is the gradient itself, no dampening;
Adam's ε is added after the bias-corrected square root), so trajectories can be compared
number for number.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gd_step", "SGD", "Adam"]


def gd_step(params: list[np.ndarray], grads: list[np.ndarray], lr: float) -> None:
    """Plain gradient descent, in place: w ← w − η ∂L/∂w."""
    for p, g in zip(params, grads, strict=True):
        p -= lr * g


class SGD:
    """Stochastic gradient descent with momentum (torch.optim.SGD, dampening 0).

        g ← ∂L/∂w + λ w                      (L2 weight decay λ)
        b ← g at the first step, else μ b + g  (the momentum buffer)
        d ← g + μ b if Nesterov, else b
        w ← w − η d
    """

    def __init__(self, params: list[np.ndarray], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        self.params = params
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buffers: list[np.ndarray | None] = [None] * len(params)

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update to every parameter, in place, from `grads` (same shapes)."""
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                buf = self.buffers[i]
                buf = g.copy() if buf is None else self.momentum * buf + g
                self.buffers[i] = buf
                g = g + self.momentum * buf if self.nesterov else buf
            p -= self.lr * g


class Adam:
    """Adam (Kingma & Ba 2015) with bias correction; `decoupled=True` is AdamW.

        g ← ∂L/∂w + λ w            (Adam's L2 decay; AdamW instead: w ← w (1 − η λ))
        m ← β₁ m + (1 − β₁) g       v ← β₂ v + (1 − β₂) g²          (m, v start at 0)
        m̂ = m / (1 − β₁ᵗ)           v̂ = v / (1 − β₂ᵗ)               (t = 1, 2, ...)
        w ← w − η m̂ / (√v̂ + ε)

    The bias correction undoes the pull towards 0 of averages that start at 0.
    """

    def __init__(self, params: list[np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False) -> None:
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        """Apply one update to every parameter, in place, from `grads` (same shapes)."""
        self.t += 1
        b1, b2 = self.betas
        correction1 = 1.0 - b1**self.t
        correction2 = 1.0 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            if self.weight_decay and self.decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * p
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            p -= (self.lr / correction1) * m / (np.sqrt(v) / np.sqrt(correction2) + self.eps)
