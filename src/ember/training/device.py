"""Device and precision choices."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ember.errors import ConfigError

__all__ = ["resolve_device", "autocast", "check_precision", "cpu_has_native_bf16"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must be present.

    Under torchrun each process on a node takes the GPU of its local rank.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return _cuda(local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: got 'cuda' but no CUDA GPU is visible; valid here: auto, cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: got 'mps' but MPS is not available; valid here: auto, cpu")
    return _cuda(local_rank) if name == "cuda" else torch.device(name)


def _cuda(local_rank: int) -> torch.device:
    if local_rank == 0 and "LOCAL_RANK" not in os.environ:
        return torch.device("cuda")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                          "start at most that many processes per node")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it.

    Without it a bf16 matmul is emulated: measured 400x slower than fp32 on an AVX2-only CPU.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no fast bf16 either
        return False


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run (or would run hundreds of times slower).

    Raises:
        ConfigError: fp16 off CUDA, or bf16 on a CPU without native bf16.
    """
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: got 'fp16' on {device.type}; fp16 needs CUDA, use bf16 or fp32"
        )
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError("train.precision: got 'bf16' but this CPU has no native bf16 (AVX512-BF16/AMX), where "
                          "it runs hundreds of times slower than fp32; use train.precision=fp32")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Mixed precision for the forward pass: bf16 on CPU/CUDA, fp16 on CUDA."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
