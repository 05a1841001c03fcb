"""Pruning: unstructured masks that survive fine-tuning, structured pruning that shrinks every family.

The strongest structured check: a model whose doomed units are dead (every weight tied to
them zero) gives exactly the same outputs after pruning, so the kept weights are the right
ones, in the right places (gate blocks, q/k/v blocks, flattened conv channels, directions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from ember.compress.prune import (
    make_permanent,
    prune_structured,
    prune_unstructured,
    rebuild_structure,
    sparsity_of,
)
from ember.compress.prune_units import keep_count
from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models import build, count_parameters
from ember.models.cnn import CNNConfig
from ember.models.gpt import GPTConfig
from ember.models.mlp import MLPConfig
from ember.models.rnn import RNNConfig
from ember.models.transformer import TransformerConfig
from ember.weights import load_weights, save_weights

LM = DataInfo("lm", "tokens", (16,), 50, extra={"vocab_size": 50})
CLS = DataInfo("classification", "tokens", (12,), 4, extra={"vocab_size": 31, "pad_id": 30})
SERIES = DataInfo("forecast", "series", (10, 2), 2)
IMAGE = DataInfo("classification", "image", (1, 8, 8), 10)
TABLE = DataInfo("classification", "tabular", (4,), 3)


def _tokens() -> Tensor:
    x = torch.randint(0, 30, (5, 12), generator=torch.Generator().manual_seed(0))
    x[1, 7:] = 30  # padding on the right
    x[3, 3:] = 30
    return x


def _example(info: DataInfo) -> Tensor:
    g = torch.Generator().manual_seed(0)
    if info is LM:
        return torch.randint(0, 50, (3, 16), generator=g)
    if info is CLS:
        return _tokens()
    return torch.randn(5, *info.input_shape, generator=g)


FAMILIES: dict[str, tuple[Any, DataInfo]] = {
    "mlp": (MLPConfig(hidden=[32, 16], batch_norm=True, dropout=0.1), TABLE),
    "cnn": (CNNConfig(channels=[8, 16], hidden=[32], dropout=0.1), IMAGE),
    "lstm": (RNNConfig(cell="lstm", hidden_size=16, num_layers=2, bidirectional=True, embed_dim=8), CLS),
    "gru-lm": (RNNConfig(cell="gru", hidden_size=32, embed_dim=8), LM),
    "rnn-series": (RNNConfig(cell="rnn", hidden_size=16, num_layers=2, pooling="mean"), SERIES),
    "transformer": (TransformerConfig(d_model=16, n_head=4, n_layer=2, d_ff=32, pooling="cls"), CLS),
    "gpt": (GPTConfig(n_layer=2, n_head=4, n_embd=32, vocab_multiple=8), LM),
}


def _build(label: str, seed: int = 0) -> nn.Module:
    cfg, info = FAMILIES[label]
    torch.manual_seed(seed)
    return build(cfg, info)


def _train_steps(model: nn.Module, x: Tensor, steps: int = 3) -> None:
    """A few AdamW steps (weight decay included) on an arbitrary loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(x).float().pow(2).mean().backward()
        opt.step()
    model.eval()


# ----------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("label", list(FAMILIES))
def test_unstructured_reaches_sparsity_keeps_zeros_and_folds(label: str, tmp_path: Path) -> None:
    model, x = _build(label), _example(FAMILIES[label][1])
    stats = prune_unstructured(model, 0.6)
    assert abs(stats["sparsity"] - 0.6) <= 1 / stats["total"] and stats["pruned"] == round(0.6 * stats["total"])
    _train_steps(model, x)  # gradients reach weight_orig; the mask keeps the zeros
    assert sparsity_of(model) >= stats["sparsity"]
    model(x)
    expected = model(x)
    make_permanent(model)
    assert sparsity_of(model) >= stats["sparsity"]
    assert not any(k.endswith(("_orig", "_mask")) for k in model.state_dict())
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    save_weights(model, tmp_path / "m.safetensors")  # plain names: loads into a model built from the config
    again = _build(label, seed=1).eval()
    load_weights(again, tmp_path / "m.safetensors")
    torch.testing.assert_close(again(x), expected, rtol=0, atol=0)


def test_unstructured_tied_gpt_weights_share_one_mask_and_stay_tied() -> None:
    model, x = _build("gpt"), _example(LM)
    prune_unstructured(model, 0.5)
    _train_steps(model, x, steps=2)
    model(x)  # the pre-hooks recompute weight = orig * mask
    assert torch.equal(model.lm_head.weight, model.wte.weight)
    assert (model.lm_head.weight == 0).any()
    make_permanent(model)
    assert model.lm_head.weight is model.wte.weight


