"""Reloading a compressed child run: replay its recorded transforms, then load its weights.

A child's `compression.json` lists, in order, what turns the model its `config.yaml`
builds into the model its `model.safetensors` holds:

    {"kind": "structure", "record": {...}}      prune.rebuild_structure (layers made smaller)
    {"kind": "quantize", "mode": ..., "meta": {...}}   quantize.load_quantized (int8 modules)

The list is cumulative (a quantized child of a pruned child lists both), so reloading
never needs the parent's folder, which may have been moved or deleted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ember.compress.measure import example_input
from ember.compress.prune import rebuild_structure
from ember.compress.quantize import load_quantized
from ember.compress.record import read_record
from ember.data.bundle import DataInfo
from ember.errors import RunError
from ember.runs import Run
from ember.weights import load_tensors, load_weights

__all__ = ["load_compressed", "apply_structure", "is_quantized"]


def is_quantized(transforms: list[dict[str, Any]]) -> bool:
    """Whether a transform list ends in int8 weights."""
    return any(t.get("kind") == "quantize" for t in transforms)


def apply_structure(model: nn.Module, transforms: list[dict[str, Any]]) -> nn.Module:
    """Replay the structural (pruning) transforms on a freshly built model."""
    for t in transforms:
        if t.get("kind") == "structure":
            model = rebuild_structure(model, t["record"])
    return model


def load_compressed(run: Run, model: nn.Module, info: DataInfo, weights: Path) -> nn.Module:
    """Turn the model built from a child's config into the child's model, weights loaded.

    Called by `ember.loading.load_run` for any run holding a `compression.json`, so evaluate,
    predict, generate, report, explain and serve all see the compressed model.

    Raises:
        RunError: an unknown transform, or one that is not last after quantization.
        CheckpointError: weights that do not fit the rebuilt model.
    """
    record = read_record(run.path) or {}
    transforms = record.get("transforms", [])
    if not isinstance(transforms, list):
        raise RunError(f"'{run.path / 'compression.json'}': 'transforms' is not a list")
    for i, t in enumerate(transforms):
        kind = t.get("kind") if isinstance(t, dict) else None
        if kind == "structure":
            continue
        if kind == "quantize":
            if i != len(transforms) - 1:
                raise RunError(f"'{run.path}': quantization must be the last transform in compression.json")
            model = apply_structure(model, transforms[:i])
            return load_quantized(model, load_tensors(weights), t.get("meta", {}), example_input(info))
        raise RunError(f"'{run.path / 'compression.json'}': unknown transform {kind!r}; valid: structure, quantize")
    model = apply_structure(model, transforms)
    load_weights(model, weights)
    return model
