"""GPT with per-row start positions (continuous batching): rows at different positions in
one batch give the logits each row gives alone, and stale cache entries are never read."""

from __future__ import annotations

import torch

from ember.data.bundle import DataInfo
from ember.models.gpt import GPT, GPTConfig

LM = DataInfo("lm", "tokens", (16,), 50, extra={"vocab_size": 50})


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16), 50, 16).eval()


def test_rows_at_different_positions_match_each_alone() -> None:
    model = _model()
    a, b = torch.randint(0, 50, (1, 9)), torch.randint(0, 50, (1, 4))
    alone = [model(a), model(b)]  # (1, T, V) each, no cache
    cache = model.new_cache(2, max_len=12)
    assert cache.k[0].shape == (2, 2, 12, 8)
    # Fill row 1 with garbage first: the stale entries beyond its new sequence must be masked.
    model(torch.randint(0, 50, (2, 10)), kv_cache=cache, start_pos=torch.tensor([0, 0]))
    first = model(torch.cat([a[:, :3], b[:, :3]]), kv_cache=cache, start_pos=torch.tensor([0, 0]))
    torch.testing.assert_close(first[0], alone[0][0, :3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(first[1], alone[1][0, :3], rtol=1e-5, atol=1e-5)
    # Decode one token per row at different positions, over a cache holding stale garbage.
    cache2 = model.new_cache(2)
    model(torch.randint(0, 50, (2, 12)), kv_cache=cache2, start_pos=torch.tensor([0, 0]))  # stale garbage
    model(torch.cat([a[:, :4], b[:, :4]]), kv_cache=cache2, start_pos=torch.tensor([0, 0]))
    for pos in range(4, 9):  # row 0 advances through a; row 1 re-feeds its last token at 3
        out = model(torch.stack([a[0, pos:pos + 1], b[0, 3:4]]), kv_cache=cache2,
                    start_pos=torch.tensor([pos, 3]))
        torch.testing.assert_close(out[0, 0], alone[0][0, pos], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[1, 0], alone[1][0, 3], rtol=1e-5, atol=1e-5)
    assert cache2.length == 12  # the longest row ever written


def test_tensor_positions_equal_int_positions_and_are_checked() -> None:
    import pytest

    model = _model()
    x = torch.randint(0, 50, (2, 6))
    c1, c2 = model.new_cache(2), model.new_cache(2)
    full = model(x, kv_cache=c1, start_pos=0)
    torch.testing.assert_close(model(x, kv_cache=c2, start_pos=torch.tensor([0, 0])), full, rtol=1e-5, atol=1e-5)
    for k1, k2 in zip(c1.k, c2.k, strict=True):
        torch.testing.assert_close(k1, k2)
    with pytest.raises(ValueError, match="block_size"):
        model(x, kv_cache=c2, start_pos=torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="shape"):
        model(x, kv_cache=c2, start_pos=torch.tensor([0]))
