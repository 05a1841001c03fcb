"""The user's own table: a CSV file read into memory (see `image_folder.py` for images)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import CsvConfig
from ember.data.splits import limit, split_indices
from ember.data.tables import load_table
from ember.errors import DataError, did_you_mean

__all__ = ["load_csv", "read_csv_rows"]


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DataError(f"CSV file '{path}' does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if r]
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not a UTF-8 text CSV (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                        "save it as CSV, UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"'{path}' is not a readable CSV ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"'{path}': needs a header row and at least one data row")
    return [h.strip() for h in rows[0]], rows[1:]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _column(header: list[str], name: str, path: Path, what: str) -> int:
    if name not in header:
        raise DataError(f"'{path}': no {what} column '{name}'; {did_you_mean(name, header)}")
    return header.index(name)


def _floats(rows: list[list[str]], cols: list[int], header: list[str], path: Path) -> np.ndarray:
    out = np.empty((len(rows), len(cols)), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, c in enumerate(cols):
            try:
                value = float(row[c])
            except (ValueError, IndexError):
                shown = row[c] if c < len(row) else "<missing>"
                raise DataError(
                    f"'{path}' row {i + 2}, column '{header[c]}': {shown!r} is not a number"
                ) from None
            if not np.isfinite(value) or abs(value) > _FLOAT32_MAX:
                raise DataError(f"'{path}' row {i + 2}, column '{header[c]}': {row[c]!r} is not a finite number; "
                                "fill or drop that row")
            out[i, j] = value
    return out


def load_csv(cfg: CsvConfig, seed: int) -> DataBundle:
    """Numeric feature columns + a label column; classification or regression (auto-detected)."""
    if cfg.stream:
        return load_table(cfg, seed)
    header, rows = _read_table(cfg.path)
    label_col = _column(header, cfg.label_column, cfg.path, "label")
    names = cfg.feature_columns or [h for i, h in enumerate(header) if i != label_col]
    cols = [_column(header, n, cfg.path, "feature") for n in names]
    x_np = _floats(rows, cols, header, cfg.path)
    raw_labels = [r[label_col].strip() if label_col < len(r) else "" for r in rows]
    for i, (row, label) in enumerate(zip(rows, raw_labels)):
        if len(row) != len(header) or not label:
            what = f"{len(row)} fields, the header has {len(header)}" if len(row) != len(header) else "no label"
            raise DataError(f"'{cfg.path}' row {i + 2}: {what} (label column '{cfg.label_column}'); fix or drop it")
    task = cfg.task
    if task == "auto":
        try:
            values = [float(v) for v in raw_labels]
            is_int = all(v.is_integer() for v in values)
            task = "classification" if is_int and len(set(values)) <= 20 else "regression"
        except ValueError:
            task = "classification"
    if task == "classification":
        classes = sorted(set(raw_labels), key=lambda v: (len(v), v) if v.lstrip("-").isdigit() else (1 << 30, v))
        if len(classes) < 2:
            raise DataError(f"'{cfg.path}': label column '{cfg.label_column}' holds one class ({classes[0]!r}); "
                            "classification needs at least 2")
        y = torch.tensor([classes.index(v) for v in raw_labels], dtype=torch.long)
        stratify = y.numpy() if np.bincount(y.numpy()).min() >= 3 else None
    else:
        try:
            y = torch.tensor([[float(v)] for v in raw_labels], dtype=torch.float32)
            if not torch.isfinite(y).all():
                raise ValueError
        except (ValueError, OverflowError):
            raise DataError(f"'{cfg.path}': label column '{cfg.label_column}' is not all finite numbers; "
                            "fix those rows or use data.task=classification") from None
        classes, stratify = [], None
    x = torch.from_numpy(x_np)
    tr, va, te = split_indices(len(x), cfg, seed, labels=stratify)
    tr = limit(tr, cfg)
    mean, std = x[tr].mean(0), x[tr].std(0).nan_to_num(1.0).clamp_min(1e-6)
    x = (x - mean) / std
    info = DataInfo(
        task=task, input_kind="tabular", input_shape=(len(cols),),
        num_outputs=len(classes) if task == "classification" else 1,
        class_names=tuple(classes), feature_names=tuple(names),
        mean=tuple(mean.tolist()), std=tuple(std.tolist()),
        extra={"source": f"csv {cfg.path}", "rows": len(rows), "targets": [cfg.label_column]},
    )
    return DataBundle(ArrayDataset(x[tr], y[tr]), ArrayDataset(x[va], y[va]), ArrayDataset(x[te], y[te]), info)


def _key(name: str) -> str:
    """A column name as people write it: 'Sepal Length (cm)' and 'sepal_length' are one key."""
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"\([^)]*\)", "", name.lower())).strip("_")


def read_csv_rows(path: Path, info: DataInfo) -> torch.Tensor:
    """Feature rows of a CSV (header naming the run's feature columns), standardised like training."""
    header, rows = _read_table(path)
    by_key = {_key(h): i for i, h in enumerate(header)}
    cols = []
    for name in info.feature_names:
        col = header.index(name) if name in header else by_key.get(_key(name))
        if col is None:
            raise DataError(f"'{path}': no column for feature '{name}'; this model expects columns "
                            f"{', '.join(info.feature_names)} (case, spaces and units in parentheses are ignored)")
        cols.append(col)
    x = torch.from_numpy(_floats(rows, cols, header, path))
    return (x - torch.tensor(info.mean)) / torch.tensor(info.std)
