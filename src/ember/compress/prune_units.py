"""Structured pruning that torch-pruning cannot do for us: attention heads, FFN neurons, RNN units.

Each function removes whole units and swaps in smaller modules holding the kept weights:

- attention heads of a fused QKV projection (`MultiHeadSelfAttention.qkv`, GPT's `c_attn`):
  a head is the rows h*hd..(h+1)*hd of each of the q, k and v blocks plus the same columns
  of the output projection. torch-pruning would trace through SDPA and the residual stream
  and, for GPT, the tied embedding; removing whole heads by hand keeps d_model, the
  vocabulary and the tie untouched.
- feed-forward neurons: rows of the first Linear, columns of the second.
- hidden units of `nn.LSTM/GRU/RNN`, every layer and direction (torch-pruning's LSTM pruner
  handles one layer only and no GRU): unit j of a layer is row j of each gate block of
  weight_ih/weight_hh/biases, column j of weight_hh, and the columns of the next layer's
  weight_ih (or of the head) that read it.

Importance is the L2 norm of every weight tied to the unit (a group norm); each layer keeps
its most important `keep_count(n, ratio)` units, in their original order.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["keep_count", "prune_heads", "prune_hidden", "prune_rnn_units"]


def keep_count(n: int, ratio: float) -> int:
    """Units kept of `n` when a fraction `ratio` goes: floor(n (1 - ratio)), never below 1.

    The same rounding as torch-pruning, so every family reads `ratio` alike.
    """
    return max(1, math.floor(n * (1.0 - ratio) + 1e-9))  # 1e-9: 0.7 * 10 is 6.999...


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the `k` largest scores, ascending, so kept units keep their order."""
    return scores.topk(k).indices.sort().values


def _linear(layer: nn.Linear, rows: Tensor | None = None, cols: Tensor | None = None) -> nn.Linear:
    """A new Linear with the selected output `rows` and input `cols` of `layer`'s weights."""
    w = layer.weight.detach()
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias if rows is None else layer.bias[rows])
    return new


def _sq_rows(layer: nn.Linear) -> Tensor:
    """Per output row: squared L2 norm of its weights and bias, (out_features,)."""
    s = layer.weight.detach().pow(2).sum(1)
    return s if layer.bias is None else s + layer.bias.detach().pow(2)


def prune_heads(attn: nn.Module, qkv_name: str, proj_name: str, ratio: float) -> None:
    """Remove whole heads from an attention module with a fused (q; k; v) projection.

    Args:
        attn: module with `n_head` and two Linear children named `qkv_name` (C -> 3 H hd)
            and `proj_name` (H hd -> C); the module must read head sizes from those layers.
        ratio: fraction of heads removed (at least one head stays).
    """
    qkv: nn.Linear = getattr(attn, qkv_name)
    proj: nn.Linear = getattr(attn, proj_name)
    h = int(attn.n_head)
    width = qkv.out_features // 3  # H * hd
    hd = width // h
    keep = keep_count(h, ratio)
    if keep == h:
        return
    score = _sq_rows(qkv).view(3, h, hd).sum((0, 2))  # (H,): q, k and v rows of each head
    score += proj.weight.detach().pow(2).view(proj.out_features, h, hd).sum((0, 2))  # its proj columns
    heads = _top(score, keep).to(qkv.weight.device)  # (keep,)
    dims = (heads[:, None] * hd + torch.arange(hd, device=heads.device)).flatten()  # (keep * hd,)
    rows = torch.cat([block * width + dims for block in range(3)])  # the same dims of q, k and v
    setattr(attn, qkv_name, _linear(qkv, rows=rows))
    setattr(attn, proj_name, _linear(proj, cols=dims))
    attn.n_head = keep


def prune_hidden(parent: nn.Module, first: str, second: str, ratio: float) -> None:
    """Remove hidden neurons between two Linear children of `parent` (first: C -> N, second: N -> C').

    Whatever sits between them must act per neuron (an activation, dropout).
    """
    fc1: nn.Linear = parent.get_submodule(first)
    fc2: nn.Linear = parent.get_submodule(second)
    keep = keep_count(fc1.out_features, ratio)
    if keep == fc1.out_features:
        return
    score = _sq_rows(fc1) + fc2.weight.detach().pow(2).sum(0)  # (N,): incoming row + outgoing column
    idx = _top(score, keep).to(fc1.weight.device)
    setattr(parent, first, _linear(fc1, rows=idx))
    setattr(parent, second, _linear(fc2, cols=idx))


