"""Sampling from a language model: next-token choice, penalties, token streams, text streams.

Beside the decoders (the GPT uses `sample_next` in its own loop); it reads no run folder.
The decoding loop here works through the interface Ember's decoders share,
`model.new_cache(batch)` and `model(idx, kv_cache=, start_pos=)`, and falls back to
recomputing the window for models without a cache.

Penalties (applied to the logits before temperature, top-k and top-p):

- repetition penalty (Keskar et al. 2019, CTRL; Hugging Face's `repetition_penalty`): the
  logit of every token already in the context (prompt and completion) is divided by `p`
  when positive and multiplied by `p` when negative; `p` > 1 discourages repeats, 1 is off.
- presence and frequency penalties (OpenAI's definition): `logit -= presence * 1[count > 0]
  + frequency * count`, where `count` is how often the token occurs in the completion so far.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ember.errors import ConfigError
from ember.models.compiled_decoding import decode_step_of

__all__ = ["generate_text", "sample_next", "generate_ids", "step_logits", "penalize", "Penalties", "TextStream",
           "check_sampling"]


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


def _last_logits(model: nn.Module, idx: Tensor, cache: Any, start: int, vocab: int) -> Tensor:
    out = model(idx, kv_cache=cache, start_pos=start) if cache is not None else model(idx)
    return out[:, -1, :vocab].float()  # (1, V): padded ids sliced away, never sampled


def step_logits(model: nn.Module, nxt: Tensor, cache: Any, start: int, vocab: int) -> Tensor:
    """Logits (B, vocab) after one new token per row (nxt: (B, 1)) at `start`, extending `cache`.

    Through the compiled step when `compile_decoding` gave the model one.
    """
    step = decode_step_of(model)
    if step is None:
        return _last_logits(model, nxt, cache, start, vocab)
    return step(nxt, cache, start)[:, -1, :vocab].float()


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
    logits = _last_logits(base if cached else model, window, cache, 0, vocab_size)
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
            logits = _last_logits(base if cached else model, window, cache, 0, vocab_size)
            pos = window.shape[1]


def generate_text(model: nn.Module, tok: Any, info: Any, prompt: str, max_new_tokens: int = 200,
                  temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                  stop: list[str] | None = None, *, repetition_penalty: float = 1.0,
                  presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                  stop_ids: set[int] | None = None) -> Iterator[str]:
    """`generate` for an already loaded model and tokenizer (the server keeps them in memory).

    Ends after `max_new_tokens`, at the tokenizer's end-of-sequence id (`eos_id`, when it has
    one) or one of `stop_ids` (a chat template's end-of-turn token), or where a `stop` string
    appears (never included). The same seed gives the same text.
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
    for token in generate_ids(model, idx, max_new_tokens, block, vocab, temperature, top_k, top_p, gen,
                              pen if pen.active else None, ends or None):
        piece, stopped = stream.push(token)
        if piece:
            yield piece
        if stopped:
            return
    if tail := stream.flush():
        yield tail
