"""LSTM cell, attention and positions against nn.LSTM, SDPA (with autograd) and Ember's own code."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ember.models.attention import attention_reference
from ember.models.transformer import sinusoidal_positions as ember_positions
from ember.textbook.attention import attention_backward, attention_forward
from ember.textbook.lstm import lstm_cell_forward, lstm_forward
from ember.textbook.positional import sinusoidal_positions
from tests.textbook.oracle import FORWARD_TOL, GRAD_TOL, close, leaf, rand

small = st.integers(1, 4)
seeds = st.integers(0, 2**32 - 1)


@settings(settings.get_profile("textbook"))
@given(n=small, t=small, i=small, h=small, seed=seeds)
def test_lstm_matches_nn_lstm(n: int, t: int, i: int, h: int, seed: int) -> None:
    torch.manual_seed(seed % 2**31)
    lstm = nn.LSTM(i, h, batch_first=True).double()
    w = {k: v.detach().numpy() for k, v in lstm.named_parameters()}
    args = (w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"], w["bias_hh_l0"])
    x = rand(seed, n, t, i)
    out, (h_t, c_t) = lstm(torch.from_numpy(x))
    ours, (our_h, our_c) = lstm_forward(x, *args)
    close(ours, out, FORWARD_TOL)
    close(our_h, h_t[0], FORWARD_TOL)
    close(our_c, c_t[0], FORWARD_TOL)
    # One step from a non-zero state: the gate order i, f, g, o is what makes this agree.
    h0, c0 = rand(seed + 1, n, h), rand(seed + 2, n, h)
    _, (h1, c1) = lstm(torch.from_numpy(x[:, :1]), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    step_h, step_c = lstm_cell_forward(x[:, 0], h0, c0, *args)
    close(step_h, h1[0], FORWARD_TOL)
    close(step_c, c1[0], FORWARD_TOL)


@settings(settings.get_profile("textbook"))
@given(b=st.integers(1, 2), heads=st.integers(1, 2), t=small, s=small, d=small, dv=small,
       causal=st.booleans(), seed=seeds)
def test_attention_matches_sdpa(b: int, heads: int, t: int, s: int, d: int, dv: int, causal: bool,
                                seed: int) -> None:
    q, k, v = rand(seed, b, heads, t, d), rand(seed + 1, b, heads, s, d), rand(seed + 2, b, heads, s, dv)
    d_out = rand(seed + 3, b, heads, t, dv)
    tq, tk, tv = leaf(q), leaf(k), leaf(v)
    ty = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    (ty * torch.from_numpy(d_out)).sum().backward()
    out, weights = attention_forward(q, k, v, causal=causal)
    close(out, ty, FORWARD_TOL)
    for ours, grad in zip(attention_backward(q, k, v, weights, d_out), (tq.grad, tk.grad, tv.grad), strict=True):
        close(ours, grad, GRAD_TOL)


@settings(settings.get_profile("textbook"))
@given(b=st.integers(1, 2), t=small, s=small, d=small, seed=seeds)
def test_attention_with_masks_matches_embers_reference(b: int, t: int, s: int, d: int, seed: int) -> None:
    # A random boolean mask, rows with nothing allowed included: zero output, zero gradients.
    q, k, v, d_out = rand(seed, b, 1, t, d), rand(seed + 1, b, 1, s, d), rand(seed + 2, b, 1, s, d), \
        rand(seed + 3, b, 1, t, d)
    mask = np.random.default_rng(seed + 4).random((b, 1, t, s)) < 0.6
    tq, tk, tv = leaf(q), leaf(k), leaf(v)
    ty, tw = attention_reference(tq, tk, tv, torch.from_numpy(mask))
    (ty * torch.from_numpy(d_out)).sum().backward()
    out, weights = attention_forward(q, k, v, mask=mask)
    close(out, ty, FORWARD_TOL)
    close(weights, tw, FORWARD_TOL)
    for ours, grad in zip(attention_backward(q, k, v, weights, d_out), (tq.grad, tk.grad, tv.grad), strict=True):
        close(ours, grad, GRAD_TOL)


def test_positions_follow_the_formula() -> None:
    pe = sinusoidal_positions(7, 6)
    for p in range(7):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert abs(pe[p, 2 * i] - math.sin(angle)) < 1e-12
            assert abs(pe[p, 2 * i + 1] - math.cos(angle)) < 1e-12


@settings(settings.get_profile("textbook"))
@given(length=st.integers(1, 64), dim=st.integers(1, 32))
def test_positions_equal_embers_own(length: int, dim: int) -> None:
    # Ember's encoding is float32: its angle p·ω carries a rounding of up to p·ω·2⁻²⁴, so the
    # tolerance grows with the position (≈ 4e-6 at position 64), beyond that 1e-6.
    tol = FORWARD_TOL + length * 2.0**-24
    close(sinusoidal_positions(length, dim), ember_positions(length, dim).double(), tol)