def test_unstructured_is_global_and_can_be_repeated() -> None:
    model = _build("cnn")
    first = prune_unstructured(model, 0.5)
    second = prune_unstructured(model, 0.75)  # a total target, not 75% of what is left
    assert second["sparsity"] == pytest.approx(0.75, abs=1 / second["total"])
    per_layer = [float((m.weight == 0).float().mean()) for m in model.modules() if hasattr(m, "weight_mask")]
    assert max(per_layer) - min(per_layer) > 0.05  # global: layers end at different sparsities
    with pytest.raises(ConfigError, match="already masked"):
        prune_unstructured(model, 0.5)
    assert first["total"] == second["total"]


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_fractions_out_of_range_are_config_errors(value: float) -> None:
    model = _build("mlp")
    with pytest.raises(ConfigError, match="sparsity"):
        prune_unstructured(model, value)
    with pytest.raises(ConfigError, match="ratio"):
        prune_structured(model, value, _example(TABLE))


# ------------------------------------------------------------------------------- structured


@pytest.mark.parametrize("label", list(FAMILIES))
def test_structured_shrinks_every_family_and_rebuilds_exactly(label: str, tmp_path: Path) -> None:
    cfg, info = FAMILIES[label]
    model, x = _build(label).eval(), _example(info)
    before = count_parameters(model)
    small, record = prune_structured(model, 0.5, x)
    assert count_parameters(model) == before  # the input model is left alone
    assert record["params_before"] == before and record["params_after"] == count_parameters(small)
    assert record["params_after"] < 0.7 * before, record
    small.eval()
    expected = small(x)
    assert expected.shape == model(x).shape
    _train_steps(small, x, steps=1)  # trains as is (the fine-tuning that follows)
    expected = small(x)
    save_weights(small, tmp_path / "small.safetensors")
    record = json.loads(json.dumps(record))  # what a run directory keeps
    fresh = rebuild_structure(_build(label, seed=1), record).eval()
    load_weights(fresh, tmp_path / "small.safetensors")
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


def test_structured_record_names_what_was_removed() -> None:
    _, gpt = prune_structured(_build("gpt"), 0.5, _example(LM))
    assert gpt["attributes"] == {f"blocks.{i}.attn": {"n_head": 2} for i in range(2)}
    assert gpt["modules"]["blocks.0.mlp.c_fc"]["out_features"] == 64
    assert not any(p.startswith(("wte", "wpe", "lm_head")) for p in gpt["modules"])  # vocab, width, tie kept
    _, lstm = prune_structured(_build("lstm"), 0.5, _tokens())
    assert lstm["modules"]["rnn"]["hidden_size"] == 8 and lstm["modules"]["head"]["in_features"] == 16
    _, cnn = prune_structured(_build("cnn"), 0.5, _example(IMAGE))
    assert {p: m["type"] for p, m in cnn["modules"].items()} == {
        "features.0": "Conv2d", "features.1": "BatchNorm2d", "features.4": "Conv2d",
        "features.5": "BatchNorm2d", "head.2": "Linear", "head.5": "Linear"}
    assert cnn["modules"]["head.5"]["out_features"] == 10  # classes kept


def test_pruned_gpt_generates_the_same_with_and_without_cache() -> None:
    small, _ = prune_structured(_build("gpt"), 0.5, _example(LM))
    small.eval()
    prompt = torch.tensor([[1, 2, 3]])
    cached = torch.cat(list(small.generate(prompt, 10, temperature=0.0)), dim=1)
    plain = torch.cat(list(small.generate(prompt, 10, temperature=0.0, use_cache=False)), dim=1)
    assert torch.equal(cached, plain)


def test_pruned_lstm_unpacked_path_matches_packed() -> None:
    small, _ = prune_structured(_build("lstm"), 0.5, _tokens())
    small.eval()
    x = _tokens()
    with torch.no_grad():
        out = small._unpacked(small.embed(x), x != 30)  # the path torch.export traces
        torch.testing.assert_close(small.head(small._pool(out, x)), small(x))


def test_structured_refuses_masks_unknown_models_and_foreign_records() -> None:
    model = _build("mlp")
    prune_unstructured(model, 0.3)
    with pytest.raises(ConfigError, match="make_permanent"):
        prune_structured(model, 0.5, _example(TABLE))
    with pytest.raises(ConfigError, match="supports"):
        prune_structured(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 0.5, torch.randn(2, 4))
    _, record = prune_structured(_build("cnn"), 0.5, _example(IMAGE))
    with pytest.raises(ConfigError, match="is a"):
        rebuild_structure(_build("mlp"), {**record, "modules": {"net.1": record["modules"]["features.0"]}})
    with pytest.raises(ConfigError, match="format"):
        rebuild_structure(_build("cnn"), {"modules": {}})


