"""Quantized models as plain tensors + JSON, and back (helper of `ember.compress.quantize`).

A quantized model's `state_dict()` holds things safetensors cannot store: quantized tensors
(`torch.qint8` / `torch.quint8` dtypes), tuples of them (a quantized Linear's packed
weight and bias), `torch.dtype` values and, for dynamic LSTM/GRU, packed TorchScript
objects. Each is taken apart into plain tensors, with what is needed to put it together
again in a JSON-able `meta`:

- a quantized tensor at key `K` becomes `K.int_repr` (int8/uint8), `K.scale` (float64)
  and `K.zero_point` (int64), plus its scheme, axis and dtype in `meta["qtensors"][K]`;
- a tuple at `K` becomes its elements at `K.0`, `K.1`, ... (recursively), the shape of
  the tuple in `meta["tuples"][K]`;
- a `torch.dtype` is written into `meta["dtypes"]`;
- a packed recurrent layer is read through its `_weight_bias()` and its weights are
  stored under `NAME.weight_bias.weight.weight_ih_l0` etc.

Decoding rebuilds the exact quantized tensors (same integers, same scales), so a model
loaded from them repacks identical weights and gives bit-identical outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as DynamicRNNBase

from ember.errors import CheckpointError

__all__ = ["encode_state", "decode_state", "describe_layers"]

_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)


def _encode_qtensor(key: str, t: Tensor, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Store a quantized tensor as integers + scales + zero points."""
    scheme = t.qscheme()
    tensors[f"{key}.int_repr"] = t.int_repr().contiguous()
    if scheme in _PER_CHANNEL:
        tensors[f"{key}.scale"] = t.q_per_channel_scales().to(torch.float64).contiguous()
        tensors[f"{key}.zero_point"] = t.q_per_channel_zero_points().to(torch.int64).contiguous()
        axis = int(t.q_per_channel_axis())
    else:
        # 0-d tensors keep the exact double scale; a JSON float would too, but one format is simpler.
        tensors[f"{key}.scale"] = torch.tensor(t.q_scale(), dtype=torch.float64)
        tensors[f"{key}.zero_point"] = torch.tensor(t.q_zero_point(), dtype=torch.int64)
        axis = None
    meta["qtensors"][key] = {"qscheme": str(scheme).removeprefix("torch."), "axis": axis,
                             "dtype": str(t.dtype).removeprefix("torch.")}


