"""Recurrent networks: Elman RNN, LSTM (Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014).

Training uses the fused `nn.RNN/LSTM/GRU`. `LSTMCellReference` spells out the LSTM gates,
with the same parameter layout as `nn.LSTM`, for learners; it is tested equal to it.

    i = σ(W_ii x + b_ii + W_hi h + b_hi)     f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)  o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                        h' = o ⊙ tanh(c')
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.common import MAX_WIDTH, ModelSection

__all__ = ["RNNConfig", "RNNModel", "LSTMCellReference", "lstm_reference", "build_rnn"]


class RNNConfig(ModelSection):
    name: Literal["rnn"] = "rnn"
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden_size: int = Field(128, ge=1, le=MAX_WIDTH)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    embed_dim: int = Field(64, ge=1, le=MAX_WIDTH, description="token embedding size (token inputs only)")
    pooling: Literal["last", "mean", "max"] = "last"


class LSTMCellReference(nn.Module):
    """One LSTM step from the gate equations; weights laid out like `nn.LSTM` (i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state  # (B, H) each
        gates = x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c


def lstm_reference(x: Tensor, cell: LSTMCellReference, h0: Tensor | None = None,
                   c0: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run `cell` over x (B, T, I): outputs (B, T, H) and the final (h, c), like nn.LSTM."""
    b = x.shape[0]
    h = h0 if h0 is not None else x.new_zeros(b, cell.hidden_size)
    c = c0 if c0 is not None else x.new_zeros(b, cell.hidden_size)
    outputs = []
    for t in range(x.shape[1]):
        h, c = cell(x[:, t], (h, c))
        outputs.append(h)
    return torch.stack(outputs, dim=1), (h, c)


class _Frames(nn.Module):
    """(B, 1, mels, frames) -> (B, frames, mels)."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0].transpose(1, 2)


class RNNModel(nn.Module):
    """Tokens (B, T) or series (B, T, F) -> per-step logits (lm) or one output per sequence."""

    def __init__(self, cfg: RNNConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self.task = info.task
        self.tokens = info.input_kind == "tokens"
        self.pad_id = info.extra.get("pad_id") if self.tokens else None
        if self.tokens:
            self.embed: nn.Module = nn.Embedding(int(info.extra["vocab_size"]), cfg.embed_dim)
            in_size = cfg.embed_dim
        elif info.input_kind == "audio":  # a log-mel spectrogram read as a sequence of mel frames
            self.embed = _Frames()
            in_size = int(info.input_shape[1])
        else:
            self.embed = nn.Identity()
            in_size = int(info.input_shape[-1])
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cfg.cell]
        self.rnn = cls(in_size, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                       bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        width = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(width, info.num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # (B, T, E) or (B, T, F)
        if self.pad_id is not None and self.task != "lm" and torch.compiler.is_exporting():
            out = self._unpacked(h, x != self.pad_id)  # same numbers, traceable by torch.export
        elif self.pad_id is not None and self.task != "lm":
            # Pack so that neither direction ever reads padding (the backward one would start there).
            lengths = (x != self.pad_id).sum(1).clamp_min(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, _ = self.rnn(h)  # (B, T, W)
        out = self.drop(out)
        if self.task == "lm":
            return self.head(out)  # (B, T, V)
        return self.head(self._pool(out, x))  # (B, num_outputs)

    def _unpacked(self, h: Tensor, valid: Tensor) -> Tensor:
        """The packed computation without packing (which torch.export cannot trace).

        Padding is on the right, so a forward direction reads it only after the real tokens;
        a backward direction runs forward over each sequence reversed within its own length,
        then is reversed back. Layer by layer, with the module's own weights.
        """
        b, t, _ = h.shape
        lengths = valid.long().sum(1).clamp_min(1)  # (B,)
        pos = torch.arange(t, device=h.device).expand(b, t)
        flip = torch.where(pos < lengths[:, None], lengths[:, None] - 1 - pos, pos)  # (B, T) within-length reversal

        def reverse(z: Tensor) -> Tensor:
            return z.gather(1, flip.unsqueeze(-1).expand_as(z))

        cls = type(self.rnn)
        out = h
        for layer in range(self.cfg.num_layers):
            single = cls(out.shape[-1], self.rnn.hidden_size, batch_first=True, device=h.device)
            directions = []
            for suffix in ([""] + (["_reverse"] if self.cfg.bidirectional else [])):
                weights = {name: getattr(self.rnn, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                params = {f"{k}_l0": v for k, v in weights.items()}
                source = reverse(out) if suffix else out
                result, _ = torch.func.functional_call(single, params, (source,))
                directions.append(reverse(result) if suffix else result)
            out = torch.cat(directions, dim=-1)  # (B, T, W); eval mode: no dropout between layers
        return out

    def _pool(self, out: Tensor, x: Tensor) -> Tensor:
        b, t, _ = out.shape
        valid = (x != self.pad_id) if self.pad_id is not None else torch.ones(b, t, dtype=torch.bool, device=out.device)
        if self.cfg.pooling == "mean":
            keep = valid.unsqueeze(-1).float()
            return (out * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        if self.cfg.pooling == "max":
            return out.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(1).nan_to_num(0.0, neginf=0.0)
        # last: the output at each sequence's last real position (padding is on the right).
        # A bidirectional backward direction has read the whole sequence by position 0.
        last = (valid.long().sum(1) - 1).clamp_min(0)  # (B,)
        forward = out[torch.arange(b, device=out.device), last]
        if not self.cfg.bidirectional:
            return forward
        half = self.rnn.hidden_size  # from the layer, which may have been resized
        return torch.cat([forward[:, :half], out[:, 0, half:]], dim=1)


def build_rnn(cfg: RNNConfig, info: DataInfo) -> RNNModel:
    if info.input_kind not in ("tokens", "series", "audio"):
        raise ConfigError(f"model.name: 'rnn' needs token, series or audio inputs, not {info.input_kind}; use mlp or cnn")
    if info.task == "lm" and cfg.bidirectional:
        raise ConfigError("model.bidirectional: a language model cannot read the future; set it to false")
    return RNNModel(cfg, info)
