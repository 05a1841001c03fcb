"""Llama: a decoder-only Transformer with RoPE, RMSNorm, SwiGLU and grouped-query attention.

    x_0 = W_emb[idx]                                           # (B, T, C), no position table
    x'  = x + Attn_gqa(RMSNorm_1(x), RoPE)   x_out = x' + SwiGLU(RMSNorm_2(x'))   (per block)
    logits = RMSNorm_f(x_L) W_head^T                           # (B, T, V_padded)

Positions enter through rotary embeddings (Su et al. 2021) applied to queries and keys, in
the "rotate half" layout Hugging Face's Llama uses (dimension i pairs with i + hd/2).
Grouped-query attention (Ainslie et al. 2023): `n_kv_head` key/value heads, each shared by
n_head / n_kv_head query heads, so the KV cache is that much smaller. The MLP is SwiGLU
(Shazeer 2020): down(silu(gate(x)) * up(x)). Module names follow Hugging Face's
(`layers.i.self_attn.q_proj`, `mlp.gate_proj`...), so LoRA targets read the same.
Generation, the KV cache and per-row start positions (continuous batching) work as in GPT.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.attention import attention_reference
from ember.models.common import MAX_WIDTH, ModelSection
from ember.models.gpt import GPT, KVCache

__all__ = ["LlamaConfig", "Llama", "build_llama"]


class LlamaConfig(ModelSection):
    """Sizes and constants; `block_size` defaults to the data's window, the vocabulary comes from the data."""

    name: Literal["llama"] = "llama"
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_kv_head: int | None = Field(None, ge=1, description="key/value heads (grouped-query); default n_head")
    n_embd: int = Field(128, ge=8, le=MAX_WIDTH)
    intermediate_size: int | None = Field(None, ge=1, le=4 * MAX_WIDTH,
                                          description="SwiGLU width; default 8/3 n_embd rounded up to 64")
    block_size: int | None = Field(None, ge=1, description="context length; default: the data's window")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base")
    norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon")
    tie_embeddings: bool = Field(True, description="the output head shares the token embedding")
    attention_bias: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    vocab_multiple: int = Field(64, ge=1, description="pad the vocabulary up to a multiple of this")

    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def mlp_width(self) -> int:
        return self.intermediate_size or 64 * math.ceil(8 * self.n_embd / 3 / 64)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos, sin of angle pos * theta^(-2i/hd), each (length, hd): the halves repeat (rotate-half layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (length, hd/2)
    angles = torch.cat([angles, angles], dim=-1)  # (length, hd)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, hd) queries or keys by the angles cos/sin, broadcastable to (B, 1, T, hd)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # pairs (i, i + hd/2) turn together
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Causal grouped-query self-attention with RoPE that can read and extend a `KVCache`."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(f"model.n_embd ({cfg.n_embd}) must be divisible by model.n_head ({cfg.n_head})")
        if cfg.n_head % cfg.kv_heads():
            raise ConfigError(f"model.n_head ({cfg.n_head}) must be a multiple of model.n_kv_head ({cfg.kv_heads()})")
        self.n_head, self.n_kv_head = cfg.n_head, cfg.kv_heads()
        self.head_dim = cfg.n_embd // cfg.n_head
        self.q_proj = nn.Linear(cfg.n_embd, self.n_head * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(cfg.n_embd, self.n_kv_head * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, cfg.n_embd, bias=cfg.attention_bias)
        self.dropout = cfg.dropout
        self.keep_attention = False  # set from outside (explain/report) to record weights
        self.last_attention: Tensor | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None, layer: int = 0,
                start: int | Tensor = 0) -> Tensor:
        """x (B, T, C); cos/sin (B or 1, T, hd) for these positions; `start` int or (B,) as in GPT."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(b, t, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None])
        if isinstance(start, Tensor):
            offs = start[:, None] + torch.arange(t, device=x.device)  # (B, T) absolute positions
            if cache is not None:
                rows = torch.arange(b, device=x.device)[:, None]  # (B, 1)
                # Advanced indices around a slice put (B, T) first: the values go in as (B, T, Hkv, hd).
                cache.k[layer][rows, :, offs] = k.transpose(1, 2)
                cache.v[layer][rows, :, offs] = v.transpose(1, 2)
                span = int(offs.max()) + 1
                k, v = cache.k[layer][:, :, :span], cache.v[layer][:, :, :span]  # (B, Hkv, span, hd)
            # Row b's query i sees keys j <= start[b] + i: stale entries past a row's own end are never read.
            mask = (torch.arange(k.shape[2], device=x.device)[None, None, :] <= offs[:, :, None])[:, None]
            y = self._attend(q, k, v, mask)
        else:
            if cache is not None:
                cache.k[layer][:, :, start:start + t] = k
                cache.v[layer][:, :, start:start + t] = v
                k, v = cache.k[layer][:, :, : start + t], cache.v[layer][:, :, : start + t]  # (B, Hkv, start+T, hd)
            mask = None  # None: causal from position 0
            if self.keep_attention or start > 0:  # query i (at start+i) sees keys 0..start+i
                mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            y = self._attend(q, k, v, mask, causal=mask is None)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_head * self.head_dim))  # (B, T, C)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
        """(B, H, T, hd) output; each key/value head serves n_head / n_kv_head query heads."""
        groups = self.n_head // self.n_kv_head
        dropout_p = self.dropout if self.training else 0.0
        if groups > 1:
            # Expanded here rather than with SDPA's enable_gqa: on CPU that path is ~500x slower on
            # the cache's strided slices (measured, torch 2.13), and the copy is small beside it.
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, H, S, hd)
        if q.shape[2] == 1 and not self.training and not self.keep_attention:
            # One query (a decoding step): plain matmuls; CPU SDPA kernels cost milliseconds here.
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, 1, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            return scores.softmax(-1) @ v  # (B, H, 1, hd)
        if self.keep_attention:
            y, weights = attention_reference(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p)
            self.last_attention = weights.detach()  # (B, H, T, S)
            return y
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p)


class SwiGLU(nn.Module):
    """Feed-forward C -> F -> C: down(silu(gate(x)) * up(x))."""

    def __init__(self, n_embd: int, width: int, dropout: float) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, width, bias=False)
        self.up_proj = nn.Linear(n_embd, width, bias=False)
        self.down_proj = nn.Linear(width, n_embd, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class LlamaBlock(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.n_embd, cfg.mlp_width(), cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, layer: int,
                start: int | Tensor) -> Tensor:
        x = x + self.resid_drop(self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, start))  # (B, T, C)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Token ids (B, T) -> logits (B, T, V_padded); `vocab_size` real ids, the rest padding."""

    def __init__(self, cfg: LlamaConfig, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.padded_vocab = math.ceil(vocab_size / cfg.vocab_multiple) * cfg.vocab_multiple
        self.block_size = block_size
        self.embed_tokens = nn.Embedding(self.padded_vocab, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.n_embd, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, self.padded_vocab, bias=False)
        cos, sin = rope_tables(cfg.n_embd // cfg.n_head, block_size, cfg.rope_theta)
        # Not persistent: computed from the config, so weights files hold none of it.
        self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hd)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):  # residual projections scaled by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, kv_cache: KVCache | None = None, start_pos: int | Tensor | None = None) -> Tensor:
        """Logits (B, T, V_padded) for idx (B, T) whose first token sits at `start_pos`.

        The cache and `start_pos` (an int, or a LongTensor (B,) of per-row positions) behave
        exactly as in `GPT.forward`.
        """
        return self.lm_head(self._features(idx, kv_cache, start_pos))

    def _features(self, idx: Tensor, kv_cache: KVCache | None, start_pos: int | Tensor | None) -> Tensor:
        b, t = idx.shape  # (B, T)
        start: int | Tensor
        if isinstance(start_pos, Tensor):
            start = start_pos.to(device=idx.device, dtype=torch.long)
            if start.shape != (b,):
                raise ValueError(f"start_pos tensor must have shape ({b},), got {tuple(start.shape)}")
            limit = min(kv_cache.max_len if kv_cache is not None else self.block_size, self.block_size)
            if int(start.min()) < 0 or int(start.max()) + t > limit:
                raise ValueError(f"positions up to {int(start.max()) + t} exceed block_size {self.block_size}")
            pos = start[:, None] + torch.arange(t, device=idx.device)  # (B, T)
            end = int(start.max()) + t
        else:
            start = start_pos if start_pos is not None else (kv_cache.length if kv_cache is not None else 0)
            if start + t > self.block_size:
                raise ValueError(f"positions up to {start + t} exceed block_size {self.block_size}")
            if kv_cache is not None and start > kv_cache.length:
                raise ValueError(f"start_pos {start} leaves a gap after the {kv_cache.length} cached positions")
            pos = torch.arange(start, start + t, device=idx.device)[None]  # (1, T)
            end = start + t
        cos, sin = self.rope_cos[pos].to(self.embed_tokens.weight.dtype), self.rope_sin[pos].to(
            self.embed_tokens.weight.dtype)  # (B or 1, T, hd)
        x = self.drop(self.embed_tokens(idx))  # (B, T, C)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, kv_cache, i, start)
        if kv_cache is not None:
            kv_cache.length = max(kv_cache.length, end) if isinstance(start, Tensor) else end
        return self.norm(x)  # (B, T, C)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` (default `block_size`) positions."""
        p = self.embed_tokens.weight
        attn = self.layers[0].self_attn
        length = min(max_len or self.block_size, self.block_size)
        return KVCache(len(self.layers), batch, attn.n_kv_head, length, attn.head_dim, p.device, p.dtype)

    # The same streaming loop as GPT's (KV cache, stop ids, window cropping): it relies only on
    # block_size, vocab sizes, new_cache and _next_logits, which this class provides.
    generate = GPT.generate
    _next_logits = GPT._next_logits


def build_llama(cfg: LlamaConfig, info: DataInfo) -> Llama:
    if info.task != "lm" or info.input_kind != "tokens":
        raise ConfigError(
            f"model.name: 'llama' is a language model and needs token data with task lm; this data is "
            f"{info.input_kind}/{info.task} (use transformer or rnn for token/series classification, "
            f"regression or forecast; mlp or cnn otherwise)"
        )
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    return Llama(cfg, vocab, cfg.block_size or int(info.input_shape[0]))
