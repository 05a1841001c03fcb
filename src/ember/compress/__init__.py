"""Compression of finished runs: pruning, int8 quantization and distillation into child runs.

`compress(run_dir, steps)` writes one new run per step beside the parent (which is only
read), each with `compression.json` comparing parent and child. The methods live in
`prune.py`, `quantize.py` and `distill.py`; `pipeline.py` ties them to run directories.

This package's `__init__` imports nothing heavy: `ember.config` and the CLI parser load
`ember.compress.config` through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.runs import Run

__all__ = ["compress", "require_float"]


def compress(run_dir: str | Path, steps: Any = None, out_dir: str | Path | None = None, quiet: bool = False,
             verbose: bool = True) -> list[Run]:
    """Compress a finished run into new child runs; see `ember.compress.pipeline.compress`."""
    from ember.compress.pipeline import compress as _compress

    return _compress(run_dir, steps, out_dir, quiet=quiet, verbose=verbose)


def require_float(model: Any, run: Path, what: str) -> None:
    """ConfigError when `model` holds int8 modules, which `what` (gradients, ONNX) cannot use."""
    from ember.errors import ConfigError

    if any(type(m).__module__.startswith("torch.ao.nn.quantized") or type(m).__name__ in ("Int8WeightLinear", "Int4WeightLinear")
           for m in model.modules()):
        raise ConfigError(f"'{run}' holds an int8 model (ember compress --method quantize), which {what}; "
                          "use its float parent run (see its compression.json)")
