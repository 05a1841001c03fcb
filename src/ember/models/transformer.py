"""Transformer encoder classifier (Vaswani et al. 2017, pre-norm as in Xiong et al. 2020).

Token embedding * sqrt(d) + positional encoding (sinusoidal or learned), pre-norm encoder
blocks with padding-aware self-attention, final LayerNorm, masked mean pooling (or a
learned [CLS] token), then a linear head. Series inputs enter through a linear projection.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.attention import MultiHeadSelfAttention
from ember.models.common import MAX_WIDTH, ModelSection

__all__ = ["TransformerConfig", "TransformerClassifier", "build_transformer", "sinusoidal_positions"]


class TransformerConfig(ModelSection):
    name: Literal["transformer"] = "transformer"
    d_model: int = Field(128, ge=8, le=MAX_WIDTH)
    n_head: int = Field(4, ge=1)
    n_layer: int = Field(2, ge=1)
    d_ff: int = Field(256, ge=8, le=MAX_WIDTH)
    dropout: float = Field(0.1, ge=0, lt=1)
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    pooling: Literal["mean", "cls"] = "mean"
    max_len: int | None = Field(None, ge=1, description="longest input; default: the data's length")


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...): (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (d/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class EncoderBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = MultiHeadSelfAttention(cfg.d_model, cfg.n_head, cfg.dropout)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, pad: Tensor | None) -> Tensor:  # (B, T, C)
        x = x + self.drop(self.attn(self.ln1(x), pad))
        return x + self.drop(self.ff(self.ln2(x)))


class TransformerClassifier(nn.Module):
    """Tokens (B, T) or series (B, T, F) -> (B, num_outputs)."""

    def __init__(self, cfg: TransformerConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens = info.input_kind == "tokens"
        self.max_len = cfg.max_len or int(info.input_shape[0])
        length = self.max_len + (1 if cfg.pooling == "cls" else 0)  # positions, [CLS] included
        self.pad_id = info.extra.get("pad_id") if self.tokens else None
        if self.tokens:
            self.embed: nn.Module = nn.Embedding(int(info.extra["vocab_size"]), cfg.d_model)
        else:
            self.embed = nn.Linear(int(info.input_shape[-1]), cfg.d_model)
        if cfg.positional == "learned":
            self.pos = nn.Parameter(torch.randn(length, cfg.d_model) * 0.02)
        else:
            self.register_buffer("pos", sinusoidal_positions(length, cfg.d_model), persistent=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model)) if cfg.pooling == "cls" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, info.num_outputs)

    def forward(self, x: Tensor) -> Tensor:  # (B, T) ids or (B, T, F) -> (B, num_outputs)
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence of {x.shape[1]} exceeds max_len {self.max_len}")
        pad = (x == self.pad_id) if self.pad_id is not None else None  # (B, T) True = padding
        h = self.embed(x) * (math.sqrt(self.cfg.d_model) if self.tokens else 1.0)  # (B, T, C)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1+T, C)
            if pad is not None:
                pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        h = self.drop(h + self.pos[: h.shape[1]])
        for block in self.blocks:
            h = block(h, pad)
        h = self.ln_f(h)
        if self.cls is not None:
            pooled = h[:, 0]  # (B, C)
        elif pad is None:
            pooled = h.mean(1)
        else:
            keep = (~pad).unsqueeze(-1).float()  # (B, T, 1)
            pooled = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.head(pooled)  # (B, num_outputs)


def build_transformer(cfg: TransformerConfig, info: DataInfo) -> TransformerClassifier:
    if info.task == "lm":
        raise ConfigError("model.name: 'transformer' is an encoder classifier; for language modelling use gpt or rnn")
    if info.input_kind not in ("tokens", "series"):
        raise ConfigError(f"model.name: 'transformer' needs token or series inputs, not {info.input_kind}; "
                          "use mlp or cnn")
    return TransformerClassifier(cfg, info)
