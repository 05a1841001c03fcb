"""Tables larger than memory: Parquet, JSON Lines or CSV read in blocks into memory-mapped arrays.

The file is read a row group (Parquet) or a block of lines at a time; numeric features go to
a float32 file and texts, once tokenised, to a uint16/uint32 file of (rows, max_len) ids,
under a cache folder keyed by the file's sha256 and the settings (a `meta.json` written last
says the folder is complete). Labels are held in memory; a batch reads its rows from the map.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ember.data.bundle import DataBundle, DataInfo
from ember.data.lazy import ItemDataset
from ember.data.splits import limit, split_indices
from ember.data.token_files import _locked, encode_array
from ember.data.tokenizer import fit_tokenizer, tokenizer_from_json
from ember.errors import DataError, did_you_mean

__all__ = ["MappedRows", "load_table", "row_blocks", "table_columns"]

FORMAT = 1
_BLOCK = 50_000  # rows per block of a JSON Lines or CSV file


def table_columns(path: Path, fmt: str) -> list[str]:
    """The column names of a table file (JSON Lines: the keys of its first row)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except Exception as exc:  # pyarrow raises several kinds for a file that is not Parquet
            raise DataError(f"'{path}' is not a Parquet file: {exc}") from None
    with open(path, encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            return [h.strip() for h in next(csv.reader(f), [])]
        first = f.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError as exc:
        raise DataError(f"'{path}' line 1 is not JSON: {exc.msg}") from None
    if not isinstance(row, dict):
        raise DataError(f"'{path}' line 1: expected a JSON object per line")
    return list(row)


def row_blocks(path: Path, fmt: str, columns: list[str]) -> Iterator[dict[str, list[Any]]]:
    """The file's `columns`, a block of rows at a time (Parquet: one row group per block)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i, columns=columns).to_pydict()
        return
    with open(path, encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            cols = [header.index(c) for c in columns]
            block: list[list[str]] = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < len(header):
                    raise DataError(f"'{path}' row {line}: {len(row)} fields, the header has {len(header)}")
                block.append(row)
                if len(block) == _BLOCK:
                    yield {c: [r[j] for r in block] for c, j in zip(columns, cols, strict=True)}
                    block = []
            if block:
                yield {c: [r[j] for r in block] for c, j in zip(columns, cols, strict=True)}
            return
        rows: list[dict[str, Any]] = []
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"'{path}' line {line} is not JSON: {exc.msg}") from None
            missing = [c for c in columns if not isinstance(row, dict) or c not in row]
            if missing:
                raise DataError(f"'{path}' line {line}: no '{missing[0]}' field")
            rows.append(row)
            if len(rows) == _BLOCK:
                yield {c: [r[c] for r in rows] for c in columns}
                rows = []
        if rows:
            yield {c: [r[c] for r in rows] for c in columns}


class MappedRows(ItemDataset):
    """Rows of a memory-mapped (N, width) array and their labels; features standardised."""

    def __init__(self, path: Path, dtype: str, shape: tuple[int, int], labels: Tensor, rows: Tensor,
                 mean: Tensor | None = None, std: Tensor | None = None) -> None:
        super().__init__(rows)
        self.path, self.dtype, self.shape = path, dtype, shape
        self.labels, self.mean, self.std = labels, mean, std
        self._map: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}  # workers reopen the map; never a copy of it

    @property
    def y(self) -> Tensor:
        return self.labels[self.rows]

    def item_shape(self) -> tuple[int, ...]:
        return (self.shape[1],)

    def _read(self, rows: Tensor, epoch: int, train: bool, positions: Tensor) -> tuple[Tensor, Tensor]:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=self.dtype, mode="r", shape=self.shape)
        x = torch.from_numpy(np.asarray(self._map[rows.numpy()]).astype(
            np.float32 if self.dtype == "float32" else np.int64))
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x, self.labels[rows]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def _task_and_labels(raw: list[Any], task: str, path: Path, column: str) -> tuple[str, list[str], np.ndarray]:
    """The task, class names and labels (class ids, or float targets (N, 1))."""
    if any(v is None or (isinstance(v, str) and not v.strip()) for v in raw):
        first = next(i for i, v in enumerate(raw) if v is None or (isinstance(v, str) and not v.strip()))
        raise DataError(f"'{path}': empty '{column}' on row {first + 1}")
    if task == "auto":
        try:
            values = [float(v) for v in raw]
            task = ("classification" if all(v.is_integer() for v in values) and len(set(values)) <= 20
                    else "regression")
        except (TypeError, ValueError):
            task = "classification"
    if task == "regression":
        try:
            return task, [], np.asarray([[float(v)] for v in raw], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"'{path}': label column '{column}' is not numeric; use data.task=classification") from None
    names = [str(v).strip() for v in raw]
    classes = sorted(set(names), key=lambda v: (len(v), v) if v.lstrip("-").isdigit() else (1 << 30, v))
    if len(classes) < 2:
        raise DataError(f"'{path}': column '{column}' has a single class {classes}")
    index = {c: i for i, c in enumerate(classes)}
    return task, classes, np.asarray([index[n] for n in names], dtype=np.int64)


def _convert(cfg: Any, fmt: str, folder: Path, seed: int) -> dict[str, Any]:
    """Read the file into `folder` (x.bin, labels.npy, meta.json last); returns the meta."""
    path, label = cfg.path, cfg.label_column
    header = table_columns(path, fmt)
    text = getattr(cfg, "text_column", None)
    features = [text] if text else (cfg.feature_columns or [c for c in header if c != label])
    for c in [label, *features]:
        if c not in header:
            raise DataError(f"'{path}': no column '{c}'; {did_you_mean(c, header)}")
    raw: list[Any] = []
    tmp = folder / f".x.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as out:
        for block in row_blocks(path, fmt, [label] if text else [label, *features]):
            start = len(raw)
            raw += block[label]
            if not text:
                try:
                    np.asarray([block[c] for c in features], dtype=np.float32).T.tofile(out)
                except (TypeError, ValueError):
                    bad = next(i for i in range(len(block[label])) if not _is_number(block, features, i))
                    raise DataError(f"'{path}' row {start + bad + 1}: a feature in "
                                    f"{features} is not a number") from None
    if not raw:
        raise DataError(f"'{path}': no data rows")
    task, classes, labels = _task_and_labels(raw, cfg.task if not text else "classification", path, label)
    meta: dict[str, Any] = {"format": FORMAT, "rows": len(raw), "task": task, "classes": classes,
                            "features": features, "dtype": "float32", "width": len(features)}
    if text:  # tokenizer from the training split's texts (a bounded sample), then every text
        tr = _split(len(raw), labels, cfg, seed)[0]
        tok = _fit_on_train(cfg, fmt, set(tr.tolist()))
        dtype = "uint16" if tok.vocab_size + 1 <= 1 << 16 else "uint32"
        with open(tmp, "wb") as out:
            for block in row_blocks(path, fmt, [text]):
                ids = np.full((len(block[text]), cfg.max_len), tok.vocab_size, dtype=dtype)
                for i, t in enumerate(block[text]):
                    enc = encode_array(tok, str(t or ""))[: cfg.max_len]
                    ids[i, : len(enc)] = enc
                ids.tofile(out)
        meta.update(dtype=dtype, width=cfg.max_len, tokenizer=tok.to_json())
    os.replace(tmp, folder / "x.bin")
    np.save(folder / "labels.npy", labels)
    atomic = folder / f".meta.json.{os.getpid()}.tmp"
    atomic.write_text(json.dumps(meta))
    os.replace(atomic, folder / "meta.json")
    return meta


def _is_number(block: dict[str, list[Any]], features: list[str], i: int) -> bool:
    try:
        [float(block[c][i]) for c in features]
    except (TypeError, ValueError):
        return False
    return True


def _fit_on_train(cfg: Any, fmt: str, train: set[int]) -> Any:
    parts: list[str] = []
    size, row = 0, 0
    for block in row_blocks(cfg.path, fmt, [cfg.text_column]):
        for t in block[cfg.text_column]:
            if row in train and size < getattr(cfg, "bpe_sample_chars", 20_000_000):
                parts.append(str(t or ""))
                size += len(parts[-1])
            row += 1
    return fit_tokenizer(cfg.tokenizer, "\n".join(parts), cfg.bpe_vocab_size)


def _split(n: int, labels: np.ndarray, cfg: Any, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    stratify = labels if labels.ndim == 1 and np.bincount(labels).min() >= 3 else None
    try:
        return split_indices(n, cfg, seed, labels=stratify)
    except ValueError:  # a split too small to hold every class
        return split_indices(n, cfg, seed)


def _cached(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        size = (folder / "x.bin").stat().st_size
        n = len(np.load(folder / "labels.npy", allow_pickle=False))
    except (OSError, ValueError, KeyError):
        return None
    if meta.get("format") != FORMAT or n != meta["rows"] or \
            size != meta["rows"] * meta["width"] * np.dtype(meta["dtype"]).itemsize:
        return None
    return meta


def load_table(cfg: Any, seed: int) -> DataBundle:
    """A Parquet, JSON Lines (or CSV with `stream: true`) table; stratified split from the seed."""
    fmt = "csv" if cfg.name in ("csv", "text_csv") else cfg.name
    if not cfg.path.is_file():
        raise DataError(f"data.path: '{cfg.path}' does not exist")
    text = getattr(cfg, "text_column", None)
    settings = {"file": _file_sha(cfg.path), "fmt": fmt, "label": cfg.label_column, "text": text,
                "features": getattr(cfg, "feature_columns", None), "task": getattr(cfg, "task", None),
                "format": FORMAT}
    if text:  # the tokenizer is fitted on the training split, which the seed picks
        settings.update(tokenizer=cfg.tokenizer, vocab=cfg.bpe_vocab_size, max_len=cfg.max_len, seed=seed,
                        sample=getattr(cfg, "bpe_sample_chars", None), split=[cfg.val_fraction, cfg.test_fraction])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    folder = (cfg.cache or Path.home() / ".cache" / "ember" / "tables") / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            meta = _cached(folder) or _convert(cfg, fmt, folder, seed)
    except OSError as e:
        raise DataError(f"data.cache: cannot write '{folder}': {e.strerror or e}") from None
    labels = torch.from_numpy(np.load(folder / "labels.npy", allow_pickle=False))
    n, width = meta["rows"], meta["width"]
    tr, va, te = _split(n, labels.numpy(), cfg, seed)
    tr = limit(tr, cfg)
    x_path, dtype = folder / "x.bin", meta["dtype"]
    mean = std = None
    if not text:
        mean, std = _train_stats(x_path, (n, width), tr)

    def split(rows: Tensor) -> MappedRows:
        return MappedRows(x_path, dtype, (n, width), labels, rows, mean, std)

    classification = meta["task"] == "classification"
    extra = {"source": f"{fmt} {cfg.path}", "rows": n, "table_cache": str(folder)}
    tok = None
    if text:
        tok = tokenizer_from_json(meta["tokenizer"])
        extra.update(vocab_size=tok.vocab_size + 1, pad_id=tok.vocab_size, tokenizer=tok.kind)
    else:
        extra["targets"] = [cfg.label_column]
    info = DataInfo(
        task=meta["task"], input_kind="tokens" if text else "tabular", input_shape=(width,),
        num_outputs=len(meta["classes"]) if classification else 1, class_names=tuple(meta["classes"]),
        feature_names=() if text else tuple(meta["features"]),
        mean=() if mean is None else tuple(mean.tolist()), std=() if std is None else tuple(std.tolist()),
        extra=extra,
    )
    return DataBundle(split(tr), split(va), split(te), info, tokenizer=tok)


def _train_stats(path: Path, shape: tuple[int, int], rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and (unbiased) std over the training rows, summed in float64 by chunks."""
    x = np.memmap(path, dtype="float32", mode="r", shape=shape)
    total, sq, n = np.zeros(shape[1]), np.zeros(shape[1]), 0
    for chunk in rows.sort().values.split(65536):
        block = np.asarray(x[chunk.numpy()], dtype=np.float64)
        total += block.sum(0)
        sq += (block * block).sum(0)
        n += len(block)
    mean = total / max(n, 1)
    var = (sq - n * mean * mean) / max(n - 1, 1)
    std = np.sqrt(np.clip(var, 0, None))
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0 if n <= 1 else 1e-6)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))
