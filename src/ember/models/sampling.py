"""Sampling from a language model: next-token choice, token streams, text streams.

Beside the GPT (which uses `sample_next` in its KV-cache loop); it reads no run folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ember.errors import ConfigError

__all__ = ["generate_text", "sample_next", "generate_ids"]


def sample_next(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> Tensor:
    """One token id per row of `logits` (B, V): greedy at temperature 0, else filtered sampling."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate_ids(model: nn.Module, idx: Tensor, max_new_tokens: int, block_size: int, vocab_size: int,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> Iterator[int]:
    """Token ids one at a time. Uses the model's own `generate` (GPT, KV cache) when it has one."""
    if hasattr(model, "generate"):
        yield from (int(t) for t in model.generate(
            idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, vocab_size=vocab_size))
        return
    for _ in range(max_new_tokens):  # models without a cache: recompute the window each step
        logits = model(idx[:, -block_size:])[:, -1, :vocab_size]  # (1, V)
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        idx = torch.cat([idx, nxt], dim=1)
        yield int(nxt)


def generate_text(model: nn.Module, tok: Any, info: Any, prompt: str, max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                  stop: list[str] | None = None) -> Iterator[str]:
    """`generate` for an already loaded model and tokenizer (the server keeps them in memory)."""
    if info.task != "lm":
        raise ConfigError(f"generate needs a language-model run; this is a {info.task} run")
    if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None and top_k < 1):
        raise ConfigError("--temperature must be >= 0, --top-p in (0, 1], --top-k >= 1")
    ids = tok.encode(prompt) or [0]
    idx = torch.tensor([ids], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    block = int(info.input_shape[0])
    model.eval()
    new: list[int] = []
    shown = ""
    for token in generate_ids(model, idx, max_new_tokens, block, vocab, temperature, top_k, top_p, gen):
        new.append(token)
        text = tok.decode(new)
        if "\ufffd" in text[len(shown):]:
            continue  # a multi-byte character is still incomplete
        safe = len(text)
        if stop:
            hits = [text.find(s) for s in stop if s and s in text]
            if hits:
                yield text[len(shown):min(hits)]
                return
            # Hold back a tail that could be the start of a stop string.
            held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            safe -= held
        if safe > len(shown):
            yield text[len(shown):safe]
            shown = text[:safe]
    if len(text if new else "") > len(shown):
        yield text[len(shown):]
