"""One LSTM step (Hochreiter & Schmidhuber 1997), with `torch.nn.LSTM`'s weight layout.

    i = σ(W_ii x + b_ii + W_hi h + b_hi)      input gate
    f = σ(W_if x + b_if + W_hf h + b_hf)      forget gate
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)   candidate cell
    o = σ(W_io x + b_io + W_ho h + b_ho)      output gate
    c' = f ⊙ c + i ⊙ g                         h' = o ⊙ tanh(c')

The four gates' weights are stacked in the order i, f, g, o, as `weight_ih_l0`,
`weight_hh_l0`, `bias_ih_l0` and `bias_hh_l0` of `nn.LSTM` stack them.
"""

from __future__ import annotations

import numpy as np

from ember.textbook.activations import sigmoid

__all__ = ["lstm_cell_forward", "lstm_forward"]


def lstm_cell_forward(x: np.ndarray, h: np.ndarray, c: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray,
                      b_ih: np.ndarray, b_hh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the gate equations above.

    Args:
        x: (N, I) inputs; h, c: (N, H) hidden and cell state.
        w_ih: (4H, I); w_hh: (4H, H); b_ih, b_hh: (4H,), gates stacked i, f, g, o.
    Returns:
        h' and c', (N, H) each.
    """
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (N, 4H)
    i, f, g, o = np.split(gates, 4, axis=1)  # 4 x (N, H)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    c = f * c + i * g  # the cell keeps what f lets through and adds what i lets in
    h = o * np.tanh(c)
    return h, c


def lstm_forward(x: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray,
                 b_hh: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Run the cell over x (N, T, I) from zero state: outputs (N, T, H) and the last (h, c)."""
    n, hidden = x.shape[0], w_hh.shape[1]
    h = np.zeros((n, hidden), dtype=x.dtype)
    c = np.zeros((n, hidden), dtype=x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        h, c = lstm_cell_forward(x[:, t], h, c, w_ih, w_hh, b_ih, b_hh)
        outputs.append(h)
    return np.stack(outputs, axis=1), (h, c)
