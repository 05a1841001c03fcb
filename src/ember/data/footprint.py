"""The data side of `ember plan`: items, bytes on disk, decode cost, and whether it fits in memory.

The decode cost is measured, not guessed: a few training batches are read (and augmented)
in this process and timed, and the per-item time is scaled to an epoch and divided among the
configured workers (an upper bound on their help: they share the machine's cores).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ember.data.bundle import DataBundle, DataInfo
from ember.data.lazy import ItemDataset

__all__ = ["data_footprint", "available_memory"]

_SAMPLE_ITEMS = 64
_MAPPED = ("stdlib_text", "text_files")  # planned without building: always token files


def available_memory() -> int | None:
    """Bytes of memory available now (Linux), or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _disk_bytes(cfg: Any) -> int | None:
    """Bytes of the source's files (a folder: every file under it); None for built-in data."""
    paths: list[Path] = []
    if getattr(cfg, "path", None) is not None:
        paths = [Path(cfg.path)]
    elif getattr(cfg, "paths", None):
        paths = [Path(p) for p in cfg.paths]
    if not paths:
        max_chars = getattr(cfg, "max_chars", None)
        return int(max_chars) if max_chars else None  # the stdlib corpus: ~1 byte a character
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def _decode_seconds(bundle: DataBundle) -> float | None:
    """Seconds to read and augment one training item, timed on a few batches here."""
    n = min(len(bundle.train), _SAMPLE_ITEMS)
    if n == 0:
        return None
    idx = torch.arange(n)
    bundle.train.batch(idx[:1], 0, train=True)  # first call pays one-off costs (imports, maps)
    start = time.perf_counter()
    bundle.train.batch(idx, 0, train=True)
    return (time.perf_counter() - start) / n


def data_footprint(cfg: Any, info: DataInfo, train_size: int, bundle: DataBundle | None) -> dict[str, Any]:
    """Items per split, bytes on disk and in memory, decode cost per epoch, and the fit in memory.

    Args:
        cfg: the data config section.
        info: the data description (input shape and kind).
        train_size: training items.
        bundle: the built data, or None when the plan estimated it (then no decode timing).

    Returns:
        A JSON-able dict: items, disk_bytes, memory_bytes (every split decoded as tensors),
        streamed (whether batches are read from disk), decode_s_per_item, decode_s_per_epoch,
        workers, available_bytes, fits_in_memory.
    """
    items = bundle.sizes() if bundle is not None else {"train": train_size}
    per_item = math.prod(info.input_shape) * (8 if info.input_kind == "tokens" else 4)
    memory = sum(items.values()) * per_item
    workers = int(getattr(cfg, "workers", 0))
    out: dict[str, Any] = {
        "items": items, "disk_bytes": _disk_bytes(cfg), "memory_bytes": memory,
        "streamed": (isinstance(bundle.train, ItemDataset) if bundle is not None
                     else getattr(cfg, "name", "") in _MAPPED), "workers": workers,
    }
    seconds = _decode_seconds(bundle) if bundle is not None else None
    if seconds is not None:
        out["decode_s_per_item"] = seconds
        out["decode_s_per_epoch"] = seconds * train_size / max(workers, 1)
    available = available_memory()
    out["available_bytes"] = available
    out["fits_in_memory"] = None if available is None else memory < available // 2
    return out
