"""Continuous batching for language models: a fixed number of slots decoding together.

A scheduler thread owns one KV cache of `max_batch` rows. Each step it (1) admits waiting
requests into free slots: the prompt is prefilled on a batch-1 cache and its K/V copied into
the slot's row, (2) runs ONE forward pass over every occupied row, each row at its own
position (`model(idx, kv_cache=view, start_pos=LongTensor)`), (3) samples one token per row
with that request's own settings (temperature, top-k, top-p, seed, and its repetition,
presence and frequency penalties over its own tokens), checks its stop strings (held back
until they cannot be the start of one, never emitted) and limits, and frees
the slot of every finished or cancelled request at once, so a waiting one joins next step.

Why prefill on a batch-1 cache and copy: prompts have different lengths, so a batched
in-place prefill would need padding or one forward per row anyway; a separate cache of
exactly the prompt's length costs one copy of its K/V (small next to the prefill itself)
and never touches the rows that are decoding. The scheduler uses only the model interface
shared by Ember's decoders: `new_cache(batch, max_len)`, a cache whose `k[layer]`/`v[layer]`
are (B, H, T_max, hd) tensors, and `model(idx, kv_cache=, start_pos=int | LongTensor)`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ember.models.sampling import Penalties, TextStream, sample_next

__all__ = ["Scheduler", "GenRequest", "QueueFull"]


class QueueFull(Exception):
    """Every slot is busy and the waiting queue holds `max_queue` requests."""


@dataclass
class GenRequest:
    """One generation: prompt ids, sampling settings, and where its events go.

    Events put on `events` (from the scheduler thread, via the loop): ("text", str) pieces,
    then ("done", finish_reason) with finish_reason "stop" or "length".
    """

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    top_k: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False
    completion_ids: list[int] = field(default_factory=list)
    # Scheduler-side state
    _pos: int = 0
    _last: int = 0
    _gen: torch.Generator | None = None
    _pen: Penalties | None = None
    _text: TextStream | None = None

    def cancel(self) -> None:
        """Free the slot at the next step (the client went away)."""
        self.cancelled = True

    def _emit(self, kind: str, value: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Scheduler:
    """Slots over one batched KV cache, driven by a daemon thread.

    Args:
        model: a decoder with `new_cache` and per-row `start_pos` (see the module docstring).
        tokenizer: `encode`/`decode`; its `eos_id` (if any) ends a sequence.
        vocab_size: real ids (the rest of the logits is padding, never sampled).
        max_batch: slots decoding at once. max_queue: requests waiting for a slot; more: QueueFull.
        max_len: positions per sequence (prompt + completion); the model's block_size.
    """

    def __init__(self, model: Any, tokenizer: Any, vocab_size: int, max_len: int, max_batch: int = 8,
                 max_queue: int = 64, eos_ids: set[int] | None = None) -> None:
        self.model = model.eval()
        params = getattr(model, "parameters", None)  # sampling state lives beside the logits
        first = next(params(), None) if callable(params) else None
        self.device = first.device if first is not None else torch.device("cpu")
        self.tok = tokenizer
        self.vocab = vocab_size
        self.max_len = max_len
        self.max_batch = max_batch
        self.max_queue = max_queue
        eos = getattr(tokenizer, "eos_id", None)
        self.eos = set(eos_ids or ()) | ({int(eos)} if isinstance(eos, int) else set())
        self.slots: list[GenRequest | None] = [None] * max_batch
        self.waiting: deque[GenRequest] = deque()
        self.cond = threading.Condition()
        self.stopping = False
        self.steps = 0
        self.cache: Any = None
        self.thread: threading.Thread | None = None

    @property
    def active(self) -> int:
        """Slots in use right now."""
        return sum(s is not None for s in self.slots)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="ember-continuous", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, req: GenRequest) -> None:
        """Queue `req`; raises QueueFull when every slot is busy and the queue is full."""
        req.loop = asyncio.get_running_loop()
        # Keep room for at least one new token; a longer prompt keeps its most recent ids.
        req.prompt_ids = (req.prompt_ids or [0])[-(self.max_len - 1):]
        seed = req.seed if req.seed is not None else int(torch.randint(0, 2**62, (1,)))
        req._gen = torch.Generator(device=self.device.type).manual_seed(seed)
        pen = Penalties(self.vocab, req.prompt_ids, req.repetition_penalty, req.presence_penalty,
                        req.frequency_penalty, self.device)
        req._pen = pen if pen.active else None
        req._text = TextStream(self.tok, req.stop)
        with self.cond:
            if self.active >= self.max_batch and len(self.waiting) >= self.max_queue:
                raise QueueFull
            self.waiting.append(req)
            self.cond.notify_all()

    # --- scheduler thread -------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            self.cache = self.model.new_cache(self.max_batch, max_len=self.max_len)
            while True:
                with self.cond:
                    while not self.stopping and not self.waiting and self.active == 0:
                        self.cond.wait()
                    if self.stopping:
                        return
                    admitted = self._take_waiting()
                try:
                    for slot, req in admitted:
                        self._prefill(slot, req)
                    self._step()
                except Exception as exc:  # noqa: BLE001  (every request in flight gets the error)
                    for i, req in enumerate(self.slots):
                        if req is not None:
                            req._emit("error", str(exc))
                            self.slots[i] = None

    def _take_waiting(self) -> list[tuple[int, GenRequest]]:
        out = []
        for i in range(self.max_batch):  # lowest free slots first: the batch stays compact
            while self.slots[i] is None and self.waiting:
                req = self.waiting.popleft()
                if req.cancelled:
                    continue
                self.slots[i] = req
                out.append((i, req))
        return out

    def _prefill(self, slot: int, req: GenRequest) -> None:
        ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
        t = ids.shape[1]
        one = self.model.new_cache(1, max_len=t)
        logits = self.model(ids, kv_cache=one, start_pos=0)[:, -1, :self.vocab].float()  # (1, V)
        for layer in range(len(self.cache.k)):
            self.cache.k[layer][slot, :, :t] = one.k[layer][0, :, :t]
            self.cache.v[layer][slot, :, :t] = one.v[layer][0, :, :t]
        req._pos = t
        self._accept(slot, req, logits)

    def _step(self) -> None:
        rows = [i for i, s in enumerate(self.slots) if s is not None]
        if not rows:
            return
        hi = rows[-1] + 1  # rows [0, hi) run; a free row among them decodes a dummy token
        view = copy.copy(self.cache)  # the same buffers, the first hi rows (views write through)
        view.k = [k[:hi] for k in self.cache.k]
        view.v = [v[:hi] for v in self.cache.v]
        idx = torch.zeros(hi, 1, dtype=torch.long)
        pos = torch.zeros(hi, dtype=torch.long)
        for i in rows:
            req = self.slots[i]
            assert req is not None
            idx[i, 0], pos[i] = req._last, req._pos
        logits = self.model(idx.to(self.device), kv_cache=view, start_pos=pos.to(self.device))[:, -1, :self.vocab].float()  # (hi, V)
        self.steps += 1
        for i in rows:
            req = self.slots[i]
            assert req is not None
            req._pos += 1
            self._accept(i, req, logits[i:i + 1])

    def _accept(self, slot: int, req: GenRequest, logits: Tensor) -> None:
        """Sample row `slot`'s next token, stream its text, free the slot when it is done."""
        if req.cancelled:
            self.slots[slot] = None
            return
        top_p = req.top_p if req.top_p is not None and req.top_p < 1 else None
        if req._pen is not None:
            logits = req._pen.apply(logits)
        nxt = int(sample_next(logits, req.temperature, req.top_k, top_p, req._gen))
        assert req._text is not None
        reason = None
        if nxt in self.eos:
            reason = "stop"
        else:
            req.completion_ids.append(nxt)
            req._last = nxt
            if req._pen is not None:
                req._pen.update(nxt)
            piece, stopped = req._text.push(nxt)
            if piece:
                req._emit("text", piece)
            if stopped:
                reason = "stop"
            elif len(req.completion_ids) >= req.max_tokens or req._pos >= self.max_len:
                if tail := req._text.flush():
                    req._emit("text", tail)
                reason = "length"
        if reason is not None:
            req._emit("done", reason)
            self.slots[slot] = None
