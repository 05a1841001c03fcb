"""The first chapter's network: a 2-4-1 tanh MLP learns XOR by hand-written backpropagation.

    h = tanh(x W₁ᵀ + b₁)        ŷ = h W₂ᵀ + b₂        L = (1/4) Σ (ŷ − y)²

trained full-batch on the four rows of the truth table with SGD and momentum. The
architecture, loss and update are those of Ember's `xor-mlp` recipe (a linear output and
mean squared error, as `ember.tasks.Regression` scores it), so that `ember textbook xor`
can train both from the same start and compare them weight for weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ember.errors import NonFiniteLossError
from ember.textbook.activations import tanh, tanh_backward
from ember.textbook.dense import dense_backward, dense_forward
from ember.textbook.losses import mse, mse_grad
from ember.textbook.optim import SGD

__all__ = ["XOR_X", "XOR_Y", "PARAM_NAMES", "XorHistory", "init_xor", "xor_forward", "xor_gradients",
           "train_xor"]

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2) the truth table's inputs
XOR_Y = np.array([[0.0], [1.0], [1.0], [0.0]])  # (4, 1) a XOR b
PARAM_NAMES = ("w1", "b1", "w2", "b2")  # (4, 2), (4,), (1, 4), (1,)

Params = dict[str, np.ndarray]


@dataclass
class XorHistory:
    """What training recorded: the loss before each step and the weights after some steps."""

    losses: list[float] = field(default_factory=list)  # losses[t]: the loss step t + 1 descended
    snapshots: dict[int, Params] = field(default_factory=dict)  # step -> copies of the weights


def init_xor(seed: int = 0, hidden: int = 4) -> Params:
    """PyTorch's default Linear initialisation, U(−1/√fan_in, 1/√fan_in), from a NumPy generator."""
    rng = np.random.default_rng(seed)
    b1, b2 = 1 / math.sqrt(2), 1 / math.sqrt(hidden)
    return {"w1": rng.uniform(-b1, b1, (hidden, 2)), "b1": rng.uniform(-b1, b1, hidden),
            "w2": rng.uniform(-b2, b2, (1, hidden)), "b2": rng.uniform(-b2, b2, 1)}


def xor_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ŷ (N, 1) and the hidden activations h (N, H) that backpropagation needs."""
    h = tanh(dense_forward(x, p["w1"], p["b1"]))  # (N, H)
    return dense_forward(h, p["w2"], p["b2"]), h  # (N, 1), (N, H)


def xor_gradients(p: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """The loss and ∂L/∂θ for every parameter, by the chain rule from the output back."""
    out, h = xor_forward(p, x)
    d_out = mse_grad(out, y)  # (N, 1)
    d_h, dw2, db2 = dense_backward(h, p["w2"], d_out)  # through the output layer
    d_pre = tanh_backward(h, d_h)  # through tanh: × (1 − h²)
    _, dw1, db1 = dense_backward(x, p["w1"], d_pre)  # through the hidden layer
    return mse(out, y), {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}


def train_xor(p: Params, steps: int, lr: float = 0.5, momentum: float = 0.9, snapshot_every: int = 0,
              log: Callable[[int, float], None] | None = None) -> XorHistory:
    """Train `p` in place for `steps` full-batch steps of SGD with momentum.

    Args:
        p: the weights (see `PARAM_NAMES`), float64 arrays, updated in place.
        snapshot_every: keep a copy of the weights every this many steps (0: none).
        log: called as log(step, loss) after each step, for printing.
    Returns:
        The losses and the snapshots.
    Raises:
        NonFiniteLossError: the loss overflowed (some starts diverge at lr 0.5, momentum 0.9).
    """
    opt = SGD([p[k] for k in PARAM_NAMES], lr=lr, momentum=momentum)
    history = XorHistory()
    for step in range(1, steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below, in one line
            loss, grads = xor_gradients(p, XOR_X, XOR_Y)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"non-finite loss ({loss}) at step {step}: this start diverges at "
                                     f"lr {lr} and momentum {momentum}; try another seed")
        opt.step([grads[k] for k in PARAM_NAMES])
        history.losses.append(loss)
        if snapshot_every and step % snapshot_every == 0:
            history.snapshots[step] = {k: v.copy() for k, v in p.items()}
        if log is not None:
            log(step, loss)
    return history
