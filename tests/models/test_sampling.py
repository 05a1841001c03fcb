"""Sampling controls on an untrained tiny GPT (no run folder): penalties against a hand
computation, seeded determinism, stop strings split across tokens, EOS, and per-row
penalties inside the continuous-batching scheduler matching a solo decode."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from ember.errors import ConfigError
from ember.models.decoding import generate_ids, generate_text
from ember.models.gpt import GPT, GPTConfig
from ember.models.sampling import Penalties, TextStream, penalize
from ember.serve.continuous import GenRequest, Scheduler

VOCAB, BLOCK = 12, 16


class PieceTok:
    """Each id is a multi-character piece, so a stop string can span tokens."""

    pieces = ["", "ab", "cS", "TO", "Pd", "S", "T", "x", "\n", "yy", "z", "q"]
    eos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return [self.pieces.index(c) if c in self.pieces else 7 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


@pytest.fixture(scope="module")
def gpt() -> Iterator[GPT]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only wait on each other (and on a busy machine, long)
    torch.manual_seed(0)
    yield GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_multiple=8), VOCAB, BLOCK).eval()
    torch.set_num_threads(threads)


def test_penalties_change_the_logits_exactly_as_defined() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0]])
    seen = torch.tensor([[True, True, True, False, True]])  # prompt or completion
    counts = torch.tensor([[0, 2, 1, 0, 3]])  # completion only
    out = penalize(logits, seen, counts, repetition=2.0, presence=0.5, frequency=0.25)
    # CTRL: 2/2, -1*2, 0.5/2, -3 unseen, 4/2; then OpenAI: - 0.5*[c>0] - 0.25*c
    hand = [2 / 2, -1 * 2 - 0.5 - 0.25 * 2, 0.5 / 2 - 0.5 - 0.25, -3.0, 4 / 2 - 0.5 - 0.25 * 3]
    assert out.tolist() == [pytest.approx(hand)]
    assert logits.tolist() == [[2.0, -1.0, 0.5, -3.0, 4.0]]  # the input is untouched
    pen = Penalties(5, [0, 1], repetition=2.0, presence=0.5, frequency=0.25)
    for token in (1, 1, 2, 4, 4, 4):
        pen.update(token)
    assert torch.equal(pen.apply(logits), out)
    off = Penalties(5, [0, 1])
    assert not off.active and off.apply(logits) is logits


def test_seeded_decoding_is_deterministic_and_matches_the_gpt_loop(gpt: GPT) -> None:
    idx = torch.tensor([[1, 2, 3]])

    def ids(seed: int, **kw: object) -> list[int]:
        return list(generate_ids(gpt, idx, 24, BLOCK, VOCAB, 1.0, None, 0.9, torch.Generator().manual_seed(seed),
                                 **kw))  # type: ignore[arg-type]

    a, b, c = ids(5), ids(5), ids(6)
    assert a == b and a != c and len(a) == 24  # 24 > BLOCK: the window slides too
    own = [int(t) for t in gpt.generate(idx, 24, 1.0, None, 0.9, torch.Generator().manual_seed(5), vocab_size=VOCAB)]
    assert a == own  # the generic cache loop decodes exactly as the GPT's own
    pen = Penalties(VOCAB, [1, 2, 3], repetition=1.5, presence=1.0, frequency=0.5)
    pen2 = Penalties(VOCAB, [1, 2, 3], repetition=1.5, presence=1.0, frequency=0.5)
    assert ids(5, penalties=pen) == ids(5, penalties=pen2) != a
    greedy = list(generate_ids(gpt, idx, 30, BLOCK, VOCAB, 0.0))
    strong = list(generate_ids(gpt, idx, 30, BLOCK, VOCAB, 0.0, penalties=Penalties(VOCAB, [], frequency=2.0)))
    assert strong != greedy and len(set(strong)) >= len(set(greedy))  # a frequency penalty spreads picks
    cut = list(generate_ids(gpt, idx, 30, BLOCK, VOCAB, 0.0, stop_ids={greedy[3]}))
    assert cut == greedy[:greedy.index(greedy[3])]  # the EOS id ends the stream, unyielded


def test_stop_strings_split_across_tokens_are_never_emitted() -> None:
    tok = PieceTok()
    stream = TextStream(tok, ["STOP"])
    pieces = [stream.push(t) for t in (1, 2, 3, 4, 7)]  # "ab" "cS" "TO" "Pd": STOP spans three
    assert [p for p, _ in pieces[:3]] == ["ab", "c", ""] and pieces[3] == ("", True)
    assert stream.flush() == ""
    stream = TextStream(tok, ["STOP"])  # a held "ST" that never becomes STOP is shown later
    assert "".join(stream.push(t)[0] for t in (5, 6, 7)) + stream.flush() == "STx"
    stream = TextStream(tok, ["TOPd", "\n"])
    out = [stream.push(t) for t in (9, 8, 9)]
    assert out[0] == ("yy", False) and out[1] == ("", True)


def test_generate_text_stops_at_eos_and_checks_settings(gpt: GPT) -> None:
    info = SimpleNamespace(task="lm", extra={"vocab_size": VOCAB}, num_outputs=VOCAB, input_shape=(BLOCK,))
    tok = PieceTok()
    full = "".join(generate_text(gpt, tok, info, "ab", 20, temperature=0))
    assert full == "".join(generate_text(gpt, tok, info, "ab", 20, temperature=0, seed=9))
    ids = list(generate_ids(gpt, torch.tensor([tok.encode("ab")]), 20, BLOCK, VOCAB, 0.0))
    assert tok.decode(ids) == full
    tok.eos_id = ids[2]
    ended = "".join(generate_text(gpt, tok, info, "ab", 20, temperature=0))
    assert ended == tok.decode(ids[:ids.index(ids[2])])
    for bad in ({"repetition_penalty": 0.0}, {"presence_penalty": 2.5}, {"frequency_penalty": -3.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            list(generate_text(gpt, tok, info, "ab", 5, **bad))  # type: ignore[arg-type]


def test_scheduler_rows_keep_their_own_penalties(gpt: GPT) -> None:
    tok = PieceTok()
    prompts = ([1, 2], [3, 4, 5])
    settings = ({"presence_penalty": 1.5, "frequency_penalty": 0.5}, {"repetition_penalty": 3.0, "top_k": 4})

    def solo(ids: list[int], kw: dict[str, float]) -> list[int]:
        pen = Penalties(VOCAB, ids, kw.get("repetition_penalty", 1.0), kw.get("presence_penalty", 0.0),
                        kw.get("frequency_penalty", 0.0))
        top_k = kw.get("top_k")
        return list(generate_ids(gpt, torch.tensor([ids]), 10, BLOCK, VOCAB, 0.0, None if top_k is None else
                                 int(top_k), None, None, pen))

    async def batched() -> list[list[int]]:
        sched = Scheduler(gpt, tok, VOCAB, BLOCK, max_batch=2)
        reqs = [GenRequest(list(p), 10, 0.0, **kw) for p, kw in zip(prompts, settings)]  # type: ignore[arg-type]
        sched.start()
        try:
            for r in reqs:
                sched.submit(r)
            for r in reqs:
                while (await r.events.get())[0] != "done":
                    pass
        finally:
            sched.stop()
        return [r.completion_ids for r in reqs]

    assert asyncio.run(batched()) == [solo(list(p), kw) for p, kw in zip(prompts, settings)]
