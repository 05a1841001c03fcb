"""Multi-head self-attention (Vaswani et al. 2017), written out and via the fused kernel.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

`attention_reference` spells that out and returns the weights too; it is the version to
read, the one attention maps come from, and it is tested equal to
`F.scaled_dot_product_attention` (forward and gradients), which is what training uses.

Masks are boolean with True = "may attend". A query row that may attend to nothing (a
sequence made only of padding) gets zero output and zero weights, never NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ember.errors import ConfigError

__all__ = ["attention_reference", "MultiHeadSelfAttention", "has_attention", "record_attention"]


def attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                        causal: bool = False, dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention and its weights.

    Args:
        q: (B, H, T, d) queries; k, v: (B, H, S, d) keys and values.
        mask: boolean, True where attention is allowed, broadcastable to (B, H, T, S).
        causal: also forbid query i from attending to keys j > i (top-left aligned, as SDPA).
        dropout_p: dropout on the weights before they mix the values (pass 0 in eval).
    Returns:
        output (B, H, T, d) and weights (B, H, T, S), the latter before dropout; a query row
        with nothing allowed gets zero weights and zero output.
    """
    t, s = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    allowed = torch.ones(t, s, dtype=torch.bool, device=q.device)  # (T, S)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask  # (B, H, T, S) by broadcasting
    # The most negative finite value rather than -inf: exp() of it is exactly 0 next to any
    # real score, and a row with nothing allowed becomes uniform instead of NaN (0/0); the
    # masked_fill after the softmax then zeroes it, so no NaN reaches outputs or gradients.
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1).masked_fill(~allowed, 0.0)  # (B, H, T, S)
    mixed = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return mixed @ v, weights  # (B, H, T, d), (B, H, T, S)


class MultiHeadSelfAttention(nn.Module):
    """Fused QKV projection, `n_head` heads, output projection.

    `forward(x, key_padding_mask)` with x (B, T, C) and key_padding_mask (B, T), True =
    padding. Set `keep_attention = True` (from outside, e.g. for attention maps or
    rollout) to run the reference path and keep the weights, detached, in
    `last_attention` (B, H, T, T).
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = False) -> None:
        super().__init__()
        if d_model % n_head:
            raise ConfigError(f"model.d_model ({d_model}) must be divisible by model.n_head ({n_head})")
        self.n_head = n_head
        self.causal = causal
        self.dropout = dropout  # on the attention weights, training only
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.keep_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape  # (B, T, C)
        c = self.qkv.out_features // 3  # heads' total width, read from the layer (= C unless resized)
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, c)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        dropout_p = self.dropout if self.training else 0.0
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
        if self.keep_attention:
            y, weights = attention_reference(q, k, v, mask, causal=self.causal, dropout_p=dropout_p)
            self.last_attention = weights.detach()
        elif mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=self.causal)
        else:
            if self.causal:
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # (B, 1, T, T)
            # Kernels disagree on rows with nothing allowed (NaN or 0): let such a row see
            # every key, then zero its output, which is what the reference path gives.
            empty = ~mask.any(-1, keepdim=True)  # (B, 1, T or 1, 1)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty, dropout_p=dropout_p)
            y = y.masked_fill(empty, 0.0)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C): heads side by side
        return self.proj(y)


def has_attention(model: nn.Module) -> bool:
    """Whether `model` contains attention modules that can record their weights."""
    return any(hasattr(m, "keep_attention") for m in model.modules())


@torch.no_grad()
def record_attention(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Run `x` with every attention module keeping its weights; (B, H, T, T) per layer, in order.

    The switch is set from outside and always reset, so the model's own code stays unaware.
    """
    modules = [m for m in model.modules() if hasattr(m, "keep_attention")]
    for m in modules:
        m.keep_attention = True
    try:
        model.eval()
        model(x)
    finally:
        for m in modules:
            m.keep_attention = False
    return [m.last_attention.float().cpu() for m in modules if m.last_attention is not None]
