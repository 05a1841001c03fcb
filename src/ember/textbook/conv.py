"""2-D convolution by im2col: every receptive field becomes a column, the convolution a matmul.

    y[n, f, i, j] = b[f] + Σ_c Σ_u Σ_v w[f, c, u, v] · x[n, c, s·i + u − p, s·j + v − p]

(a cross-correlation, as in every deep-learning library). `im2col` lays the receptive
fields out as columns, so the sum becomes W (F, C·kh·kw) @ cols (C·kh·kw, OH·OW); the
backward pass is two more matmuls and `col2im`, which adds each column back where it came
from (overlapping fields add up, which is the chain rule for a value read several times).
"""

from __future__ import annotations

import numpy as np

__all__ = ["im2col", "col2im", "conv2d_forward", "conv2d_backward", "out_size"]


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length along one axis: ⌊(size + 2p − k) / s⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Receptive fields as columns.

    Args:
        x: (N, C, H, W) images.
        kh, kw: kernel height and width; stride, padding: as in `torch.nn.Conv2d` (zero padding).
    Returns:
        (N, C·kh·kw, OH·OW): column l holds the field of output position l, ordered (c, u, v)
        as a conv weight (F, C, kh, kw) flattens.
    """
    n, c, h, w = x.shape
    oh, ow = out_size(h, kh, stride, padding), out_size(w, kw, stride, padding)
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))  # (N, C, H+2p, W+2p)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for u in range(kh):  # one strided slice per kernel offset: kh·kw slices, not OH·OW
        for v in range(kw):
            cols[:, :, u, v] = xp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int = 1,
           padding: int = 0) -> np.ndarray:
    """The adjoint of `im2col`: add every column's entries back onto the image they came from.

    Args:
        cols: (N, C·kh·kw, OH·OW), e.g. the gradient with respect to `im2col(x)`.
        shape: (N, C, H, W) of the original images.
    Returns:
        (N, C, H, W).
    """
    n, c, h, w = shape
    oh, ow = out_size(h, kh, stride, padding), out_size(w, kw, stride, padding)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            xp[:, :, u:u + stride * oh:stride, v:v + stride * ow:stride] += cols[:, :, u, v]
    return xp[:, :, padding:padding + h, padding:padding + w]


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1,
                   padding: int = 0) -> np.ndarray:
    """y = W ⋆ x + b as one matmul over `im2col(x)`.

    Args:
        x: (N, C, H, W); w: (F, C, kh, kw), laid out like `nn.Conv2d.weight`; b: (F,) or None.
    Returns:
        (N, F, OH, OW).
    """
    n, _, h, wd = x.shape
    f, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride, padding)  # (N, C·kh·kw, L)
    y = w.reshape(f, -1) @ cols  # (F, C·kh·kw) @ (N, C·kh·kw, L) -> (N, F, L)
    if b is not None:
        y = y + b[:, None]
    return y.reshape(n, f, out_size(h, kh, stride, padding), out_size(wd, kw, stride, padding))


def conv2d_backward(x: np.ndarray, w: np.ndarray, dy: np.ndarray, stride: int = 1,
                    padding: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of y = W ⋆ x + b given dy = ∂L/∂y (N, F, OH, OW).

        ∂L/∂W = Σₙ dyₙ colsₙᵀ      ∂L/∂b = Σ_{n,i,j} dy      ∂L/∂x = col2im(Wᵀ dy)

    Returns:
        dx (N, C, H, W), dw (F, C, kh, kw), db (F,).
    """
    n, f = dy.shape[:2]
    kh, kw = w.shape[2:]
    cols = im2col(x, kh, kw, stride, padding)  # (N, C·kh·kw, L)
    dy_flat = dy.reshape(n, f, -1)  # (N, F, L)
    dw = np.einsum("nfl,nkl->fk", dy_flat, cols).reshape(w.shape)  # summed over samples and positions
    db = dy.sum(axis=(0, 2, 3))  # (F,)
    dcols = w.reshape(f, -1).T @ dy_flat  # (C·kh·kw, F) @ (N, F, L) -> (N, C·kh·kw, L)
    dx = col2im(dcols, x.shape, kh, kw, stride, padding)
    return dx, dw, db