def _gate_rows(idx: Tensor, gates: int, hidden: int) -> Tensor:
    """Rows of unit set `idx` in each of the `gates` stacked blocks of size `hidden`."""
    return (torch.arange(gates, device=idx.device)[:, None] * hidden + idx[None, :]).flatten()


def prune_rnn_units(model: nn.Module, ratio: float, rnn_name: str = "rnn", head_name: str = "head") -> None:
    """Remove hidden units of `model.<rnn_name>` (nn.RNN/LSTM/GRU) in every layer and direction.

    The head (`model.<head_name>`, a Linear reading the last layer's outputs, directions
    concatenated) loses the matching input columns. All layers keep the same count, as
    `nn.LSTM` has one `hidden_size`, but each layer and direction picks its own units.
    """
    rnn: nn.RNNBase = getattr(model, rnn_name)
    head: nn.Linear = getattr(model, head_name)
    if getattr(rnn, "proj_size", 0):
        raise NotImplementedError("LSTM with proj_size: hidden-unit pruning is not supported")
    hidden, layers = rnn.hidden_size, rnn.num_layers
    keep = keep_count(hidden, ratio)
    if keep == hidden:
        return
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)  # i f g o | r z n | one (Elman)
    suffixes = ["", "_reverse"] if rnn.bidirectional else [""]
    w = {name: getattr(rnn, name).detach() for name in rnn._flat_weights_names}

    def readers(layer: int) -> Tensor:
        """Weights that read layer `layer`'s outputs: (rows, dirs * hidden) columns."""
        if layer + 1 == layers:
            return head.weight.detach()
        return torch.cat([w[f"weight_ih_l{layer + 1}{s}"] for s in suffixes])

    kept: list[list[Tensor]] = []  # [layer][direction] -> kept unit indices
    for layer in range(layers):
        out_cols = readers(layer).pow(2).sum(0).view(len(suffixes), hidden)  # (dirs, H)
        per_dir = []
        for d, s in enumerate(suffixes):
            score = w[f"weight_ih_l{layer}{s}"].pow(2).view(gates, hidden, -1).sum((0, 2))
            w_hh = w[f"weight_hh_l{layer}{s}"].pow(2)  # (gates H, H)
            score += w_hh.view(gates, hidden, hidden).sum((0, 2)) + w_hh.sum(0)  # rows in, column out
            for b in ("bias_ih", "bias_hh"):
                if f"{b}_l{layer}{s}" in w:
                    score += w[f"{b}_l{layer}{s}"].pow(2).view(gates, hidden).sum(0)
            per_dir.append(_top(score + out_cols[d], keep))
        kept.append(per_dir)

    def columns(layer: int) -> Tensor:
        """Old columns, in new order, of a reader of layer `layer`: directions side by side."""
        return torch.cat([d * hidden + idx for d, idx in enumerate(kept[layer])])

    kwargs = {"num_layers": layers, "bias": rnn.bias, "batch_first": rnn.batch_first,
              "dropout": rnn.dropout, "bidirectional": rnn.bidirectional}
    if isinstance(rnn, nn.RNN):
        kwargs["nonlinearity"] = rnn.nonlinearity
    p = rnn._flat_weights[0]
    new = type(rnn)(rnn.input_size, keep, device=p.device, dtype=p.dtype, **kwargs)
    with torch.no_grad():
        for layer in range(layers):
            for d, s in enumerate(suffixes):
                rows = _gate_rows(kept[layer][d], gates, hidden)
                w_ih = w[f"weight_ih_l{layer}{s}"][rows]
                if layer > 0:
                    w_ih = w_ih[:, columns(layer - 1)]
                getattr(new, f"weight_ih_l{layer}{s}").copy_(w_ih)
                getattr(new, f"weight_hh_l{layer}{s}").copy_(w[f"weight_hh_l{layer}{s}"][rows][:, kept[layer][d]])
                for b in ("bias_ih", "bias_hh"):
                    if f"{b}_l{layer}{s}" in w:
                        getattr(new, f"{b}_l{layer}{s}").copy_(w[f"{b}_l{layer}{s}"][rows])
    new.train(rnn.training)
    setattr(model, rnn_name, new)
    setattr(model, head_name, _linear(head, cols=columns(layers - 1)))
