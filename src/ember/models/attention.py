"""Multi-head self-attention (Vaswani et al. 2017), written out and via the fused kernel.

`attention_reference` is softmax(QK^T / sqrt(d)) V spelled out, the version to read and
the one tested against `F.scaled_dot_product_attention`, which is what training uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["attention_reference", "MultiHeadSelfAttention"]


def attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                        causal: bool = False) -> tuple[Tensor, Tensor]:
    """Scaled dot-product attention and its weights.

    Args:
        q, k, v: (B, H, T, d) queries, keys, values (k, v may have their own length S).
        mask: boolean, True where attention is allowed, broadcastable to (B, H, T, S).
        causal: also forbid attending to later positions.
    Returns:
        output (B, H, T, d) and weights (B, H, T, S); a row with nothing allowed gets zeros.
    """
    t, s = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    allowed = torch.ones(t, s, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked rows: 0, not NaN
    return weights @ v, weights


class MultiHeadSelfAttention(nn.Module):
    """Fused QKV projection, H heads, output projection; `key_padding_mask` True = padding.

    Set `keep_attention = True` (from outside, e.g. for attention maps) to run the
    reference path and keep the weights in `last_attention` (B, H, T, T).
    """

    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % n_head:
            from ember.errors import ConfigError

            raise ConfigError(f"model.d_model ({d_model}) must be divisible by model.n_head ({n_head})")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.keep_attention = False
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B,H,T,hd)
        mask = None
        if key_padding_mask is not None:
            allowed = ~key_padding_mask  # (B, T)
            allowed[:, 0] |= key_padding_mask.all(1)  # an all-padding row attends to position 0, not NaN
            mask = allowed[:, None, None, :]  # (B, 1, 1, T)
        if self.keep_attention:
            y, weights = attention_reference(q, k, v, mask)
            self.last_attention = weights.detach()
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return self.proj(y)
