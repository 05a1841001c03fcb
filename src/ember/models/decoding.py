"""The streaming decoding loops: token ids one at a time, and text with stop strings.

They work through the interface Ember's decoders share, `model.new_cache(batch)` and
`model(idx, kv_cache=, start_pos=)`, and fall back to recomputing the window for models
without a cache. `generate_text` with a `draft` model decodes speculatively
(`ember.models.speculative`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ember.errors import ConfigError
from ember.models.sampling import (
    Penalties,
    TextStream,
    check_sampling,
    last_logits,
    sample_next,
    step_logits,
)
from ember.models.speculative import DRAFT_TOKENS, SpeculativeStats, speculative_ids

__all__ = ["generate_ids", "generate_text"]


@torch.no_grad()
def generate_ids(model: nn.Module, idx: Tensor, max_new_tokens: int, block_size: int, vocab_size: int,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, penalties: Penalties | None = None,
                 stop_ids: set[int] | None = None) -> Iterator[int]:
    """Token ids of one sequence (idx: (1, T)), one at a time, so callers can stream.

    With a KV cache (`model.new_cache`) the prompt runs once and each step feeds one token;
    once the window of `block_size` is full, positions shift, so each later step recomputes
    the last `block_size` tokens, as models without a cache always do. A token in `stop_ids`
    (the tokenizer's end of sequence) ends the stream and is not yielded.
    """
    base = getattr(model, "_orig_mod", model)  # a compiled module: its own module's cache path
    cached = hasattr(base, "new_cache")
    window = idx[:, -block_size:]
    cache = base.new_cache(1) if cached else None
    logits = last_logits(base if cached else model, window, cache, 0, vocab_size)
    pos = window.shape[1]
    for step in range(max_new_tokens):
        if penalties is not None:
            logits = penalties.apply(logits)
        token = int(sample_next(logits, temperature, top_k, top_p, generator))
        if stop_ids and token in stop_ids:
            return
        yield token
        if penalties is not None:
            penalties.update(token)
        if step == max_new_tokens - 1:
            return  # no forward pass for a token nobody will ask for
        nxt = torch.tensor([[token]], dtype=torch.long, device=idx.device)
        idx = torch.cat([idx, nxt], dim=1)
        if cache is not None and pos < block_size:
            logits = step_logits(base, nxt, cache, pos, vocab_size)
            pos += 1
        else:
            window = idx[:, -block_size:]
            cache = base.new_cache(1) if cached else None
            logits = last_logits(base if cached else model, window, cache, 0, vocab_size)
            pos = window.shape[1]


def generate_text(model: nn.Module, tok: Any, info: Any, prompt: str, max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                  stop: list[str] | None = None, *, repetition_penalty: float = 1.0,
                  presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                  stop_ids: set[int] | None = None, draft: nn.Module | None = None, draft_tokens: int = DRAFT_TOKENS,
                  stats: SpeculativeStats | None = None) -> Iterator[str]:
    """`generate` for an already loaded model and tokenizer (the server keeps them in memory).

    Ends after `max_new_tokens`, at the tokenizer's end-of-sequence id (`eos_id`, when it has
    one) or one of `stop_ids` (a chat template's end-of-turn token), or where a `stop` string
    appears (never included). The same seed gives the same text. With a `draft` model (the
    same tokenizer) the text is decoded speculatively, `draft_tokens` drafted per target pass;
    `stats` (a `SpeculativeStats`) then counts what was drafted and kept.
    """
    if info.task != "lm":
        raise ConfigError(f"generate needs a language-model run; this is a {info.task} run")
    check_sampling(temperature, top_k, top_p, repetition_penalty, presence_penalty, frequency_penalty)
    ids = tok.encode(prompt) or [0]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    gen = torch.Generator(device=device.type).manual_seed(seed)
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    block = int(getattr(model, "block_size", info.input_shape[0]))
    pen = Penalties(vocab, ids, repetition_penalty, presence_penalty, frequency_penalty, device)
    eos = getattr(tok, "eos_id", None)
    ends = ({int(eos)} if isinstance(eos, int) else set()) | set(stop_ids or ())
    model.eval()
    stream = TextStream(tok, stop)
    if draft is not None:
        draft.eval()
        tokens = speculative_ids(model, draft, idx, max_new_tokens, block, vocab, temperature, top_k, top_p, gen,
                                 pen if pen.active else None, ends or None, draft_tokens, stats)
    else:
        tokens = generate_ids(model, idx, max_new_tokens, block, vocab, temperature, top_k, top_p, gen,
                              pen if pen.active else None, ends or None)
    for token in tokens:
        piece, stopped = stream.push(token)
        if piece:
            yield piece
        if stopped:
            return
    if tail := stream.flush():
        yield tail
