"""GPT: a decoder-only Transformer language model (Radford et al. 2019; layout after nanoGPT).

Pre-norm blocks (LayerNorm -> causal self-attention -> residual; LayerNorm -> GELU MLP ->
residual), learned positions, final LayerNorm, the output head tied to the token
embedding, vocabulary padded to a multiple of 64 for fast matmuls. Generation streams
token ids and uses a KV cache, so each new token costs one position, not the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.attention import attention_reference
from ember.section import Section

__all__ = ["GPTConfig", "GPT", "KVCache", "build_gpt", "flops_per_token"]


class GPTConfig(Section):
    """Sizes; `block_size` defaults to the data's window, the vocabulary comes from the data."""

    name: Literal["gpt"] = "gpt"
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    block_size: int | None = Field(None, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = True
    vocab_multiple: int = Field(64, ge=1)


class KVCache:
    """Keys and values of every layer for positions already processed: (B, H, T_max, hd)."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0
        self.max_len = max_len


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ConfigError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)
        self.keep_attention = False  # set from outside (explain/report) to record weights
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        start = 0
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start:start + t] = k
            cache.v[layer][:, :, start:start + t] = v
            k = cache.k[layer][:, :, : start + t]  # (B, H, start+T, hd)
            v = cache.v[layer][:, :, : start + t]
        if self.keep_attention:
            y = self._reference(q, k, v, start)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:
            # New queries at positions start..start+T-1 may see every cached key up to themselves.
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.resid_drop(self.c_proj(y))

    def _reference(self, q: Tensor, k: Tensor, v: Tensor, start: int) -> Tensor:
        """softmax(QK^T / sqrt(d)) V written out, keeping the weights for attention maps."""
        t, s = q.shape[2], k.shape[2]
        causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=start)  # query i sees keys <= start+i
        y, weights = attention_reference(q, k, v, mask=causal)
        self.last_attention = weights.detach()
        return y  # (B, H, T, hd)


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> logits (B, T, V_padded)."""

    def __init__(self, cfg: GPTConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.padded_vocab = math.ceil(vocab_size / cfg.vocab_multiple) * cfg.vocab_multiple
        self.block_size = block_size
        self.wte = nn.Embedding(self.padded_vocab, cfg.n_embd)
        self.wpe = nn.Embedding(block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, self.padded_vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, cache: KVCache | None = None) -> Tensor:
        b, t = idx.shape  # (B, T)
        start = cache.length if cache is not None else 0
        if start + t > self.block_size:
            raise ValueError(f"sequence of {start + t} tokens exceeds block_size {self.block_size}")
        pos = torch.arange(start, start + t, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length += t
        return self.lm_head(self.ln_f(x))  # (B, T, V_padded)

    def new_cache(self, batch: int) -> KVCache:
        p = self.wte.weight
        hd = self.cfg.n_embd // self.cfg.n_head
        return KVCache(self.cfg.n_layer, batch, self.cfg.n_head, self.block_size, hd, p.device, p.dtype)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, vocab_size: int | None = None) -> Iterator[Tensor]:
        """Yield (B, 1) next-token ids one at a time; greedy when `temperature` is 0.

        With `use_cache`, the prompt is processed once and each later step feeds one token;
        once the window is full it slides, and each step recomputes the last `block_size`.
        Ids at or above `vocab_size` (vocabulary padding) are never produced.
        """
        from ember.generation import sample_next

        vocab = vocab_size or self.vocab_size
        idx = idx[:, -self.block_size:]
        cache = self.new_cache(idx.shape[0]) if use_cache else None
        logits = self(idx, cache)[:, -1, :vocab]  # (B, V)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            yield nxt
            idx = torch.cat([idx, nxt], dim=1)
            if cache is None:
                logits = self(idx[:, -self.block_size:])[:, -1, :vocab]
            elif cache.length < self.block_size:
                logits = self(nxt, cache)[:, -1, :vocab]
            else:
                # The window slides: every position shifts, so cached keys no longer apply.
                # Recompute the last block_size tokens, exactly as the uncached path does.
                cache = self.new_cache(idx.shape[0])
                logits = self(idx[:, -self.block_size:], cache)[:, -1, :vocab]


def flops_per_token(model: GPT, seq_len: int | None = None) -> int:
    """Training FLOPs per token, 6N + 12·L·H·Q·T (PaLM, Chowdhery et al. 2022, appendix B).

    N counts parameters once (tied weights once) without the position embeddings; L layers,
    H heads, Q head size, T sequence length (the attention term).
    """
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    cfg = model.cfg
    t = seq_len or model.block_size
    return 6 * n + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * t


def build_gpt(cfg: GPTConfig, info: DataInfo) -> GPT:
    if info.task != "lm" or info.input_kind != "tokens":
        raise ConfigError(
            f"model.name: 'gpt' is a language model and needs token data with task lm; this data is "
            f"{info.input_kind}/{info.task} (use transformer, rnn, mlp or cnn)"
        )
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    return GPT(cfg, vocab, cfg.block_size or int(info.input_shape[0]))