# ----------------------------------------------- dead units go, and nothing else changes


def _dead(n: int, seed: int) -> Tensor:
    """The n - keep_count(n, 0.5) units to kill, at random positions."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: n - keep_count(n, 0.5)]


def _zero(t: Tensor, idx: Tensor, dim: int = 0) -> None:
    with torch.no_grad():
        t.index_fill_(dim, idx, 0.0)


def _kill_hidden(fc1: nn.Linear, fc2: nn.Module, seed: int, norm: nn.Module | None = None,
                 per_unit: int = 1) -> None:
    """Kill neurons between fc1 and fc2 (each neuron feeding `per_unit` columns of fc2)."""
    idx = _dead(fc1.out_features, seed)
    for t in (fc1.weight, fc1.bias, *((norm.weight, norm.bias) if norm is not None else ())):
        _zero(t, idx)
    cols = (idx[:, None] * per_unit + torch.arange(per_unit)).flatten()
    _zero(fc2.weight, cols, dim=1)


def _kill_heads(qkv: nn.Linear, proj: nn.Linear, n_head: int, seed: int) -> None:
    width = qkv.out_features // 3
    hd = width // n_head
    dims = (_dead(n_head, seed)[:, None] * hd + torch.arange(hd)).flatten()
    for block in range(3):
        _zero(qkv.weight, block * width + dims)
        _zero(qkv.bias, block * width + dims)
    _zero(proj.weight, dims, dim=1)


def _kill_rnn(model: nn.Module) -> None:
    rnn, h = model.rnn, model.rnn.hidden_size
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    suffixes = ["", "_reverse"] if rnn.bidirectional else [""]
    for layer in range(rnn.num_layers):
        for d, s in enumerate(suffixes):
            idx = _dead(h, 10 * layer + d)
            rows = (torch.arange(gates)[:, None] * h + idx).flatten()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                _zero(getattr(rnn, f"{name}_l{layer}{s}"), rows)
            _zero(getattr(rnn, f"weight_hh_l{layer}{s}"), idx, dim=1)
            readers = [model.head.weight] if layer + 1 == rnn.num_layers else [
                getattr(rnn, f"weight_ih_l{layer + 1}{t}") for t in suffixes]
            for w in readers:
                _zero(w, d * h + idx, dim=1)


def _kill(label: str, model: nn.Module) -> None:
    if label == "mlp":
        net = model.net  # Flatten | Linear BN ReLU Dropout | Linear BN ReLU Dropout | Linear
        _kill_hidden(net[1], net[5], 1, norm=net[2])
        _kill_hidden(net[5], net[9], 2, norm=net[6])
    elif label == "cnn":
        f, head = model.features, model.head  # (Conv BN ReLU Pool) x 2 | Flatten Dropout Linear ReLU Dropout Linear
        _kill_conv(f[0], f[1], f[4], 1)
        _kill_conv(f[4], f[5], head[2], 2, per_unit=4)  # 16 channels x 2x2 map feed the flattened head
        _kill_hidden(head[2], head[5], 3)
    elif label == "transformer" or label == "gpt":
        for i, block in enumerate(model.blocks):
            if label == "transformer":
                _kill_heads(block.attn.qkv, block.attn.proj, block.attn.n_head, i)
                _kill_hidden(block.ff[0], block.ff[2], 10 + i)
            else:
                _kill_heads(block.attn.c_attn, block.attn.c_proj, block.attn.n_head, i)
                _kill_hidden(block.mlp.c_fc, block.mlp.c_proj, 10 + i)
    else:
        _kill_rnn(model)


def _kill_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, reader: nn.Module, seed: int, per_unit: int = 1) -> None:
    """Kill output channels of a bias-free conv followed by BatchNorm."""
    idx = _dead(conv.out_channels, seed)
    for t in (conv.weight, bn.weight, bn.bias):
        _zero(t, idx)
    _zero(reader.weight, (idx[:, None] * per_unit + torch.arange(per_unit)).flatten(), dim=1)


@pytest.mark.parametrize("label", list(FAMILIES))
def test_pruning_dead_units_leaves_outputs_unchanged(label: str) -> None:
    model, x = _build(label).eval(), _example(FAMILIES[label][1])
    _kill(label, model)
    with torch.no_grad():
        expected = model(x)
        small, record = prune_structured(model, 0.5, x)
        torch.testing.assert_close(small.eval()(x), expected, rtol=1e-5, atol=1e-5)
    assert record["params_after"] < record["params_before"]
