"""Max and average pooling over k×k windows, forward and backward, by im2col.

    max:  y[n, c, i, j] = max_{u,v} x[n, c, s·i + u, s·j + v]
    avg:  y[n, c, i, j] = (1/k²) Σ_{u,v} x[n, c, s·i + u, s·j + v]

No padding (Ember's CNN pools without it). Each channel is pooled on its own, so the
images are viewed as N·C one-channel images and each window becomes a column.
Backward: max pooling routes each dy to the input that won its window; average pooling
spreads dy/k² over the window; `col2im` adds up what overlapping windows send.
"""

from __future__ import annotations

import numpy as np

from ember.textbook.conv import col2im, im2col, out_size

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


def _windows(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    n, c, h, w = x.shape
    return im2col(x.reshape(n * c, 1, h, w), k, k, stride)  # (N·C, k·k, OH·OW)


def _shape_out(x_shape: tuple[int, ...], k: int, stride: int) -> tuple[int, int, int, int]:
    n, c, h, w = x_shape
    return n, c, out_size(h, k, stride, 0), out_size(w, k, stride, 0)


def maxpool2d_forward(x: np.ndarray, k: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Max over each k×k window (stride defaults to k, as in `nn.MaxPool2d`).

    Args:
        x: (N, C, H, W).
    Returns:
        y (N, C, OH, OW) and the winner's index within each window (N·C, OH·OW), which the
        backward pass needs.
    """
    stride = stride or k
    cols = _windows(x, k, stride)  # (N·C, k·k, L)
    arg = cols.argmax(axis=1)  # (N·C, L): first maximum, as PyTorch
    y = np.take_along_axis(cols, arg[:, None], axis=1)[:, 0]  # (N·C, L)
    return y.reshape(_shape_out(x.shape, k, stride)), arg


def maxpool2d_backward(x_shape: tuple[int, int, int, int], arg: np.ndarray, dy: np.ndarray, k: int,
                       stride: int | None = None) -> np.ndarray:
    """∂L/∂x: each window's dy goes to its maximum, the other inputs get 0. Returns (N, C, H, W)."""
    stride = stride or k
    n, c, h, w = x_shape
    dcols = np.zeros((n * c, k * k, arg.shape[1]), dtype=dy.dtype)  # (N·C, k·k, L)
    np.put_along_axis(dcols, arg[:, None], dy.reshape(n * c, 1, -1), axis=1)
    return col2im(dcols, (n * c, 1, h, w), k, k, stride).reshape(x_shape)


def avgpool2d_forward(x: np.ndarray, k: int, stride: int | None = None) -> np.ndarray:
    """Mean over each k×k window: (N, C, H, W) -> (N, C, OH, OW)."""
    stride = stride or k
    return _windows(x, k, stride).mean(axis=1).reshape(_shape_out(x.shape, k, stride))


def avgpool2d_backward(x_shape: tuple[int, int, int, int], dy: np.ndarray, k: int,
                       stride: int | None = None) -> np.ndarray:
    """∂L/∂x: each window's dy, divided by k², to every input of the window. Returns (N, C, H, W)."""
    stride = stride or k
    n, c, h, w = x_shape
    dcols = np.repeat(dy.reshape(n * c, 1, -1) / (k * k), k * k, axis=1)  # (N·C, k·k, L)
    return col2im(dcols, (n * c, 1, h, w), k, k, stride).reshape(x_shape)
