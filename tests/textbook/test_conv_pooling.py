"""conv2d and pooling by im2col: forward within 1e-6, gradients within 1e-5 of autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ember.textbook.conv import conv2d_backward, conv2d_forward, out_size
from ember.textbook.pooling import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from tests.textbook.oracle import FORWARD_TOL, GRAD_TOL, close, leaf, rand

small = st.integers(1, 3)
seeds = st.integers(0, 2**32 - 1)


@settings(settings.get_profile("textbook"))
@given(n=small, c=small, f=small, h=st.integers(1, 7), w=st.integers(1, 7), kh=small, kw=small,
       stride=small, padding=st.integers(0, 2), bias=st.booleans(), seed=seeds)
def test_conv2d_matches_torch(n: int, c: int, f: int, h: int, w: int, kh: int, kw: int, stride: int,
                              padding: int, bias: bool, seed: int) -> None:
    assume(out_size(h, kh, stride, padding) >= 1 and out_size(w, kw, stride, padding) >= 1)
    x, wt, b = rand(seed, n, c, h, w), rand(seed + 1, f, c, kh, kw), rand(seed + 2, f)
    tx, tw, tb = leaf(x), leaf(wt), leaf(b)
    ty = F.conv2d(tx, tw, tb if bias else None, stride=stride, padding=padding)
    dy = rand(seed + 3, *ty.shape)
    (ty * torch.from_numpy(dy)).sum().backward()
    close(conv2d_forward(x, wt, b if bias else None, stride, padding), ty, FORWARD_TOL)
    dx, dw, db = conv2d_backward(x, wt, dy, stride, padding)
    close(dx, tx.grad, GRAD_TOL)
    close(dw, tw.grad, GRAD_TOL)
    if bias:
        close(db, tb.grad, GRAD_TOL)


@settings(settings.get_profile("textbook"))
@given(n=small, c=small, h=st.integers(1, 8), w=st.integers(1, 8), k=small,
       stride=st.one_of(st.none(), small), seed=seeds)
def test_pooling_matches_torch(n: int, c: int, h: int, w: int, k: int, stride: int | None, seed: int) -> None:
    s = stride or k
    assume(out_size(h, k, s, 0) >= 1 and out_size(w, k, s, 0) >= 1)
    x = rand(seed, n, c, h, w)  # continuous values: no ties for the maximum
    for kind in ("max", "avg"):
        tx = leaf(x)
        ty = (F.max_pool2d if kind == "max" else F.avg_pool2d)(tx, k, s)
        dy = rand(seed + 1, *ty.shape)
        (ty * torch.from_numpy(dy)).sum().backward()
        if kind == "max":
            y, arg = maxpool2d_forward(x, k, stride)
            dx = maxpool2d_backward(x.shape, arg, dy, k, stride)
        else:
            y = avgpool2d_forward(x, k, stride)
            dx = avgpool2d_backward(x.shape, dy, k, stride)
        close(y, ty, FORWARD_TOL)
        close(dx, tx.grad, GRAD_TOL)