def _decode_qtensor(key: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Tensor:
    """The exact quantized tensor `_encode_qtensor` took apart."""
    info = meta["qtensors"][key]
    ints = _take(tensors, f"{key}.int_repr")
    scale = _take(tensors, f"{key}.scale")
    zero_point = _take(tensors, f"{key}.zero_point")
    dtype = getattr(torch, info["dtype"])
    if info["axis"] is not None:
        q = torch._make_per_channel_quantized_tensor(ints, scale, zero_point, int(info["axis"]))
    else:
        q = torch._make_per_tensor_quantized_tensor(ints, float(scale), int(zero_point))
    if q.dtype != dtype:
        raise CheckpointError(f"quantized tensor '{key}' decodes as {q.dtype}, expected {dtype}")
    return q


def _take(tensors: dict[str, Tensor], key: str) -> Tensor:
    if key not in tensors:
        raise CheckpointError(f"quantized weights lack tensor '{key}'; the file does not fit this model")
    return tensors[key]


def _encode_value(key: str, value: Any, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Encode one state_dict value (tensor, quantized tensor, tuple, dtype or None)."""
    if isinstance(value, Tensor) and value.is_quantized:
        _encode_qtensor(key, value, tensors, meta)
    elif isinstance(value, Tensor):
        tensors[key] = value.detach().contiguous()
    elif isinstance(value, tuple):
        meta["tuples"][key] = len(value)
        for i, item in enumerate(value):
            _encode_value(f"{key}.{i}", item, tensors, meta)
    elif isinstance(value, torch.dtype):
        meta["dtypes"][key] = str(value).removeprefix("torch.")
    elif value is None:
        meta["nones"].append(key)
    else:
        raise TypeError(f"cannot encode state entry '{key}' of type {type(value).__name__}")


def _decode_value(key: str, fresh: Any, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Any:
    """Decode the value stored at `key`; `fresh` is the rebuilt model's own entry (its kind)."""
    if key in meta["qtensors"]:
        return _decode_qtensor(key, tensors, meta)
    if key in meta["tuples"]:
        n = int(meta["tuples"][key])
        inner = fresh if isinstance(fresh, tuple) and len(fresh) == n else (None,) * n
        return tuple(_decode_value(f"{key}.{i}", inner[i], tensors, meta) for i in range(n))
    if key in meta["dtypes"]:
        return getattr(torch, meta["dtypes"][key])
    if key in meta["nones"]:
        return None
    t = _take(tensors, key)
    if isinstance(fresh, Tensor) and fresh.shape != t.shape:
        raise CheckpointError(f"tensor '{key}' has shape {list(t.shape)}, model expects {list(fresh.shape)}")
    return t


def _rnn_modules(model: nn.Module) -> dict[str, DynamicRNNBase]:
    return {name: m for name, m in model.named_modules() if isinstance(m, DynamicRNNBase)}


def encode_state(qmodel: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Plain tensors and JSON-able meta for a quantized model's whole state.

    Args:
        qmodel: a model returned by `quantize` or `convert_qat`.
    Returns:
        (tensors, meta): every tensor is a plain (non-quantized) CPU tensor; meta holds
        the keys' kinds under "qtensors", "tuples", "dtypes", "nones", "rnn".
    """
    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {"qtensors": {}, "tuples": {}, "dtypes": {}, "nones": [], "rnn": []}
    rnns = _rnn_modules(qmodel)
    for key, value in qmodel.state_dict().items():
        if isinstance(value, torch.ScriptObject):
            continue  # packed recurrent weights: read through `_weight_bias()` below
        _encode_value(key, value, tensors, meta)
    for name, rnn in rnns.items():
        meta["rnn"].append(name)
        for part, entries in rnn._weight_bias().items():  # {"weight": {...}, "bias": {...}}
            for wname, value in entries.items():
                _encode_value(f"{name}.weight_bias.{part}.{wname}", value, tensors, meta)
    return {k: v.cpu() for k, v in tensors.items()}, meta


def decode_state(qmodel: nn.Module, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Load what `encode_state` wrote into `qmodel`, a freshly rebuilt model of the same structure.

    Args:
        qmodel: the quantized model rebuilt from a float model of the same architecture.
        tensors, meta: the output of `encode_state` (tensors possibly read back from disk).
    Raises:
        CheckpointError: when names, kinds or shapes do not fit `qmodel`.
    """
    fresh = qmodel.state_dict()
    state: OrderedDict[str, Any] = OrderedDict()
    # Module versions travel in the metadata; a dynamic LSTM/GRU loaded without them
    # falls back to its version-1 packing (no reduce_range), which computes differently.
    state._metadata = getattr(fresh, "_metadata", OrderedDict())  # type: ignore[attr-defined]
    for key, value in fresh.items():
        if isinstance(value, torch.ScriptObject):
            state[key] = value  # replaced by set_weight_bias below
        else:
            state[key] = _decode_value(key, value, tensors, meta)
    try:
        qmodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"quantized weights do not fit this model: {str(exc).splitlines()[0]}") from None
    rnns = _rnn_modules(qmodel)
    if sorted(rnns) != sorted(meta["rnn"]):
        raise CheckpointError(f"quantized recurrent layers {meta['rnn']} do not match the model's {sorted(rnns)}")
    for name, rnn in rnns.items():
        flat: dict[str, Any] = {}  # set_weight_bias takes weight_ih_l0, bias_ih_l0, ... in one dict
        for part, entries in rnn._weight_bias().items():
            flat.update({w: _decode_value(f"{name}.weight_bias.{part}.{w}", v, tensors, meta)
                         for w, v in entries.items()})
        rnn.set_weight_bias(flat)


def describe_layers(qmodel: nn.Module) -> list[dict[str, Any]]:
    """One JSON-able entry per quantized layer: name, kind, sizes, static output qparams.

    Args:
        qmodel: a quantized model.
    Returns:
        [{"name", "type", "in_features"/"out_features"/..., "scale", "zero_point"}, ...]
    """
    out = []
    for name, m in qmodel.named_modules():
        kind = type(m).__module__
        is_quantize = type(m).__name__ == "Quantize"  # the input quantizer of a static model
        packed = type(m).__name__ == "LinearPackedParams"  # the holder inside a quantized Linear
        if ".quantized" not in kind or packed or not (hasattr(m, "_weight_bias") or is_quantize):
            continue
        entry: dict[str, Any] = {"name": name, "type": m._get_name() if hasattr(m, "_get_name") else type(m).__name__}
        for attr in ("in_features", "out_features", "in_channels", "out_channels", "input_size", "hidden_size"):
            if isinstance(getattr(m, attr, None), int):
                entry[attr] = getattr(m, attr)
        if ".dynamic" not in kind and isinstance(getattr(m, "scale", None), float | Tensor):
            entry["scale"] = float(m.scale)
            entry["zero_point"] = int(m.zero_point)
        out.append(entry)
    return out
