"""Turn a drawing into an MNIST-style digit, the way the MNIST images were made.

MNIST digits were cropped to the ink, scaled so the longer side fits a 20x20 box (aspect
ratio kept, anti-aliased), and placed in a 28x28 field with their centre of mass at the
centre. A digit drawn in a browser canvas is large, off-centre and thick; without the same
treatment a model trained on MNIST reads it poorly.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mnist_style"]

_FIELD, _BOX = 28, 20


def mnist_style(gray: np.ndarray, field: int = _FIELD, box: int = _BOX, ink: float = 0.1) -> np.ndarray:
    """A (H, W) float image in [0, 1], bright ink on dark, -> (field, field) MNIST-style digit.

    Pixels above `ink` count as ink for the bounding box. A blank image comes back blank.
    """
    from PIL import Image

    arr = np.clip(np.asarray(gray, dtype=np.float32), 0.0, 1.0)
    out = np.zeros((field, field), dtype=np.float32)
    rows, cols = np.nonzero(arr > ink)
    if rows.size == 0:
        return out
    crop = arr[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray((crop * 255).astype(np.uint8)).resize((new_w, new_h), Image.Resampling.LANCZOS)
    small = np.asarray(img, dtype=np.float32) / 255.0
    top, left = (field - new_h) // 2, (field - new_w) // 2
    out[top:top + new_h, left:left + new_w] = small
    mass = out.sum()
    if mass <= 0:
        return out
    ys, xs = np.indices(out.shape)
    # Shift by whole pixels so the centre of mass lands on the middle of the field.
    dy = round((field - 1) / 2 - float((ys * out).sum() / mass))
    dx = round((field - 1) / 2 - float((xs * out).sum() / mass))
    return _shift(out, dy, dx)


def _shift(arr: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the content by (dy, dx) pixels, filling with zeros (no wrap-around)."""
    out = np.zeros_like(arr)
    h, w = arr.shape
    src_y, dst_y = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    src_x, dst_x = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[dst_y, dst_x] = arr[src_y, src_x]
    return out
