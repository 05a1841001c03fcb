"""GPT: a decoder-only Transformer language model (Radford et al. 2019; layout after nanoGPT).

    x_0 = W_te[idx] + W_pe[pos]                               # (B, T, C)
    x'  = x + Attn_causal(LN_1(x))      x_out = x' + MLP(LN_2(x'))   (per block, pre-norm)
    logits = LN_f(x_L) W_te^T                                 # (B, T, V_padded), tied head

The output head is tied to the token embedding (Press & Wolf 2017); the vocabulary is
padded up to a multiple of `vocab_multiple` (64) so the big matmuls run on aligned sizes;
GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2L)).
Generation streams token ids and keeps a KV cache, so after the prompt each new token
costs one position instead of the whole window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.attention import attention_reference
from ember.models.common import MAX_WIDTH, ModelSection
from ember.models.sampling import sample_next, step_logits

__all__ = ["GPTConfig", "GPT", "KVCache", "build_gpt", "flops_per_token"]

StopIds = Callable[[Tensor], bool] | Collection[int]


class GPTConfig(ModelSection):
    """Sizes; `block_size` defaults to the data's window, the vocabulary comes from the data."""

    name: Literal["gpt"] = "gpt"
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8, le=MAX_WIDTH)
    block_size: int | None = Field(None, ge=1, description="context length; default: the data's window")
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = True
    vocab_multiple: int = Field(64, ge=1, description="pad the vocabulary up to a multiple of this")
    gelu: Literal["exact", "tanh"] = Field("exact", description="GELU form; OpenAI's GPT-2 weights use tanh")


