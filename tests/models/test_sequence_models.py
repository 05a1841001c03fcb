"""Sequence families against their references, plus the shared model contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models import build
from ember.models.attention import MultiHeadSelfAttention, attention_reference
from ember.models.gpt import GPT, GPTConfig, flops_per_token
from ember.models.rnn import LSTMCellReference, RNNConfig, lstm_reference
from ember.models.transformer import TransformerConfig
from tests.models.contract import check_model_contract

LM = DataInfo("lm", "tokens", (16,), 50, extra={"vocab_size": 50})
CLS = DataInfo("classification", "tokens", (12,), 4, extra={"vocab_size": 31, "pad_id": 30})
SERIES = DataInfo("forecast", "series", (10, 1), 2)
ADDING = DataInfo("regression", "series", (10, 2), 1)


def test_attention_reference_equals_sdpa_forward_and_backward() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, requires_grad=True) for _ in range(3))
    allowed = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    allowed[1, ..., 3:] = False  # padding in the second sequence
    for causal, mask in ((False, allowed), (True, None)):
        ours, _ = attention_reference(q, k, v, mask, causal=causal)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        torch.testing.assert_close(ours, ref)
        g_ours = torch.autograd.grad(ours.sum(), (q, k, v))
        g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
        for a, b in zip(g_ours, g_ref):
            torch.testing.assert_close(a, b)


def test_attention_module_reference_path_matches_fast_path() -> None:
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    fast = attn(x, pad)
    attn.keep_attention = True
    slow = attn(x, pad)
    torch.testing.assert_close(fast, slow)
    assert attn.last_attention.shape == (2, 4, 6, 6)
    assert torch.allclose(attn.last_attention[1, :, :, 4:], torch.zeros(1))  # no weight on padding


@pytest.mark.parametrize("causal", [False, True])
def test_attention_module_all_padding_rows_are_finite_and_paths_agree(causal: bool) -> None:
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(8, 2, causal=causal).eval()
    pad = torch.tensor([[True] * 5, [False] * 3 + [True] * 2])  # first sequence: padding only
    outs, grads = [], []
    for keep in (False, True):
        attn.keep_attention = keep
        x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
        y = attn(x, pad)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        assert torch.isfinite(y).all() and torch.isfinite(g).all()
        outs.append(y)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1])
    weights = attn.last_attention
    assert torch.all(weights[0] == 0)  # nothing to attend to: zero weights, not NaN
    if causal:
        assert torch.all(weights.triu(1) == 0)


def test_lstm_reference_equals_nn_lstm() -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, batch_first=True)
    cell = LSTMCellReference(3, 5)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(lstm, f"{name}_l0"))
    x = torch.randn(2, 7, 3, requires_grad=True)
    h0, c0 = torch.randn(2, 5), torch.randn(2, 5)
    ours, (h, c) = lstm_reference(x, cell, h0, c0)
    ref, (h_ref, c_ref) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(h, h_ref[0])
    torch.testing.assert_close(c, c_ref[0])
    loss = lambda out, cc: out.square().sum() + cc.sum()  # noqa: E731  (reaches c through both paths)
    g_ours = torch.autograd.grad(loss(ours, c), (x, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh))
    g_ref = torch.autograd.grad(loss(ref, c_ref), (x, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                                                   lstm.bias_hh_l0))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


CASES = [
    ("rnn-lm", RNNConfig(cell="lstm", hidden_size=16, embed_dim=8, dropout=0.3, num_layers=2), LM, (16, 50)),
    ("gru-cls", RNNConfig(cell="gru", hidden_size=16, embed_dim=8, bidirectional=True), CLS, (4,)),
    ("rnn-cls-mean", RNNConfig(cell="rnn", hidden_size=16, embed_dim=8, pooling="mean"), CLS, (4,)),
    ("lstm-forecast", RNNConfig(hidden_size=8, dropout=0.5), SERIES, (2,)),
    ("gru-adding", RNNConfig(cell="gru", hidden_size=8), ADDING, (1,)),
    ("transformer-cls", TransformerConfig(d_model=16, n_head=2, d_ff=32, dropout=0.3), CLS, (4,)),
    ("transformer-cls-learned", TransformerConfig(d_model=16, n_head=2, d_ff=32, positional="learned",
                                                  pooling="cls"), CLS, (4,)),
    ("transformer-series", TransformerConfig(d_model=16, n_head=2, d_ff=32), SERIES, (2,)),
    ("gpt", GPTConfig(n_layer=2, n_head=2, n_embd=16, dropout=0.3), LM, (16, 64)),
]


def _inputs(info: DataInfo, batch: int = 3) -> torch.Tensor:
    if info.input_kind == "tokens":
        x = torch.randint(0, int(info.extra["vocab_size"]) - 1, (batch, *info.input_shape))
        if "pad_id" in info.extra:
            x[0, 8:] = info.extra["pad_id"]
        return x
    return torch.randn(batch, *info.input_shape)


@pytest.mark.parametrize(("label", "cfg", "info", "shape"), CASES, ids=[c[0] for c in CASES])
def test_sequence_model_contract(label: str, cfg, info: DataInfo, shape: tuple, tmp_path: Path) -> None:  # noqa: ANN001
    check_model_contract(cfg, info, _inputs(info), (3, *shape), tmp_path)


@pytest.mark.parametrize("cfg", [RNNConfig(hidden_size=8, embed_dim=4), RNNConfig(hidden_size=8, embed_dim=4, pooling="max"),
                                 RNNConfig(hidden_size=8, embed_dim=4, bidirectional=True, pooling="mean"),
                                 TransformerConfig(d_model=16, n_head=2, d_ff=16, max_len=9),
                                 TransformerConfig(d_model=16, n_head=2, d_ff=16, max_len=9, pooling="cls",
                                                   positional="learned")])
def test_classifiers_ignore_padding(cfg) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    info_short = DataInfo("classification", "tokens", (6,), 3, extra={"vocab_size": 11, "pad_id": 10})
    model = build(cfg, info_short).eval()
    x = torch.tensor([[1, 2, 3, 10, 10, 10], [4, 5, 6, 7, 8, 9]])
    longer = torch.cat([x, torch.full((2, 3), 10)], dim=1)  # three more padding positions
    torch.testing.assert_close(model(longer), model(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(x[:1, :3]), model(x)[:1], rtol=1e-5, atol=1e-6)  # and less


def test_gpt_ties_pads_and_counts() -> None:
    model = build(GPTConfig(n_layer=1, n_head=2, n_embd=16), LM)
    assert model.lm_head.weight is model.wte.weight
    assert model.padded_vocab == 64 and model.vocab_size == 50
    small = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024), 50257, 1024)
    params = sum(p.numel() for p in small.parameters())
    assert 123_000_000 < params < 125_000_000
    # 6N + 12 L H Q T with N excluding position embeddings
    n = params - 1024 * 768
    assert flops_per_token(small) == 6 * n + 12 * 12 * 12 * 64 * 1024
    assert GPT.flops_per_token(small.cfg, n, 512) == 6 * n + 12 * 12 * 12 * 64 * 512


def test_gpt_cached_forward_in_chunks_equals_full_forward() -> None:
    torch.manual_seed(0)
    model = build(GPTConfig(n_layer=2, n_head=2, n_embd=16), LM).eval()
    x = torch.randint(0, 50, (2, 11))
    full = model(x)
    cache = model.new_cache(2)
    parts = [model(x[:, :6], cache), model(x[:, 6:7], cache), model(x[:, 7:], kv_cache=cache, start_pos=7)]
    assert cache.length == 11
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    # Rewinding: overwrite positions 7.. and get the same logits again.
    torch.testing.assert_close(model(x[:, 7:], kv_cache=cache, start_pos=7), full[:, 7:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.0, None, None), (0.9, 10, None), (1.2, None, 0.8)])
def test_gpt_cached_generation_equals_uncached(temperature: float, top_k: int | None, top_p: float | None) -> None:
    torch.manual_seed(0)
    model = build(GPTConfig(n_layer=2, n_head=2, n_embd=32), DataInfo("lm", "tokens", (12,), 50,
                                                                     extra={"vocab_size": 50})).eval()
    prompt = torch.randint(0, 50, (2, 5))
    runs = []
    for cache in (True, False):
        gen = torch.Generator().manual_seed(7)
        steps = model.generate(prompt, 30, temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=gen, use_cache=cache)
        runs.append(torch.cat(list(steps), dim=1).tolist())
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 30  # beyond block_size 12: the window slides
    assert all(t < 50 for row in runs[0] for t in row)


def test_gpt_never_samples_padded_vocab_and_stops() -> None:
    torch.manual_seed(0)
    model = build(GPTConfig(n_layer=1, n_head=2, n_embd=16), LM).eval()
    # Make the padding ids 50..63 by far the most likely, as an untrained tail could.
    model.lm_head.register_forward_hook(lambda m, i, out: out + (torch.arange(out.shape[-1]) >= 50) * 1e4)
    prompt = torch.randint(0, 50, (1, 3))
    for kwargs in ({"temperature": 0.0}, {"temperature": 1.0}, {"temperature": 2.0, "top_p": 0.99}):
        ids = [int(t) for t in model.generate(prompt, 20, generator=torch.Generator().manual_seed(0), **kwargs)]
        assert len(ids) == 20 and max(ids) < 50
    assert max(int(t) for t in model.generate(prompt, 20, temperature=0, vocab_size=10)) < 10
    greedy = [int(t) for t in model.generate(prompt, 20, temperature=0)]
    stop = greedy[4]
    first = greedy.index(stop)
    assert [int(t) for t in model.generate(prompt, 20, temperature=0, stop_ids={stop})] == greedy[: first + 1]
    assert [int(t) for t in model.generate(prompt, 20, temperature=0, stop_ids=lambda t: int(t) == stop)] == \
        greedy[: first + 1]


def test_gpt_top_k_one_is_greedy_and_top_p_respected() -> None:
    torch.manual_seed(0)
    model = build(GPTConfig(n_layer=1, n_head=2, n_embd=16), LM).eval()
    prompt = torch.randint(0, 50, (1, 4))
    greedy = [int(t) for t in model.generate(prompt, 10, temperature=0)]
    top1 = [int(t) for t in model.generate(prompt, 10, temperature=1.3, top_k=1,
                                           generator=torch.Generator().manual_seed(3))]
    assert greedy == top1
    tiny_p = [int(t) for t in model.generate(prompt, 10, temperature=1.0, top_p=1e-6,
                                             generator=torch.Generator().manual_seed(3))]
    assert tiny_p == greedy


def test_bad_family_task_pairs() -> None:
    with pytest.raises(ConfigError, match="language model"):
        build(GPTConfig(), CLS)
    with pytest.raises(ConfigError, match="cannot read the future"):
        build(RNNConfig(bidirectional=True), LM)
    with pytest.raises(ConfigError, match="token or series"):
        build(TransformerConfig(), DataInfo("classification", "image", (1, 8, 8), 10))
    with pytest.raises(ConfigError, match="divisible"):
        build(GPTConfig(n_embd=30, n_head=4), LM)


def test_gpt_attention_recording_path_equals_fast_path() -> None:
    torch.manual_seed(0)
    model = build(GPTConfig(n_layer=2, n_head=2, n_embd=16), LM).eval()
    x = torch.randint(0, 50, (2, 10))
    fast = model(x)
    for block in model.blocks:
        block.attn.keep_attention = True
    slow = model(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    weights = model.blocks[0].attn.last_attention
    assert weights.shape == (2, 2, 10, 10) and torch.all(weights.triu(1) == 0)


@pytest.mark.parametrize("cfg", [
    RNNConfig(cell="lstm", hidden_size=8, embed_dim=6, bidirectional=True, num_layers=2, pooling="mean"),
    RNNConfig(cell="gru", hidden_size=8, embed_dim=6, bidirectional=True, pooling="last"),
    RNNConfig(cell="rnn", hidden_size=8, embed_dim=6, pooling="max"),
])
def test_rnn_export_path_equals_packed_path(cfg) -> None:  # noqa: ANN001
    """The unpacked computation used under torch.export gives the packed model's numbers."""
    torch.manual_seed(0)
    model = build(cfg, CLS).eval()
    x = torch.randint(0, 30, (3, 12))
    x[0, 5:], x[1, 9:] = 30, 30
    with torch.no_grad():
        packed = model(x)
        unpacked = model.head(model._pool(model._unpacked(model.embed(x), x != 30), x))
    torch.testing.assert_close(unpacked, packed, rtol=1e-5, atol=1e-6)
