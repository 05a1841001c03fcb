"""Int8 quantization: closeness to the float model, safetensors round trips, static, QAT, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ember.compress.quantize import (
    check_supported,
    convert_qat,
    load_quantized,
    prepare_qat,
    quantize,
    quantized_state,
)
from ember.data.bundle import DataInfo
from ember.errors import CheckpointError, ConfigError
from ember.models import build
from ember.models.cnn import CNNConfig
from ember.models.gpt import GPTConfig
from ember.models.mlp import MLPConfig
from ember.models.rnn import RNNConfig
from ember.models.transformer import TransformerConfig
from ember.weights import load_tensors, save_tensors

IMAGE = DataInfo("classification", "image", (1, 8, 8), 10)
TABLE = DataInfo("classification", "tabular", (4,), 3)
CLS = DataInfo("classification", "tokens", (12,), 4, extra={"vocab_size": 31, "pad_id": 30})
LM = DataInfo("lm", "tokens", (16,), 50, extra={"vocab_size": 50})
SERIES = DataInfo("forecast", "series", (10, 1), 2)


def _tokens(info: DataInfo, n: int = 16) -> Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, int(info.extra["vocab_size"]), (n, *info.input_shape), generator=g)
    if "pad_id" in info.extra:
        x[x == info.extra["pad_id"]] = 0
        x[: n // 2, -3:] = info.extra["pad_id"]  # right padding: the packed-sequence path
    return x


# (id, config, data, inputs): one tiny model per family, plus the LSTM/GRU variants.
CASES: list[tuple[str, Any, DataInfo, Tensor]] = [
    ("mlp", MLPConfig(hidden=[32, 16], batch_norm=True), TABLE, torch.randn(32, 4)),
    ("cnn", CNNConfig(channels=[4, 8], hidden=[16]), IMAGE, torch.randn(32, 1, 8, 8)),
    ("lstm", RNNConfig(cell="lstm", hidden_size=16, embed_dim=8, num_layers=2, bidirectional=True), CLS,
     _tokens(CLS)),
    ("gru-lm", RNNConfig(cell="gru", hidden_size=16, embed_dim=8), LM, _tokens(LM)),
    ("rnn-series", RNNConfig(cell="rnn", hidden_size=16), SERIES, torch.randn(16, 10, 1)),
    ("transformer", TransformerConfig(d_model=16, n_head=2, n_layer=2, d_ff=32), CLS, _tokens(CLS)),
    ("gpt", GPTConfig(n_layer=2, n_head=2, n_embd=32), LM, _tokens(LM, 8)),
]


def _model(cfg: Any, info: DataInfo, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build(cfg, info).eval()
    return model


def _round_trip(q: nn.Module, cfg: Any, info: DataInfo, x: Tensor, tmp_path: Path) -> nn.Module:
    """quantized_state -> safetensors + JSON on disk -> load_quantized on a fresh model."""
    tensors, meta = quantized_state(q)
    assert all(not t.is_quantized for t in tensors.values())
    save_tensors(tensors, tmp_path / "model.int8.safetensors")
    (tmp_path / "quant.json").write_text(json.dumps(meta))
    fresh = _model(cfg, info, seed=123)  # different random weights: everything must come from the files
    return load_quantized(fresh, load_tensors(tmp_path / "model.int8.safetensors"),
                          json.loads((tmp_path / "quant.json").read_text()), x[:2])


def _assert_close_logits(out: Tensor, ref: Tensor, agree: float = 0.9, tol: float = 0.05) -> None:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() < tol * scale + 1e-3
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean().item() >= agree


@pytest.mark.parametrize(("cfg", "info", "x"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@torch.no_grad()
def test_dynamic_int8_is_close_to_float_and_round_trips(cfg: Any, info: DataInfo, x: Tensor,
                                                        tmp_path: Path) -> None:
    model = _model(cfg, info)
    ref = model(x)
    q = quantize(model, "dynamic")
    assert not q.training
    assert not any(type(m) in (nn.Linear, nn.LSTM, nn.GRU) for m in q.modules())  # all swapped
    assert any(type(m) is nn.Linear for m in model.modules())  # the float model is untouched
    out = q(x)
    _assert_close_logits(out, ref)
    tensors, meta = quantized_state(q)
    assert meta["scheme"] == "dynamic" and meta["layers"]
    assert any(t.dtype == torch.int8 for t in tensors.values())
    again = _round_trip(q, cfg, info, x, tmp_path)
    assert torch.equal(again(x), out)  # bit-identical


@torch.no_grad()
def test_dynamic_gpt_generates_with_kv_cache() -> None:
    cfg, info, x = CASES[-1][1:]
    q = quantize(_model(cfg, info), "dynamic")
    steps = list(q.generate(x[:2, :4], max_new_tokens=5, temperature=0.0))
    assert len(steps) == 5 and all(s.shape == (2, 1) for s in steps)
    assert all(int(s.max()) < info.extra["vocab_size"] for s in steps)


@pytest.mark.parametrize("cfg", [CNNConfig(channels=[4, 8], hidden=[16]),
                                 CNNConfig(channels=[4, 8], hidden=[16], activation="gelu", pool="avg")],
                         ids=["relu-fused", "gelu-float-island"])
@torch.no_grad()
def test_static_cnn_with_calibration(cfg: CNNConfig, tmp_path: Path) -> None:
    x = torch.randn(64, 1, 8, 8)
    model = _model(cfg, IMAGE)
    q = quantize(model, "static", calibration=x.split(16))
    out = q(x)
    _assert_close_logits(out, model(x))
    _, meta = quantized_state(q)
    types = [layer["type"] for layer in meta["layers"]]
    if cfg.activation == "relu":  # Conv+BN+ReLU fused into one int8 op, BN folded
        assert types.count("QuantizedConvReLU2d") == 2
    assert all("scale" in layer for layer in meta["layers"])  # calibrated output ranges
    again = _round_trip(q, cfg, IMAGE, x, tmp_path)
    assert torch.equal(again(x), out)


@torch.no_grad()
def test_static_mlp_with_batch_norm(tmp_path: Path) -> None:
    cfg, info, x = CASES[0][1:]
    model = _model(cfg, info)
    q = quantize(model, "static", calibration=[x])
    out = q(x)
    _assert_close_logits(out, model(x))
    assert torch.equal(_round_trip(q, cfg, info, x, tmp_path)(x), out)


@pytest.mark.parametrize(("cfg", "info", "x"), [CASES[1][1:], CASES[5][1:], CASES[6][1:]],
                         ids=["cnn-static-qat", "transformer-dynamic-qat", "gpt-dynamic-qat"])
def test_qat_prepare_train_convert(cfg: Any, info: DataInfo, x: Tensor, tmp_path: Path) -> None:
    model = _model(cfg, info)
    qat = prepare_qat(model, x)
    assert qat.training
    opt = torch.optim.SGD(qat.parameters(), lr=0.05)
    y = torch.randint(0, info.num_outputs, (x.shape[0],))
    before = [p.detach().clone() for p in qat.parameters()]
    for _ in range(3):
        logits = qat(x)
        loss = (F.cross_entropy(logits.flatten(0, -2), x.flatten()) if info.task == "lm"
                else F.cross_entropy(logits, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, qat.parameters()))
    q = convert_qat(qat)
    assert qat.training  # the QAT model is left as it was
    with torch.no_grad():
        out = q(x)
        # One int8 rounding flip inside the net can move a logit by an output step, so the
        # bound is looser than for post-training quantization against float.
        _assert_close_logits(out, qat.eval()(x), agree=0.8, tol=0.25)
        tensors, meta = quantized_state(q)
        assert meta["mode"] == "qat"
        assert torch.equal(_round_trip(q, cfg, info, x, tmp_path)(x), out)


def test_unsupported_pairs_raise_config_error() -> None:
    gpt = _model(*CASES[6][1:3])
    with pytest.raises(ConfigError, match="static int8 quantization supports cnn and mlp"):
        check_supported(gpt, "static")
    with pytest.raises(ConfigError, match="static"):
        quantize(gpt, "static", calibration=[CASES[6][3]])
    with pytest.raises(ConfigError, match="valid: dynamic, static, qat, weight_only, weight_only_int4"):
        check_supported(gpt, "int4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no Linear, LSTM or GRU"):
        check_supported(nn.Sequential(nn.ReLU()), "dynamic")
    cnn = _model(*CASES[1][1:3])
    with pytest.raises(ConfigError, match="calibration"):
        quantize(cnn, "static")
    for mode in ("dynamic", "static", "qat"):
        check_supported(cnn, mode)  # type: ignore[arg-type]
    for mode in ("dynamic", "qat"):
        check_supported(gpt, mode)  # type: ignore[arg-type]


def test_load_quantized_refuses_another_architecture() -> None:
    cfg, info, x = CASES[1][1:]
    tensors, meta = quantized_state(quantize(_model(cfg, info), "dynamic"))
    other = _model(CNNConfig(channels=[4, 8], hidden=[24]), info)
    with pytest.raises(CheckpointError):
        load_quantized(other, tensors, meta, x[:2])
    with pytest.raises(CheckpointError, match="version"):
        load_quantized(_model(cfg, info), tensors, {**meta, "version": 99}, x[:2])


def test_dynamic_llama_quantizes_the_tied_head_and_generates_like_float() -> None:
    from ember.models.llama import LlamaConfig

    cfg = LlamaConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, intermediate_size=96, tie_embeddings=True)
    model = _model(cfg, LM)
    q = quantize(model, "dynamic")
    kinds = {name: type(m).__name__ for name, m in q.named_modules()}
    assert kinds["lm_head"] == "Linear" and type(q.lm_head).__module__.startswith("torch.ao.nn.quantized")
    assert isinstance(q.embed_tokens, nn.Embedding)  # the lookup stays float; only the head's copy is int8
    x = _tokens(LM, 2)[:, :6]
    with torch.no_grad():
        assert (q(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()
    steps = list(q.generate(x, max_new_tokens=4, temperature=0.0))
    assert len(steps) == 4 and all(s.shape == (2, 1) for s in steps)


def test_measure_leaves_out_a_throughput_pass_over_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.compress import measure as measuring
    from ember.data.bundle import ArrayDataset
    from ember.tasks import for_info

    cfg = MLPConfig(hidden=[8])
    model = _model(cfg, TABLE)
    test = ArrayDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    weights = Path(__file__)  # any file: only its size is read
    full = measuring.measure(model, test, for_info(TABLE), weights, 10)
    assert full["throughput_b64"] > 0 and "throughput_b64_skipped" not in full
    monkeypatch.setattr(measuring, "THROUGHPUT_PASS_BUDGET_S", 0.0)
    cut = measuring.measure(model, test, for_info(TABLE), weights, 10)
    assert "throughput_b64" not in cut and cut["throughput_b64_skipped"].startswith("a batch of 64 would take")
    assert cut["latency_ms_b1"] > 0 and "accuracy" in cut


def test_weight_only_int8_rows_decode_and_batches_agree_and_round_trip() -> None:
    from ember.compress.weight_only import Int8WeightLinear

    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = Int8WeightLinear.from_float(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_scale.shape == (48,)
    assert (q.dequantized() - linear.weight).abs().max() <= q.weight_scale.max() / 2 + 1e-7  # half a step
    x = torch.randn(40, 64)
    with torch.no_grad():
        many, few, exact = q(x), torch.cat([q(x[i:i + 1]) for i in range(40)]), linear(x)
    # one row at a time takes the int8 kernel (bf16 or fp32 activations), 40 rows the float GEMM
    assert (many - exact).abs().max() < 0.05 and (few - many).abs().max() < 0.05
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16)
    model = _model(cfg, LM)
    qmodel = quantize(model, "weight_only")
    tensors, meta = quantized_state(qmodel)
    assert meta["scheme"] == "weight_only" and all(not t.is_quantized for t in tensors.values())
    again = load_quantized(_model(cfg, LM, seed=5), tensors, json.loads(json.dumps(meta)), _tokens(LM))
    xt = _tokens(LM, 2)
    with torch.no_grad():
        assert torch.equal(again(xt), qmodel(xt))
    tensors["lm_head.weight_int8"] = tensors["lm_head.weight_int8"][:3]
    with pytest.raises(CheckpointError, match="do not fit"):
        load_quantized(_model(cfg, LM), tensors, meta, _tokens(LM))


def test_weight_only_int4_groups_decode_batches_agree_and_round_trip() -> None:
    from ember.compress.weight_only import (
        GROUP_SIZE,
        Int4WeightLinear,
        Int8WeightLinear,
        to_weight_only,
    )

    torch.manual_seed(0)
    linear = nn.Linear(96, 48)
    q = Int4WeightLinear.from_float(linear)
    assert q.weight_int4.shape == (48, 48) and q.weight_int4.dtype == torch.uint8
    assert q.weight_min.shape == (48, 96 // GROUP_SIZE)
    assert (q.dequantized() - linear.weight).abs().max() <= q.weight_step.max() / 2 + 1e-6  # half a step
    x = torch.randn(40, 96)
    with torch.no_grad():
        many, few, exact = q(x), torch.cat([q(x[i:i + 1]) for i in range(40)]), linear(x)
    # one row at a time takes torch's int4 kernel (its own packing, made here), 40 rows the float GEMM
    assert (few - many).abs().max() < 0.05 and (many - exact).abs().max() < 0.2
    mixed = to_weight_only(nn.Sequential(nn.Linear(96, 48), nn.Linear(48, 40)), bits=4)  # 40 rows: not a multiple of 16
    assert isinstance(mixed[0], Int4WeightLinear) and isinstance(mixed[1], Int8WeightLinear)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32)
    qmodel = quantize(_model(cfg, LM), "weight_only_int4")
    tensors, meta = quantized_state(qmodel)
    assert meta["mode"] == "weight_only_int4" and meta["int4_layers"]
    # the output head stays int8: every logit goes through it
    assert "lm_head" not in meta["int4_layers"] and isinstance(qmodel.lm_head, Int8WeightLinear)
    again = load_quantized(_model(cfg, LM, seed=5), tensors, json.loads(json.dumps(meta)), _tokens(LM))
    xt = _tokens(LM, 2)
    with torch.no_grad():
        assert torch.equal(again(xt), qmodel(xt)) and torch.equal(again(xt[:1, :1]), qmodel(xt[:1, :1]))
    assert getattr(again, "ember_quant_mode", None) == "weight_only_int4"
