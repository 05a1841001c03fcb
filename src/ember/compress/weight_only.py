"""Weight-only int8: every nn.Linear's weight stored as int8 rows with one float scale per row.

    W (N, K) float  ->  q (N, K) int8 = round(W / s),  s (N,) = max_k |W[n, k]| / 127
    y = x @ (q * s)^T + b          activations stay float: nothing about them is quantized

Why weight-only for language models: decoding one token at a time multiplies a single row
of activations by every weight, so the time is the time to read the weights, and int8 reads
a quarter of fp32's bytes. Quantizing the activations too (`mode: dynamic`) costs accuracy
on Llama-family models: a few channels carry activations ~40x their row's RMS, and one
8-bit scale per token flattens the rest (SmolLM2-135M: Austen perplexity 34.0 -> 129.5
with dynamic int8; see docs/compress.md for this mode's figure).

Kernels (torch's own, no extra dependency): a few rows (decoding) go through
`torch.ops.aten._weight_int8pack_mm`, which reads the int8 weight directly; it takes its
activations in bf16 or fp32, and which one is faster depends on the CPU (on one 2-core EPYC
the bf16 call was 5x faster, where AVX2-only CPUs have no fast bf16), so a probe times both
once per process and keeps the faster. Many rows (a prompt, an evaluation batch) dequantize
the weight once and use the float GEMM, whose cost the rows amortize.

The module's state is plain tensors (`weight_int8`, `weight_scale`, `bias`): the child's
safetensors file holds them as they are, and reloading swaps the same modules into a
freshly built float model.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Int8WeightLinear", "to_weight_only", "swap_in_shells", "weight_only_layers", "available",
           "decode_dtype"]

DECODE_ROWS = 16  # up to this many rows read int8 directly; more dequantize once for the GEMM


def available() -> bool:
    """Whether this torch build has the int8 weight-pack kernel."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


@functools.cache
def decode_dtype() -> torch.dtype:
    """bf16 or fp32 activations for the int8 kernel: whichever a short probe finds faster here."""
    w = torch.randint(-127, 128, (1536, 576), dtype=torch.int8)
    scale = torch.rand(1536) / 127
    best, pick = float("inf"), torch.float32
    for dtype in (torch.float32, torch.bfloat16):
        x, s = torch.randn(1, 576, dtype=dtype), scale.to(dtype)
        torch.ops.aten._weight_int8pack_mm(x, w, s)  # warm-up
        t0 = time.perf_counter()
        for _ in range(20):
            torch.ops.aten._weight_int8pack_mm(x, w, s)
        took = time.perf_counter() - t0
        if took < best:
            best, pick = took, dtype
    return pick


class Int8WeightLinear(nn.Module):
    """nn.Linear with an int8 weight (N, K) and a float scale per output row (N,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8WeightLinear:
        w = linear.weight.detach().float().cpu()  # (N, K)
        scale = (w.abs().amax(dim=1) / 127).clamp_min(1e-12)  # (N,): symmetric, per row
        out = cls(linear.in_features, linear.out_features, linear.bias is not None)
        out.weight_int8.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        out.weight_scale.copy_(scale)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().float().cpu())
        return out

    def dequantized(self) -> Tensor:
        """The float weight (N, K) these int8 rows stand for."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > DECODE_ROWS:
            y = F.linear(rows.float(), self.dequantized(), self.bias)
        else:
            dtype = decode_dtype()
            y = torch.ops.aten._weight_int8pack_mm(rows.to(dtype).contiguous(), self.weight_int8,
                                                   self.weight_scale.to(dtype)).float()
            if self.bias is not None:
                y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def weight_only_layers(model: nn.Module) -> list[str]:
    """Names of the nn.Linear modules weight-only int8 replaces (every one)."""
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def to_weight_only(model: nn.Module) -> nn.Module:
    """`model` (already a CPU eval copy) with every nn.Linear turned into an Int8WeightLinear.

    A head tied to the embedding gets its own int8 copy; the embedding lookup stays float.
    """
    for name in weight_only_layers(model):
        _replace(model, name, Int8WeightLinear.from_float(model.get_submodule(name)))
    return model.eval()


def swap_in_shells(model: nn.Module, names: list[str]) -> nn.Module:
    """Empty Int8WeightLinear modules in place of the named nn.Linear ones (for loading a state)."""
    for name in names:
        linear = model.get_submodule(name)
        if type(linear) is not nn.Linear:
            raise ValueError(f"'{name}' is not a Linear layer of this model")
        _replace(model, name, Int8WeightLinear(linear.in_features, linear.out_features, linear.bias is not None))
    return model.eval()
