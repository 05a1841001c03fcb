"""Sampling from a language model: next-token choice, penalties, token streams, text streams.

Beside the decoders (the GPT uses `sample_next` in its own loop); it reads no run folder.
The streaming loops built on these pieces are in `ember.models.decoding`.

Penalties (applied to the logits before temperature, top-k and top-p):

- repetition penalty (Keskar et al. 2019, CTRL; Hugging Face's `repetition_penalty`): the
  logit of every token already in the context (prompt and completion) is divided by `p`
  when positive and multiplied by `p` when negative; `p` > 1 discourages repeats, 1 is off.
- presence and frequency penalties (OpenAI's definition): `logit -= presence * 1[count > 0]
  + frequency * count`, where `count` is how often the token occurs in the completion so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ember.errors import ConfigError
from ember.models.compiled_decoding import decode_step_of

__all__ = ["sample_next", "filtered_probs", "last_logits", "step_logits", "penalize", "Penalties", "TextStream",
           "check_sampling"]


def sample_next(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> Tensor:
    """One token id per row of `logits` (B, V): greedy at temperature 0, else filtered sampling."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    return torch.multinomial(filtered_probs(logits, temperature, top_k, top_p), 1, generator=generator)


def filtered_probs(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    """The distribution (B, V) `sample_next` draws from at `temperature` > 0, after top-k and top-p."""
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
    return logits.softmax(-1)


def penalize(logits: Tensor, seen: Tensor, counts: Tensor, repetition: float = 1.0, presence: float = 0.0,
             frequency: float = 0.0) -> Tensor:
    """`logits` (B, V) after the penalties (see the module docstring); the input is left unchanged.

    `seen` (B, V) bool: tokens anywhere in the context (the repetition penalty's set).
    `counts` (B, V): each token's occurrences in the completion (presence and frequency).
    """
    out = logits.float().clone()
    if repetition != 1.0:
        scaled = torch.where(out > 0, out / repetition, out * repetition)
        out = torch.where(seen, scaled, out)
    if presence or frequency:
        c = counts.to(out.dtype)
        out = out - presence * (c > 0).to(out.dtype) - frequency * c
    return out


class Penalties:
    """One sequence's penalty state: the tokens seen and the completion's counts, updated per token."""

    def __init__(self, vocab: int, prompt_ids: Sequence[int], repetition: float = 1.0, presence: float = 0.0,
                 frequency: float = 0.0, device: torch.device | str = "cpu") -> None:
        self.repetition, self.presence, self.frequency = repetition, presence, frequency
        self.seen = torch.zeros(1, vocab, dtype=torch.bool, device=device)
        ids = torch.tensor([i for i in prompt_ids if 0 <= i < vocab], dtype=torch.long, device=device)
        self.seen[0, ids] = True
        self.counts = torch.zeros(1, vocab, dtype=torch.long, device=device)

    @property
    def active(self) -> bool:
        return self.repetition != 1.0 or bool(self.presence) or bool(self.frequency)

    def apply(self, logits: Tensor) -> Tensor:
        """`logits` (1, V) penalised; unchanged (the same tensor) when every penalty is off."""
        if not self.active:
            return logits
        return penalize(logits, self.seen, self.counts, self.repetition, self.presence, self.frequency)

    def update(self, token: int) -> None:
        if 0 <= token < self.seen.shape[1]:
            self.seen[0, token] = True
            self.counts[0, token] += 1


class TextStream:
    """Token ids in, text pieces out: stop strings are cut before they show, even when split.

    A tail of the text that could be the start of a stop string is held back until the next
    token settles it, and so is a trailing U+FFFD (a multi-byte character not complete yet).
    `push` returns (new text, stopped); once stopped, the stop string and everything after
    it are never returned. `flush` returns what is still held when generation ends.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str] | None = None) -> None:
        self.tok = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""
        self.shown = 0
        self.stopped = False

    def push(self, token: int) -> tuple[str, bool]:
        self.ids.append(token)
        self.text = self.tok.decode(self.ids)
        # A stop string can only begin in the held tail: everything shown was checked already.
        # The held tail is at most the longest stop string minus one character, plus one.
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.shown - longest)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            cut = max(min(hits), self.shown)
            piece, self.shown, self.stopped = self.text[self.shown:cut], cut, True
            return piece, True
        safe = len(self.text.rstrip("\ufffd"))  # a multi-byte character not complete yet
        held = max((k for s in self.stop for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = max(self.shown, min(safe, len(self.text) - held))
        piece, self.shown = self.text[self.shown:safe], safe
        return piece, False

    def flush(self) -> str:
        if self.stopped:
            return ""
        piece, self.shown = self.text[self.shown:], len(self.text)
        return piece


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                   repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
                   frequency_penalty: float = 0.0) -> None:
    """Raise ConfigError naming the first setting out of range (the API's bounds; the CLI's match)."""
    for ok, message in (
        (temperature >= 0, f"temperature: got {temperature}; must be >= 0 (0 = greedy)"),
        (top_k is None or top_k >= 1, f"top_k: got {top_k}; must be >= 1"),
        (top_p is None or 0 < top_p <= 1, f"top_p: got {top_p}; must be in (0, 1]"),
        (0 < repetition_penalty <= 100, f"repetition_penalty: got {repetition_penalty}; must be in (0, 100] "
                                        "(1 = off, > 1 discourages repeats)"),
        (-2 <= presence_penalty <= 2, f"presence_penalty: got {presence_penalty}; must be in -2..2"),
        (-2 <= frequency_penalty <= 2, f"frequency_penalty: got {frequency_penalty}; must be in -2..2"),
    ):
        if not ok:
            raise ConfigError(message)


def last_logits(model: nn.Module, idx: Tensor, cache: Any, start: int, vocab: int) -> Tensor:
    out = model(idx, kv_cache=cache, start_pos=start) if cache is not None else model(idx)
    return out[:, -1, :vocab].float()  # (1, V): padded ids sliced away, never sampled


def step_logits(model: nn.Module, nxt: Tensor, cache: Any, start: int, vocab: int) -> Tensor:
    """Logits (B, vocab) after one new token per row (nxt: (B, 1)) at `start`, extending `cache`.

    Through the compiled step when `compile_decoding` gave the model one.
    """
    step = decode_step_of(model)
    if step is None:
        return last_logits(model, nxt, cache, start, vocab)
    return step(nxt, cache, start)[:, -1, :vocab].float()
