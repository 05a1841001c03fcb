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

Int4 (`mode: weight_only_int4`): each row in groups of GROUP_SIZE = 32 weights, every group
with its own minimum and step (asymmetric, w ~ min + q * step, q in 0..15), two int4 values
per stored byte; decoding goes through `torch.ops.aten._weight_int4pack_mm_for_cpu`, whose
arithmetic was twice as fast as the int8 kernel's on SmolLM2's shapes (measured, torch 2.13,
AVX-512). A layer the kernel cannot take (rows not a multiple of 16, or inputs not a multiple
of 32) gets int8 instead, and so does a language model's output head (`to_weight_only`). The kernel's own packed layout is made when the module first runs,
never stored: the file holds our nibble packing, which does not depend on the CPU.

The modules' state is plain tensors (`weight_int8`, `weight_scale`; `weight_int4`, `weight_min`,
`weight_step`; `bias`): the child's
safetensors file holds them as they are, and reloading swaps the same modules into a
freshly built float model.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Int8WeightLinear", "Int4WeightLinear", "to_weight_only", "swap_in_shells", "weight_only_layers",
           "available", "decode_dtype", "int4_fits", "output_head"]

DECODE_ROWS = 16  # up to this many rows read int8 directly; more dequantize once for the GEMM
GROUP_SIZE = 32  # int4: weights per (min, step) pair along a row


def available(bits: int = 8) -> bool:
    """Whether this torch build has the int8 (or int4) weight-pack kernel."""
    if bits == 4:
        return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def _faster_dtype(call: Callable[[torch.dtype], object]) -> torch.dtype:
    """fp32 or bf16, whichever `call(dtype)` runs faster here (20 calls after a warm-up)."""
    best, pick = float("inf"), torch.float32
    for dtype in (torch.float32, torch.bfloat16):
        call(dtype)
        t0 = time.perf_counter()
        for _ in range(20):
            call(dtype)
        took = time.perf_counter() - t0
        if took < best:
            best, pick = took, dtype
    return pick


