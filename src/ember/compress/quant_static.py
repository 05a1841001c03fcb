"""Static int8 preparation (helper of `ember.compress.quantize`): fusion, float islands, observers.

Static quantization runs whole Sequential stacks in int8, so two things happen to a copy
of the model before observers go in: neighbouring Conv-BN-ReLU / Linear-BN / Linear-ReLU
modules are fused (BN folded into the weights after training, kept live during QAT), and
activations that have no int8 kernel (GELU, SiLU) are wrapped to run in float between a
dequantize and a re-quantize whose range is calibrated like any other.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["static_prepared"]

# Activations with no int8 kernel: they run in float between a dequantize and a quantize.
_FLOAT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.GELU, nn.SiLU)
# Longest first, so Conv-BN-ReLU wins over Conv-BN. These are the pairs torch.ao can fuse.
_FUSE_PATTERNS: tuple[tuple[type[nn.Module], ...], ...] = (
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
    (nn.Linear, nn.BatchNorm1d), (nn.Linear, nn.ReLU), (nn.BatchNorm2d, nn.ReLU),
)


def _fuse(model: nn.Module, tq: Any, qat: bool) -> None:
    """Fuse Conv-BN-ReLU, Conv-ReLU, Linear-BN, Linear-ReLU inside every nn.Sequential, in place."""
    fuse = tq.fuse_modules_qat if qat else tq.fuse_modules
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        kids = list(seq.children())
        groups: list[list[str]] = []
        i = 0
        while i < len(kids):
            for pattern in _FUSE_PATTERNS:
                window = kids[i:i + len(pattern)]
                if len(window) == len(pattern) and all(type(m) is t for m, t in zip(window, pattern)):
                    groups.append([str(i + j) for j in range(len(pattern))])
                    i += len(pattern)
                    break
            else:
                i += 1
        if groups:
            target = model.get_submodule(seq_name) if seq_name else model
            fuse(target, groups, inplace=True)


class _FloatIsland(nn.Module):
    """Runs a float-only module inside a quantized stack: dequantize, apply, requantize."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.dequant = DeQuantStub()
        self.fn = fn
        self.quant = QuantStub()  # its observer calibrates the output range

    def forward(self, x: Tensor) -> Tensor:
        return self.quant(self.fn(self.dequant(x)))


def _wrap_float_islands(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _FLOAT_ACTIVATIONS):
                island = _FloatIsland(child)
                island.fn.qconfig = None  # type: ignore[assignment]  # stays float
                setattr(parent, name, island)


def static_prepared(model: nn.Module, tq: Any, qat: bool) -> nn.Module:
    """A fused, wrapped copy of `model` with observers (PTQ) or fake quantizers (QAT).

    Args:
        model: a cnn/mlp float model (see `quantize.check_supported`).
        tq: the `torch.ao.quantization` module (imported with its warnings silenced).
        qat: prepare for quantization-aware training instead of calibration.
    Returns:
        A `QuantWrapper` around the copy: eval mode for PTQ, train mode for QAT.
    """
    model = copy.deepcopy(model).cpu()
    model.train(qat)  # QAT fusion keeps BN live (train); PTQ folds it (eval)
    _fuse(model, tq, qat)
    _wrap_float_islands(model)
    wrapped = tq.QuantWrapper(model)
    engine = torch.backends.quantized.engine
    wrapped.qconfig = tq.get_default_qat_qconfig(engine) if qat else tq.get_default_qconfig(engine)
    if qat:
        return tq.prepare_qat(wrapped.train(), inplace=False)
    return tq.prepare(wrapped.eval(), inplace=False)
