"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a draft writes, the target checks.

A decoding step of a language model on a CPU is bound by reading its weights: one row of
activations or five cost about the same. A small draft model (here typically the same
model quantized to int8 or int4, 2-3x faster) writes `k` tokens one by one; the target then
reads all k in one forward pass from the token before them, which gives its own next-token
distribution after every prefix. The drafts it agrees with are kept, and the position of the
first disagreement gets the target's own token, so each target pass yields 1 to k + 1 tokens.

Acceptance rule, position by position (p: the target's distribution after the penalties,
temperature, top-k and top-p; d: the draft's token, its greedy choice):

- greedy (temperature 0): keep d while d = argmax p; the first mismatch emits argmax p. The
  text is the target's own greedy text; only the rounding of a (k+1)-row product, which can
  differ from a 1-row one in the last bits, could flip a near tie.
- sampling: keep d with probability p(d); on a rejection draw from p with d removed and
  renormalised. With a draft that proposes one token for sure (q = one-hot), this is the
  rejection rule of Leviathan et al., min(1, p/q) and norm(max(0, p - q)), so every token
  is distributed exactly as the target alone would sample it (not the same draws: a seed
  gives other text than without a draft).

When no further k + 1 positions fit the context window the target decodes alone, recomputing
the last `block_size` tokens as `decoding.generate_ids` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ember.errors import ConfigError
from ember.models.compiled_decoding import decode_step_of
from ember.models.sampling import Penalties, filtered_probs, step_logits

__all__ = ["DRAFT_TOKENS", "SpeculativeStats", "speculative_ids", "check_draft"]

DRAFT_TOKENS = 8  # tokens drafted per check by default: the best of 4/6/8/10 with an int4 draft of SmolLM2


@dataclass
class SpeculativeStats:
    """What a speculative stream did: drafted and accepted tokens, target forward passes."""

    drafted: int = 0
    accepted: int = 0
    target_passes: int = 0

    @property
    def acceptance(self) -> float:
        """Share of drafted tokens the target kept."""
        return self.accepted / self.drafted if self.drafted else 0.0


def check_draft(target: nn.Module, draft: nn.Module, vocab: int, block_size: int, draft_tokens: int) -> None:
    """Raise ConfigError when `draft` cannot draft for `target` (no cache, other vocabulary, bad k)."""
    if not 1 <= draft_tokens <= 16:
        raise ConfigError(f"draft_tokens: got {draft_tokens}; must be in 1..16")
    for role, model in (("model", target), ("draft", draft)):
        if not hasattr(model, "new_cache"):
            raise ConfigError(f"speculative decoding: the {role} ({type(model).__name__}) has no KV cache")
    if int(getattr(draft, "block_size", 0)) < block_size:
        raise ConfigError(f"draft: its context is {getattr(draft, 'block_size', 0)} tokens, the model's {block_size}; "
                          "a draft needs at least the model's context")
    draft_vocab = int(getattr(draft, "vocab_size", 0))
    if draft_vocab != vocab:
        raise ConfigError(f"draft: its vocabulary has {draft_vocab} tokens, the model's {vocab}; "
                          "a draft must share the model's tokenizer")


def _logits(model: nn.Module, ids: Tensor, cache: object, start: int, vocab: int) -> Tensor:
    """Logits (T, vocab) after each of `ids` (1, T) at `start`, extending `cache`; compiled if given."""
    step = decode_step_of(model)
    out = step(ids, cache, start) if step is not None else model(ids, kv_cache=cache, start_pos=start)
    return out[0, :, :vocab].float()


def _choose(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator | None, proposed: int | None) -> tuple[int, bool]:
    """The token at one position given the target's `logits` (V,), and whether it is `proposed`."""
    if temperature == 0:
        token = int(logits.argmax())
        return token, token == proposed
    probs = filtered_probs(logits[None], temperature, top_k, top_p)[0]  # (V,)
    if proposed is not None:
        u = torch.rand((), generator=generator, device=probs.device)
        if u < probs[proposed]:
            return proposed, True
        probs = probs.clone()
        probs[proposed] = 0.0  # the residual max(0, p - q) for a one-hot q
        if float(probs.sum()) <= 0:
            return proposed, True  # p was all on the proposal (then u < 1 = p(d) always held)
    return int(torch.multinomial(probs, 1, generator=generator)), False


@torch.no_grad()
def speculative_ids(target: nn.Module, draft: nn.Module, idx: Tensor, max_new_tokens: int, block_size: int,
                    vocab_size: int, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, generator: torch.Generator | None = None,
                    penalties: Penalties | None = None, stop_ids: set[int] | None = None,
                    draft_tokens: int = DRAFT_TOKENS, stats: SpeculativeStats | None = None) -> Iterator[int]:
    """Token ids of one sequence (idx: (1, T)), as `decoding.generate_ids` yields them, drafted `draft_tokens` at a time.

    Both models need a KV cache and the same vocabulary (`check_draft`); the draft must
    accept positions up to `block_size`. `stats`, when given, is filled in as the stream goes.
    """
    check_draft(target, draft, vocab_size, block_size, draft_tokens)
    stats = stats if stats is not None else SpeculativeStats()
    device = idx.device
    seq = [int(t) for t in idx[0, -block_size:]]
    cache, draft_cache = target.new_cache(1), draft.new_cache(1)
    # The target's cache holds every committed token but the last; the draft's holds `drafted_upto`.
    pending = _logits(target, torch.tensor([seq], device=device), cache, 0, vocab_size)[-1]
    stats.target_passes += 1
    drafted_upto, emitted = 0, 0
    while emitted < max_new_tokens:
        if pending is not None:  # the prompt's next token: no draft to check yet
            rows, drafts = pending[None], []
            pending = None
        else:
            k = min(draft_tokens, block_size - len(seq), max_new_tokens - emitted - 1)
            if k < 0:  # the window is full: positions shift from here on
                yield from _sliding(target, seq, max_new_tokens - emitted, block_size, vocab_size, temperature,
                                    top_k, top_p, generator, penalties, stop_ids)
                return
            drafts = _draft(draft, draft_cache, seq, drafted_upto, k, vocab_size) if k else []
            ids = torch.tensor([[seq[-1], *drafts]], device=device)  # (1, k + 1)
            rows = _logits(target, ids, cache, len(seq) - 1, vocab_size)  # (k + 1, V)
            stats.target_passes += 1
            stats.drafted += len(drafts)
        accepted = 0
        for i, row in enumerate(rows):
            if penalties is not None:
                row = penalties.apply(row[None])[0]
            proposed = drafts[i] if i < len(drafts) else None
            token, kept = _choose(row, temperature, top_k, top_p, generator, proposed)
            if stop_ids and token in stop_ids:
                return
            yield token
            emitted += 1
            seq.append(token)
            if penalties is not None:
                penalties.update(token)
            if not kept:
                break
            accepted += 1
        stats.accepted += accepted
        cache.length = len(seq) - 1  # the rejected drafts' entries are stale, overwritten next pass
        drafted_upto = min(drafted_upto if not drafts else len(seq) - 1 - (accepted == len(drafts)), len(seq) - 1)
        draft_cache.length = drafted_upto


def _draft(draft: nn.Module, cache: object, seq: list[int], upto: int, k: int, vocab: int) -> list[int]:
    """The draft's `k` greedy tokens after `seq`, its cache first brought up to date from `upto`."""
    device = next(draft.parameters()).device
    tokens: list[int] = []
    pos = upto
    feed = seq[upto:]  # committed tokens the draft has not seen yet (at least the last one)
    if len(feed) > 2:  # the prompt: one pass, as a prompt goes (not the compiled one-token step)
        draft(torch.tensor([feed[:-1]], device=device), kv_cache=cache, start_pos=pos)
        pos += len(feed) - 1
    elif len(feed) == 2:  # the last draft after every draft was kept
        step_logits(draft, torch.tensor([feed[:1]], device=device), cache, pos, vocab)
        pos += 1
    last = feed[-1]
    for _ in range(k):
        logits = step_logits(draft, torch.tensor([[last]], device=device), cache, pos, vocab)
        pos += 1
        last = int(logits.argmax())
        tokens.append(last)
    return tokens


def _sliding(target: nn.Module, seq: list[int], n: int, block_size: int, vocab: int, temperature: float,
             top_k: int | None, top_p: float | None, generator: torch.Generator | None,
             penalties: Penalties | None, stop_ids: set[int] | None) -> Iterator[int]:
    """The target alone, each step on the last `block_size` tokens (the window is full)."""
    device = next(target.parameters()).device
    for _ in range(n):
        window = torch.tensor([seq[-block_size:]], device=device)
        row = target(window)[0, -1, :vocab].float()
        if penalties is not None:
            row = penalties.apply(row[None])[0]
        token, _ = _choose(row, temperature, top_k, top_p, generator, None)
        if stop_ids and token in stop_ids:
            return
        yield token
        seq.append(token)
        if penalties is not None:
            penalties.update(token)