@functools.cache
def decode_dtype(bits: int = 8) -> torch.dtype:
    """bf16 or fp32 activations for the int8 (or int4) kernel: whichever a short probe finds faster."""
    if bits == 4:
        q = torch.randint(0, 16, (1536, 576), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        pairs = torch.rand(576 // GROUP_SIZE, 1536, 2)
        return _faster_dtype(lambda d: torch.ops.aten._weight_int4pack_mm_for_cpu(
            torch.randn(1, 576, dtype=d), packed, GROUP_SIZE, pairs.to(d)))
    w = torch.randint(-127, 128, (1536, 576), dtype=torch.int8)
    scale = torch.rand(1536) / 127
    return _faster_dtype(lambda d: torch.ops.aten._weight_int8pack_mm(torch.randn(1, 576, dtype=d), w, scale.to(d)))


class _WeightOnlyLinear(nn.Module):
    """What int8 and int4 share: a few rows through the integer kernel, many through the float GEMM."""

    in_features: int
    out_features: int
    bias: Tensor | None

    def dequantized(self) -> Tensor:  # (N, K) float
        raise NotImplementedError

    def _decode(self, rows: Tensor) -> Tensor:  # (M <= DECODE_ROWS, K) -> (M, N) float, without bias
        raise NotImplementedError

    def _forget_kernel_copies(self) -> None:
        """Drop what `_decode` derived from the buffers (they are about to change)."""

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._forget_kernel_copies()
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:  # (..., K) -> (..., N)
        rows = x.reshape(-1, self.in_features)  # (M, K)
        if rows.shape[0] > DECODE_ROWS:
            y = F.linear(rows.float(), self.dequantized(), self.bias)
        else:
            y = self._decode(rows)
            if self.bias is not None:
                y = y + self.bias
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)


class Int8WeightLinear(_WeightOnlyLinear):
    """nn.Linear with an int8 weight (N, K) and a float scale per output row (N,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._scale: Tensor | None = None  # weight_scale in the kernel's activation dtype, made on first use

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

    def _forget_kernel_copies(self) -> None:
        self._scale = None

    def _decode(self, rows: Tensor) -> Tensor:
        if self._scale is None:  # made once, outside any torch.compile graph (the probe times kernels)
            self._scale = self._kernel_scale()
        return torch.ops.aten._weight_int8pack_mm(rows.to(self._scale.dtype).contiguous(), self.weight_int8,
                                                  self._scale).float()

    @torch.compiler.disable
    def _kernel_scale(self) -> Tensor:
        return self.weight_scale.to(decode_dtype())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def int4_fits(linear: nn.Linear) -> bool:
    """Whether the int4 kernel takes this layer's shape (else it gets int8)."""
    return linear.out_features % 16 == 0 and linear.in_features % GROUP_SIZE == 0


class Int4WeightLinear(_WeightOnlyLinear):
    """nn.Linear with int4 weights: per row, groups of GROUP_SIZE with their own min and step."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        groups = in_features // GROUP_SIZE
        # Two values per byte: column 2j in the low nibble, 2j + 1 in the high one.
        self.register_buffer("weight_int4", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("weight_min", torch.zeros(out_features, groups))
        self.register_buffer("weight_step", torch.ones(out_features, groups))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._kernel: tuple[Tensor, Tensor] | None = None  # the kernel's packing, made on first use

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int4WeightLinear:
        n, k = linear.out_features, linear.in_features
        groups = linear.weight.detach().float().cpu().reshape(n, k // GROUP_SIZE, GROUP_SIZE)  # (N, G, 32)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
        step = ((high - low) / 15).clamp_min(1e-8)
        q = torch.round((groups - low[..., None]) / step[..., None]).clamp(0, 15).to(torch.uint8).reshape(n, k)
        out = cls(k, n, linear.bias is not None)
        out.weight_int4.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        out.weight_min.copy_(low)
        out.weight_step.copy_(step)
        if linear.bias is not None:
            out.bias.copy_(linear.bias.detach().float().cpu())
        return out

    def codes(self) -> Tensor:
        """The int4 values (N, K), 0..15."""
        q = torch.empty(self.out_features, self.in_features, dtype=torch.uint8)
        q[:, 0::2], q[:, 1::2] = self.weight_int4 & 15, self.weight_int4 >> 4
        return q

    def dequantized(self) -> Tensor:
        """The float weight (N, K) these int4 groups stand for."""
        groups = self.codes().float().reshape(self.out_features, -1, GROUP_SIZE)
        return (self.weight_min[..., None] + groups * self.weight_step[..., None]).reshape(self.out_features, -1)

    def _forget_kernel_copies(self) -> None:
        self._kernel = None

    def _decode(self, rows: Tensor) -> Tensor:
        if self._kernel is None:  # made once, outside any torch.compile graph
            self._kernel = self._kernel_packing()
        packed, pairs = self._kernel
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows.to(pairs.dtype).contiguous(), packed, GROUP_SIZE,
                                                          pairs).float()

    @torch.compiler.disable
    def _kernel_packing(self) -> tuple[Tensor, Tensor]:
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(self.codes().to(torch.int32), 1)
        # The kernel computes (q - 8) * step + zero per group: zero is the value code 8 stands for.
        zero = self.weight_min + 8 * self.weight_step
        pairs = torch.stack([self.weight_step, zero], dim=-1).transpose(0, 1).contiguous()  # (G, N, 2)
        return packed, pairs.to(decode_dtype(4))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 weights, groups of {GROUP_SIZE}"


def weight_only_layers(model: nn.Module) -> list[str]:
    """Names of the nn.Linear modules weight-only int8 replaces (every one)."""
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def output_head(model: nn.Module) -> str | None:
    """The name of a language model's output projection (`lm_head`), or None."""
    return "lm_head" if isinstance(getattr(model, "lm_head", None), nn.Linear) else None


def to_weight_only(model: nn.Module, bits: int = 8) -> nn.Module:
    """`model` (already a CPU eval copy) with every nn.Linear turned into an int8 (or int4) one.

    A head tied to the embedding gets its own quantized copy; the embedding lookup stays float.
    With bits=4, a layer whose shape the int4 kernel refuses (`int4_fits`) gets int8, and so does
    the output head: every logit goes through it, so its rounding reaches the loss directly
    (llama.cpp's k-quants keep `output.weight` at 6 bits for the same reason). On SmolLM2-135M the
    int4 head alone cost +6.7% perplexity, the int8 one nothing measurable, at the same speed.
    """
    head = output_head(model)
    for name in weight_only_layers(model):
        linear = model.get_submodule(name)
        kind = Int4WeightLinear if bits == 4 and int4_fits(linear) and name != head else Int8WeightLinear
        _replace(model, name, kind.from_float(linear))
    return model.eval()


def swap_in_shells(model: nn.Module, names: list[str], int4: frozenset[str] = frozenset()) -> nn.Module:
    """Empty int8 modules (int4 for the names in `int4`) in place of the named nn.Linear ones."""
    for name in names:
        linear = model.get_submodule(name)
        if type(linear) is not nn.Linear:
            raise ValueError(f"'{name}' is not a Linear layer of this model")
        if name in int4 and not int4_fits(linear):
            raise ValueError(f"'{name}' ({linear.out_features}x{linear.in_features}) cannot hold int4 groups")
        kind = Int4WeightLinear if name in int4 else Int8WeightLinear
        _replace(model, name, kind(linear.in_features, linear.out_features, linear.bias is not None))
    return model.eval()