class KVCache:
    """Keys and values of every layer for the positions already processed.

    `k[layer]`, `v[layer]`: (B, H, T_max, hd), preallocated; positions `[0, length)` are filled.
    With per-row start positions (a LongTensor `start_pos`) each row fills its own prefix and
    `length` is the longest; entries past a row's own position are stale and masked out.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.length = 0
        self.max_len = max_len

    def reset(self) -> None:
        """Forget every position (the buffers are reused, not reallocated)."""
        self.length = 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention that can read and extend a `KVCache`."""

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

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0, start: int | Tensor = 0) -> Tensor:
        b, t, _ = x.shape  # (B, T, C)
        c = self.c_attn.out_features // 3  # heads' total width, read from the layer (= C unless resized)
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        if isinstance(start, Tensor):
            return self._per_row(q, k, v, cache, layer, start)
        if cache is not None:
            cache.k[layer][:, :, start:start + t] = k
            cache.v[layer][:, :, start:start + t] = v
            k = cache.k[layer][:, :, : start + t]  # (B, H, start+T, hd)
            v = cache.v[layer][:, :, : start + t]
        dropout_p = self.dropout if self.training else 0.0
        if self.keep_attention or start > 0:
            # Queries sit at positions start..start+T-1; query i sees keys 0..start+i.
            mask = torch.ones(t, start + t, dtype=torch.bool, device=x.device).tril(diagonal=start)
            if self.keep_attention:
                y, weights = attention_reference(q, k, v, mask=mask, dropout_p=dropout_p)
                self.last_attention = weights.detach()  # (B, H, T, start+T)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.resid_drop(self.c_proj(y))

    def _per_row(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache | None, layer: int, start: Tensor) -> Tensor:
        """Attention when row b's queries sit at start[b]..start[b]+T-1 (continuous batching)."""
        b, _, t, hd = q.shape
        offs = start[:, None] + torch.arange(t, device=q.device)  # (B, T) absolute positions
        if cache is not None:
            rows = torch.arange(b, device=q.device)[:, None]  # (B, 1)
            # Advanced indices around a slice put (B, T) first: the values go in as (B, T, H, hd).
            cache.k[layer][rows, :, offs] = k.transpose(1, 2)
            cache.v[layer][rows, :, offs] = v.transpose(1, 2)
            span = int(offs.max()) + 1
            k = cache.k[layer][:, :, :span]  # (B, H, span, hd)
            v = cache.v[layer][:, :, :span]
        span = k.shape[2]
        # Key j is visible to row b's query i when j <= start[b] + i: the row's own past only,
        # so entries a finished sequence left in this row (beyond start[b]) are never read.
        mask = torch.arange(span, device=q.device)[None, None, :] <= offs[:, :, None]  # (B, T, span)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], dropout_p=0.0)
        y = y.transpose(1, 2).contiguous().view(b, t, hd * self.n_head)  # (B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> GELU -> C."""

    def __init__(self, n_embd: int, dropout: float, bias: bool, gelu: str = "exact") -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm decoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg.n_embd, cfg.n_head, cfg.dropout, cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg.n_embd, cfg.dropout, cfg.bias, cfg.gelu)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0, start: int | Tensor = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, start)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token ids (B, T) -> logits (B, T, V_padded); `vocab_size` real ids, the rest padding."""

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
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, kv_cache: KVCache | None = None, start_pos: int | Tensor | None = None) -> Tensor:
        """Logits (B, T, V_padded) for idx (B, T) whose first token sits at `start_pos`.

        With `kv_cache`, keys and values are written at positions start_pos..start_pos+T-1,
        attention also reads the cached positions before them, and `kv_cache.length`
        becomes start_pos + T. `start_pos` defaults to `kv_cache.length` (0 without a cache).
        `start_pos` may be a LongTensor (B,) of per-row positions: row b's tokens sit at
        start_pos[b].., its K/V are written there in row b, and it attends only to cache
        positions up to its own (the serving scheduler batches sequences of different lengths).
        """
        return self.lm_head(self._features(idx, kv_cache, start_pos))

    def _features(self, idx: Tensor, kv_cache: KVCache | None, start_pos: int | Tensor | None) -> Tensor:
        b, t = idx.shape  # (B, T)
        if isinstance(start_pos, Tensor):
            return self._features_per_row(idx, kv_cache, start_pos.to(device=idx.device, dtype=torch.long))
        start = start_pos if start_pos is not None else (kv_cache.length if kv_cache is not None else 0)
        if start + t > self.block_size:
            raise ValueError(f"positions up to {start + t} exceed block_size {self.block_size}")
        if kv_cache is not None and start > kv_cache.length:
            raise ValueError(f"start_pos {start} leaves a gap after the {kv_cache.length} cached positions")
        # (B, T), not (T,): with a batch dimension every sample owns its rows of the position
        # embedding's gradient, which per-sample gradients (DP-SGD, Opacus) need.
        pos = torch.arange(start, start + t, device=idx.device).expand(b, t)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i, start)
        if kv_cache is not None:
            kv_cache.length = start + t
        return self.ln_f(x)  # (B, T, C)

    def _features_per_row(self, idx: Tensor, kv_cache: KVCache | None, start: Tensor) -> Tensor:
        b, t = idx.shape  # (B, T); start: (B,)
        if start.shape != (b,):
            raise ValueError(f"start_pos tensor must have shape ({b},), got {tuple(start.shape)}")
        limit = kv_cache.max_len if kv_cache is not None else self.block_size
        if int(start.min()) < 0 or int(start.max()) + t > min(limit, self.block_size):
            raise ValueError(f"positions up to {int(start.max()) + t} exceed block_size {self.block_size}")
        pos = start[:, None] + torch.arange(t, device=idx.device)  # (B, T)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i, start)
        if kv_cache is not None:
            kv_cache.length = max(kv_cache.length, int(start.max()) + t)
        return self.ln_f(x)  # (B, T, C)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """An empty cache for `batch` sequences of up to `max_len` (default `block_size`) positions."""
        p = self.wte.weight
        attn = self.blocks[0].attn  # sizes read from the layers, which may have been resized
        hd = attn.c_attn.out_features // (3 * attn.n_head)
        length = min(max_len or self.block_size, self.block_size)
        return KVCache(len(self.blocks), batch, attn.n_head, length, hd, p.device, p.dtype)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True, stop_ids: StopIds | None = None,
                 vocab_size: int | None = None) -> Iterator[Tensor]:
        """Yield the next token ids, (B, 1) each, one step at a time, so callers can stream.

        Greedy when `temperature` is 0; otherwise sample from softmax(logits / temperature)
        after top-k and nucleus (top-p) filtering. Ids at or above `vocab_size` (default:
        the model's; the rest is vocabulary padding) are never produced. The context is
        cropped to the last `block_size` tokens. With `use_cache` the prompt is processed
        once and each step feeds one token; once the window is full every position shifts,
        so each later step recomputes the last `block_size` tokens, exactly as without the
        cache. `stop_ids`: a callable taking the (B, 1) ids just produced and returning True
        to stop, or a collection of ids that stops once every row has produced one; the
        stopping token is yielded before the generator ends. Call `.eval()` first.
        """
        vocab = vocab_size or self.vocab_size
        if not 0 < vocab <= self.padded_vocab:
            raise ValueError(f"vocab_size {vocab} must be in 1..{self.padded_vocab}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        stop_set = None
        if stop_ids is not None and not callable(stop_ids):
            stop_set = torch.tensor(sorted(stop_ids), dtype=torch.long, device=idx.device)
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # (B,)
        idx = idx[:, -self.block_size:]  # (B, T <= block_size)
        cache = self.new_cache(idx.shape[0]) if use_cache else None
        logits = self._next_logits(idx, cache, vocab)  # (B, V)
        for step in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            yield nxt
            if stop_ids is not None:
                if stop_set is None:
                    if stop_ids(nxt):  # type: ignore[operator]
                        return
                else:
                    done |= torch.isin(nxt[:, 0], stop_set)
                    if bool(done.all()):
                        return
            if step == max_new_tokens - 1:
                return  # no forward pass for a token nobody will ask for
            idx = torch.cat([idx, nxt], dim=1)[:, -self.block_size:]  # (B, <= block_size)
            if cache is not None and cache.length < self.block_size:
                logits = step_logits(self, nxt, cache, cache.length, vocab)  # one new position
            else:
                if cache is not None:  # full: positions shift, so cached keys no longer apply
                    cache.reset()
                logits = self._next_logits(idx, cache, vocab)

    def _next_logits(self, idx: Tensor, cache: KVCache | None, vocab: int) -> Tensor:
        """Logits of the real vocabulary (B, vocab) at the last position of idx (B, T)."""
        h = self._features(idx, cache, None)[:, -1]  # (B, C): the head runs on one position only
        return self.lm_head(h)[:, :vocab].float()  # padded ids sliced away: never sampled

    @staticmethod
    def flops_per_token(cfg: GPTConfig, n_params: int, seq_len: int) -> int:
        """Training FLOPs per token, 6N + 12·L·H·Q·T (PaLM, Chowdhery et al. 2022, appendix B).

        N: parameters, tied weights counted once, position embeddings excluded (6N is the
        matmul cost of forward + backward; a position lookup is no matmul). L layers, H
        heads, Q head size, T the sequence length attended over (the QK^T and AV matmuls).
        """
        return 6 * n_params + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * seq_len


def flops_per_token(model: GPT, seq_len: int | None = None) -> int:
    """`GPT.flops_per_token` for a built model; N = its parameters less `wpe`, T = block_size."""
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()  # tied counted once
    return GPT.flops_per_token(model.cfg, n, seq_len or model.block_size)


def build_gpt(cfg: GPTConfig, info: DataInfo) -> GPT:
    if info.task != "lm" or info.input_kind != "tokens":
        raise ConfigError(
            f"model.name: 'gpt' is a language model and needs token data with task lm; this data is "
            f"{info.input_kind}/{info.task} (use transformer or rnn for token/series classification, "
            f"regression or forecast; mlp or cnn otherwise)"
        )
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    return GPT(cfg, vocab, cfg.block_size or int(info.input_shape[0]))
