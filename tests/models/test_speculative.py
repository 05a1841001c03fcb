"""Speculative decoding: greedy text equal to the target's own, sampled text distributed as the target's.

Tiny random Llamas with an untied, scaled head (varied, confident greedy choices); the
drafts range from the target itself (every draft kept) to an unrelated model (almost none).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

from ember.errors import ConfigError
from ember.models.decoding import generate_ids, generate_text
from ember.models.llama import Llama, LlamaConfig
from ember.models.sampling import Penalties, filtered_probs
from ember.models.speculative import SpeculativeStats, speculative_ids

VOCAB, BLOCK = 50, 40
PROMPT = torch.tensor([[1, 2, 3, 4, 5]])


def _lively(seed: int, vocab: int = VOCAB, n_layer: int = 2, n_embd: int = 32, scale: float = 8.0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(LlamaConfig(n_layer=n_layer, n_head=4, n_kv_head=2, n_embd=n_embd, intermediate_size=64,
                              tie_embeddings=False), vocab, BLOCK).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(4 * scale)
        for p in model.layers.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model


@pytest.fixture(scope="module")
def target() -> Llama:
    return _lively(0)


@pytest.fixture(scope="module")
def drafts(target: Llama) -> dict[str, Llama]:
    noisy = copy.deepcopy(target)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))
    return {"itself": target, "noisy copy": noisy, "unrelated": _lively(1, n_layer=1)}


@pytest.mark.parametrize("new_tokens", [1, 5, 30, 60])  # 60 runs past the 40-token window
def test_greedy_tokens_are_the_targets_own(target: Llama, drafts: dict[str, Llama], new_tokens: int) -> None:
    plain = list(generate_ids(target, PROMPT, new_tokens, BLOCK, VOCAB, 0.0))
    assert len(set(plain)) > 3 or new_tokens < 5  # a varied text, not one repeated token
    kept = {}
    for (name, draft), k in itertools.product(drafts.items(), (1, 4, 7)):
        stats = SpeculativeStats()
        assert list(speculative_ids(target, draft, PROMPT, new_tokens, BLOCK, VOCAB, 0.0, draft_tokens=k,
                                    stats=stats)) == plain, (name, k)
        kept[name, k] = stats
    if new_tokens >= 30:
        assert kept["itself", 4].acceptance == 1.0  # its own drafts: each pass yields k + 1 tokens
        assert kept["itself", 4].target_passes < new_tokens / 4
        assert kept["unrelated", 4].acceptance < kept["noisy copy", 4].acceptance < 1.0


def test_penalties_and_stop_ids_apply_position_by_position(target: Llama, drafts: dict[str, Llama]) -> None:
    def penalties() -> Penalties:
        return Penalties(VOCAB, PROMPT[0].tolist(), repetition=1.3, frequency=0.5)

    plain = list(generate_ids(target, PROMPT, 30, BLOCK, VOCAB, 0.0, penalties=penalties()))
    assert list(speculative_ids(target, drafts["noisy copy"], PROMPT, 30, BLOCK, VOCAB, 0.0,
                                penalties=penalties())) == plain
    stop = {list(generate_ids(target, PROMPT, 30, BLOCK, VOCAB, 0.0))[9]}
    cut = list(generate_ids(target, PROMPT, 30, BLOCK, VOCAB, 0.0, stop_ids=stop))
    got = list(speculative_ids(target, drafts["noisy copy"], PROMPT, 30, BLOCK, VOCAB, 0.0, stop_ids=stop))
    assert got == cut and len(cut) < 30


def test_sampled_tokens_follow_the_targets_distribution() -> None:
    """The empirical law of two sampled tokens against the exact one, with and without a draft.

    Three tokens are written: the first comes from the prompt's pass, the second is checked
    against a draft (kept with probability p(d), else drawn from the residual).
    """
    vocab, prompt, n = 5, torch.tensor([[1, 2]]), 2000
    target, draft = _lively(3, vocab, 1, 16, 2.0), _lively(4, vocab, 1, 16, 2.0)
    with torch.no_grad():  # exact P(a, b) = p(a | prompt) p(b | prompt, a), at temperature 0.9 with top-k 4
        first = filtered_probs(target(prompt)[0, -1:, :vocab], 0.9, 4, None)[0]
        pairs = torch.cat([prompt.expand(vocab, -1), torch.arange(vocab)[:, None]], dim=1)  # (V, 3)
        second = filtered_probs(target(pairs)[:, -1, :vocab], 0.9, 4, None)  # (V, V)
    exact = (first[:, None] * second).flatten()  # (V * V,)

    def law(draw: object) -> torch.Tensor:
        counts = torch.zeros(vocab * vocab)
        gen = torch.Generator().manual_seed(0)
        for _ in range(n):
            a, b, _ = draw(gen)  # type: ignore[operator]
            counts[a * vocab + b] += 1
        return counts / n

    stats = SpeculativeStats()
    spec = law(lambda g: list(speculative_ids(target, draft, prompt, 3, BLOCK, vocab, 0.9, 4, None, g,
                                              draft_tokens=2, stats=stats)))
    plain = law(lambda g: list(generate_ids(target, prompt, 3, BLOCK, vocab, 0.9, 4, None, g)))
    tv_spec, tv_plain = (0.5 * (law_ - exact).abs().sum() for law_ in (spec, plain))
    # Sampling noise alone gives ~0.03 here; keeping every draft, or redrawing a rejected one
    # from p instead of the residual, gives 0.1 or more (checked by breaking the rule).
    assert tv_spec < 0.06 and tv_plain < 0.06
    assert stats.drafted == n and 0.2 < stats.acceptance < 0.8  # the draft is checked, and often refused


def test_a_draft_must_fit_the_target(target: Llama) -> None:
    with pytest.raises(ConfigError, match="vocabulary has 60 tokens"):
        list(speculative_ids(target, _lively(1, vocab=60), PROMPT, 3, BLOCK, VOCAB, 0.0))
    with pytest.raises(ConfigError, match="draft_tokens: got 0"):
        list(speculative_ids(target, target, PROMPT, 3, BLOCK, VOCAB, 0.0, draft_tokens=0))
    with pytest.raises(ConfigError, match="no KV cache"):
        list(speculative_ids(target, torch.nn.Linear(2, 2), PROMPT, 3, BLOCK, VOCAB, 0.0))
    short = Llama(LlamaConfig(n_layer=1, n_head=4, n_embd=32), VOCAB, BLOCK // 2)
    with pytest.raises(ConfigError, match="context is 20 tokens"):
        list(speculative_ids(target, short, PROMPT, 3, BLOCK, VOCAB, 0.0))


def test_generate_and_chat_with_an_int8_draft(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ember
    from ember.chat_session import ChatSession
    from ember.cli import main
    from ember.compress.weight_only import Int8WeightLinear
    from ember.generation import generate
    from tests.transfer.helpers import tiny_chat_llama

    run = tiny_chat_llama(tmp_path / "llama")
    plain = "".join(generate(run, "The capital", 24, temperature=0))
    assert "".join(generate(run, "The capital", 24, temperature=0, draft="int8")) == plain
    session = ChatSession(run, max_new_tokens=12, temperature=0, draft="int8", draft_tokens=3)
    assert any(isinstance(m, Int8WeightLinear) for m in session.draft.modules())
    assert "".join(session.reply("What is the capital of France?")) == ember.chat(
        run, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=12, temperature=0)
    assert main(["generate", str(run), "--prompt", "The capital", "--max-new-tokens", "24", "--temperature", "0",
                 "--draft", "int4"]) == 0
    assert capsys.readouterr().out == "The capital" + plain + "\n"  # an int4 draft: the same greedy text
    for bad, message in ((["--draft", str(tmp_path / "nowhere")], "nowhere"),
                         (["--draft-tokens", "17"], "--draft-tokens")):
        with pytest.raises(SystemExit) as exit_:
            raise SystemExit(main(["generate", str(run), "--prompt", "x", *bad]))
        assert exit_.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and message in err and "Traceback" not in err


def test_stats_count_what_generate_text_drafted(target: Llama) -> None:
    from ember.data.bundle import DataInfo

    class Chars:
        eos_id = None

        def encode(self, text: str) -> list[int]:
            return [ord(c) % VOCAB for c in text]

        def decode(self, ids: list[int]) -> str:
            return "".join(chr(97 + i % 26) for i in ids)

    info = DataInfo(input_kind="tokens", task="lm", input_shape=(BLOCK,), num_outputs=VOCAB,
                    extra={"vocab_size": VOCAB})
    stats = SpeculativeStats()
    text = "".join(generate_text(target, Chars(), info, "hello", 20, temperature=0, draft=target, stats=stats))
    assert text == "".join(generate_text(target, Chars(), info, "hello", 20, temperature=0))
    assert stats.accepted == stats.drafted > 0


def test_a_gpt_with_its_int8_copy_as_draft() -> None:
    from ember.compress.weight_only import to_weight_only
    from ember.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32), VOCAB, BLOCK).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            if p.dim() > 1:
                p.mul_(6)
    draft = to_weight_only(copy.deepcopy(gpt))
    plain = list(generate_ids(gpt, PROMPT, 50, BLOCK, VOCAB, 0.0))
    stats = SpeculativeStats()
    assert list(speculative_ids(gpt, draft, PROMPT, 50, BLOCK, VOCAB, 0.0, stats=stats)) == plain
    assert stats.accepted > 0


def test_the_cli_default_is_the_library_default() -> None:
    from ember.cli import build_parser
    from ember.models.speculative import DRAFT_TOKENS

    _, commands = build_parser()
    for name in ("generate", "chat"):
        assert commands[name].parse_args(["RUN"]).draft_tokens == DRAFT_TOKENS
