"""Dense layer, activations and losses: forward within 1e-6 and gradients within 1e-5 of autograd."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.textbook import activations as act
from ember.textbook.dense import dense_backward, dense_forward
from ember.textbook.losses import cross_entropy, cross_entropy_grad, mse, mse_grad
from tests.textbook.oracle import FORWARD_TOL, GRAD_TOL, close, leaf, rand

dims = st.integers(1, 6)
seeds = st.integers(0, 2**32 - 1)


@settings(settings.get_profile("textbook"))
@given(n=dims, d_in=dims, d_out=dims, seed=seeds)
def test_dense_matches_linear(n: int, d_in: int, d_out: int, seed: int) -> None:
    x, w, b, dy = rand(seed, n, d_in), rand(seed + 1, d_out, d_in), rand(seed + 2, d_out), rand(seed + 3, n, d_out)
    tx, tw, tb = leaf(x), leaf(w), leaf(b)
    ty = F.linear(tx, tw, tb)
    (ty * torch.from_numpy(dy)).sum().backward()
    close(dense_forward(x, w, b), ty, FORWARD_TOL)
    dx, dw, db = dense_backward(x, w, dy)
    close(dx, tx.grad, GRAD_TOL)
    close(dw, tw.grad, GRAD_TOL)
    close(db, tb.grad, GRAD_TOL)


ELEMENTWISE = [
    # (reference, reference backward, torch function, backward takes the output y, not x)
    (act.sigmoid, act.sigmoid_backward, torch.sigmoid, True),
    (act.tanh, act.tanh_backward, torch.tanh, True),
    (act.relu, act.relu_backward, torch.relu, False),
]


@settings(settings.get_profile("textbook"))
@given(shape=st.lists(dims, min_size=1, max_size=3), seed=seeds, scale=st.sampled_from([1.0, 10.0, 100.0]))
def test_elementwise_activations(shape: list[int], seed: int, scale: float) -> None:
    x, dy = rand(seed, *shape, scale=scale), rand(seed + 1, *shape)  # scale 100: σ saturates, no overflow
    for fn, backward, torch_fn, from_output in ELEMENTWISE:
        tx = leaf(x)
        ty = torch_fn(tx)
        (ty * torch.from_numpy(dy)).sum().backward()
        y = fn(x)
        close(y, ty, FORWARD_TOL)
        close(backward(y if from_output else x, dy), tx.grad, GRAD_TOL)


@settings(settings.get_profile("textbook"))
@given(shape=st.lists(dims, min_size=1, max_size=3), seed=seeds, scale=st.sampled_from([1.0, 30.0]))
def test_softmax_and_its_jacobian(shape: list[int], seed: int, scale: float) -> None:
    x, dy = rand(seed, *shape, scale=scale), rand(seed + 1, *shape)
    tx = leaf(x)
    ty = torch.softmax(tx, dim=-1)
    (ty * torch.from_numpy(dy)).sum().backward()
    y = act.softmax(x)
    close(y, ty, FORWARD_TOL)
    close(act.softmax_backward(y, dy), tx.grad, GRAD_TOL)


@settings(settings.get_profile("textbook"))
@given(n=dims, k=dims, seed=seeds)
def test_mse_and_gradient(n: int, k: int, seed: int) -> None:
    pred, target = rand(seed, n, k), rand(seed + 1, n, k)
    tp = leaf(pred)
    loss = F.mse_loss(tp, torch.from_numpy(target))
    loss.backward()
    close(mse(pred, target), loss, FORWARD_TOL)
    close(mse_grad(pred, target), tp.grad, GRAD_TOL)


@settings(settings.get_profile("textbook"))
@given(n=dims, k=st.integers(2, 8), seed=seeds, scale=st.sampled_from([1.0, 50.0]))
def test_cross_entropy_and_gradient(n: int, k: int, seed: int, scale: float) -> None:
    logits = rand(seed, n, k, scale=scale)
    labels = np.random.default_rng(seed + 1).integers(0, k, n)
    tz = leaf(logits)
    loss = F.cross_entropy(tz, torch.from_numpy(labels))
    loss.backward()
    close(cross_entropy(logits, labels), loss, FORWARD_TOL)
    close(cross_entropy_grad(logits, labels), tz.grad, GRAD_TOL)


def test_relu_derivative_at_zero_is_zero_as_in_torch() -> None:
    x = np.array([-1.0, 0.0, 2.0])
    tx = leaf(x)
    torch.relu(tx).sum().backward()
    close(act.relu_backward(x, np.ones(3)), tx.grad, 0.0)
