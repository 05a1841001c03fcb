"""Tensors on disk: safetensors only, written atomically, refused if not genuine.

A pickle file renamed `.safetensors` fails safetensors' header check and is never
unpickled: nothing here calls `torch.load` or `pickle`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ember.errors import CheckpointError
from ember.runs import file_mode, fsync_dir
from ember.safe_paths import guard

__all__ = ["save_tensors", "load_tensors", "save_weights", "load_weights", "sha256_file"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(guard(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to `path` atomically (temp file, fsync, rename)."""
    guard(path)
    tmp = guard(path.with_name(f".{path.name}.tmp"))
    # safetensors refuses views that share memory (tied weights): store each tensor once
    # under its first name, and let `load_weights` re-tie by loading into the model.
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # a leftover (or planted) entry: never write through it
        save_file(flat, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), file_mode())  # safetensors creates 0600; follow the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (SafetensorError, OSError) as exc:  # a full disk, a quota, a read-only folder
        tmp.unlink(missing_ok=True)
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(f"could not write '{path}' ({lines[0] if lines else type(exc).__name__}); "
                              "nothing partial was kept") from None


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file, turning any failure into a one-line `CheckpointError`."""
    if not guard(path).is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"'{path}' is not a valid safetensors file ({first}); Ember reads only safetensors"
        ) from None


def _unique_state(model: nn.Module) -> dict[str, Tensor]:
    """State dict with tied tensors (same storage) kept once, under their first name."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def save_state(state: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """`save_tensors` for weights: refuses to write a non-finite tensor."""
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to save '{path.name}': tensor '{name}' is not finite")
    save_tensors(state, path, metadata)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a model's parameters and buffers; refuses non-finite weights."""
    save_state(_unique_state(model), path, metadata)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load weights into `model`; names and shapes must match exactly (tied ones may be absent)."""
    tensors = load_tensors(path)
    expected = model.state_dict()
    unique = _unique_state(model)
    missing = [k for k in unique if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"'{path}' does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, t in tensors.items():
        if t.shape != expected[k].shape:
            raise CheckpointError(
                f"'{path}': tensor '{k}' has shape {list(t.shape)}, model expects {list(expected[k].shape)}"
            )
    model.load_state_dict(tensors, strict=False)
