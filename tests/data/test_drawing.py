"""mnist_style: a drawing becomes a 28x28 digit fitting 20x20, centred by centre of mass."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ember.data.drawing import mnist_style


def _stroke_image() -> np.ndarray:
    img = Image.new("L", (280, 280), 0)
    draw = ImageDraw.Draw(img)
    draw.line([(40, 30), (200, 30), (120, 250)], fill=255, width=22)  # a 7, off-centre and large
    return np.asarray(img, dtype=np.float32) / 255.0


def test_mnist_style_crops_scales_and_centres() -> None:
    out = mnist_style(_stroke_image())
    assert out.shape == (28, 28)
    rows, cols = np.nonzero(out > 0.1)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20
    ys, xs = np.indices(out.shape)
    cy, cx = (ys * out).sum() / out.sum(), (xs * out).sum() / out.sum()
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_mnist_style_blank_stays_blank() -> None:
    assert not mnist_style(np.zeros((50, 40), dtype=np.float32)).any()
