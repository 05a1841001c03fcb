"""Decoding steps through torch.compile: one new token per step, the small operations fused.

A decoding step of a language model reads every weight once for a single row of
activations. The matrix-vector products are bound by how fast the weights come from memory;
everything else (norms, rotary embeddings, the cache update, softmax, residual adds, ~45
small operations per layer) costs more in dispatch than in arithmetic. torch.compile
(Inductor) fuses those into a few generated kernels, leaving the products to the same
library calls as before, so the time per token approaches the time to read the weights.

`compile_decoding(model)` sets `model.decode_step`; the streaming loops (`GPT.generate`,
`Llama.generate`, `ember.models.decoding.generate_ids`) send every one-token step with a KV
cache through it and the prompt through the eager model, so only one shape family is ever
compiled (`dynamic=True`: the position and the cache length vary without recompiling).
The compiled step skips the guards that re-check module attributes on every call (they cost
~1 ms per token on a 30-layer model): compile after the model is final (weights loaded,
merged, quantized, in eval mode); changing its structure afterwards needs a new call.
The first step compiles (about a minute for a 30-layer model on 2 cores; Inductor's disk
cache makes later processes faster). On a CPU Inductor needs a C++ compiler.
"""

from __future__ import annotations

import itertools
import os
import shutil
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ember.errors import ConfigError

__all__ = ["compile_decoding", "decode_step_of", "check_compiler"]

DecodeStep = Callable[[Tensor, Any, int], Tensor]


def check_compiler(device: torch.device) -> None:
    """Raise a one-line ConfigError when torch.compile cannot build kernels for `device`."""
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "clang++", "c++"]
        if not any(c and shutil.which(c) for c in compilers):
            raise ConfigError("compile: torch.compile on a CPU needs a C++ compiler (g++ or clang++, or $CXX); "
                              "install one (apt install g++) or decode without compile")
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError as e:
            raise ConfigError("compile: torch.compile on CUDA needs triton (pip install triton), "
                              "or decode without compile") from e


_copies = itertools.count()


def _step(model: nn.Module, idx: Tensor, cache: Any, start: int) -> Tensor:
    return model(idx, kv_cache=cache, start_pos=start)  # (B, 1, V_padded)


def compile_decoding(model: nn.Module) -> nn.Module:
    """`model` (a language model with `new_cache`) with its one-token steps compiled; returns it.

    Raises:
        ConfigError: the model has no KV cache, or this machine cannot compile.
    """
    if not hasattr(model, "new_cache"):
        raise ConfigError(f"compile: {type(model).__name__} has no KV cache, so there is no decoding step to compile")
    first = next(model.parameters(), None)
    check_compiler(first.device if first is not None else torch.device("cpu"))
    # TorchDynamo keeps its compiled graphs per code object, and with the module guards skipped it
    # could not tell two models apart: each model gets its own copy of `_step`'s code.
    code = _step.__code__.replace(co_name=f"_step_{next(_copies)}")
    own_step = types.FunctionType(code, _step.__globals__, code.co_name)
    compiled = torch.compile(own_step, dynamic=True,
                             options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe})
    model.eval()
    # One eager step first: state a module makes on first use (the weight-only kernels' copies)
    # then exists, so the compiled graph never breaks to make it (a break per layer would
    # recompile once per layer index and hit TorchDynamo's recompile limit).
    with torch.no_grad():
        probe = torch.zeros(1, 1, dtype=torch.long, device=first.device if first is not None else "cpu")
        model(probe, kv_cache=model.new_cache(1, 1), start_pos=0)
    # A plain attribute, not a submodule: state_dict, parameters and copies of the weights ignore it.
    model.__dict__["decode_step"] = lambda idx, cache, start: compiled(model, idx, cache, start)
    return model


def decode_step_of(model: nn.Module) -> DecodeStep | None:
    """The compiled one-token step `compile_decoding` gave `model`, or None."""
    return model.__dict__.get("decode_step")
