"""Text classification: which standard-library package does a snippet of code come from?

Snippets are runs of consecutive non-empty lines; files are assigned to splits by a hash
of their path (within each package), so no file contributes to two splits. Classes are
balanced by capping each at the same count.
"""

from __future__ import annotations

import csv
import hashlib
import sysconfig
from pathlib import Path

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.text import assign_splits, stdlib_files
from ember.data.text_config import StdlibModulesConfig, TextCsvConfig
from ember.data.tokenizer import fit_tokenizer
from ember.errors import DataError, did_you_mean

__all__ = ["load_stdlib_modules", "load_text_csv", "encode_padded"]

_MIN_CHARS = 80


def _snippets(text: str, lines_per: int) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = []
    for i in range(0, len(lines) - lines_per + 1, lines_per):
        chunk = "\n".join(lines[i:i + lines_per])
        if len(chunk) >= _MIN_CHARS:
            out.append(chunk)
    return out


def encode_padded(texts: list[str], tok, max_len: int, pad_id: int) -> torch.Tensor:  # noqa: ANN001
    """Token ids (N, max_len), truncated, padded on the right with `pad_id`."""
    out = torch.full((len(texts), max_len), pad_id, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = tok.encode(text)[:max_len]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _text_bundle(split_texts: dict[str, list[str]], split_labels: dict[str, list[int]], classes: list[str],
                 cfg: StdlibModulesConfig | TextCsvConfig, seed: int, extra: dict) -> DataBundle:
    tok = fit_tokenizer(cfg.tokenizer, "\n".join(split_texts["train"]), cfg.bpe_vocab_size)
    pad_id = tok.vocab_size  # one id past the tokenizer's vocabulary
    datasets = {}
    for split in ("train", "val", "test"):
        x = encode_padded(split_texts[split], tok, cfg.max_len, pad_id)
        y = torch.tensor(split_labels[split], dtype=torch.long)
        if split == "train" and cfg.limit is not None:
            gen = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(x), generator=gen)[: cfg.limit].sort().values
            x, y = x[keep], y[keep]
        datasets[split] = ArrayDataset(x, y)
    info = DataInfo(
        task="classification", input_kind="tokens", input_shape=(cfg.max_len,), num_outputs=len(classes),
        class_names=tuple(classes),
        extra={**extra, "vocab_size": tok.vocab_size + 1, "pad_id": pad_id, "tokenizer": tok.kind,
               "sizes": {s: len(d) for s, d in datasets.items()}},
    )
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info, tokenizer=tok)


def load_stdlib_modules(cfg: StdlibModulesConfig, seed: int) -> DataBundle:
    by_package: dict[str, list[tuple[str, Path]]] = {}
    for rel, path in stdlib_files():
        top = rel.split("/")[0]
        if top in cfg.packages:
            by_package.setdefault(top, []).append((rel, path))
    missing = [p for p in cfg.packages if p not in by_package]
    if missing:
        raise DataError(f"data.packages: {missing} are not packages of this Python's standard library")
    if len(cfg.packages) < 2:
        raise DataError("data.packages: need at least 2 packages")
    texts: dict[str, dict[str, list[str]]] = {s: {} for s in ("train", "val", "test")}
    files: dict[str, dict[str, int]] = {s: {} for s in texts}
    for package in cfg.packages:
        entries = by_package[package]
        parts = assign_splits([r for r, _ in entries], cfg.val_fraction, cfg.test_fraction)
        paths = dict(entries)
        for split, names in parts.items():
            snippets = []
            for name in names:
                snippets += _snippets(paths[name].read_text(encoding="utf-8", errors="replace"), cfg.snippet_lines)
            texts[split][package] = snippets
            files[split][package] = len(names)
    # Balance: the same number of snippets per class in each split (the smallest class's).
    split_texts: dict[str, list[str]] = {}
    split_labels: dict[str, list[int]] = {}
    for split, per in texts.items():
        cap = min(len(v) for v in per.values())
        if split == "train" and cfg.per_class is not None:
            cap = min(cap, cfg.per_class)
        if cap == 0:
            raise DataError(f"stdlib_modules: a package has no {split} snippets; lower data.snippet_lines")
        rng = np.random.default_rng(int(hashlib.sha1(split.encode()).hexdigest()[:8], 16))
        split_texts[split], split_labels[split] = [], []
        for label, package in enumerate(cfg.packages):
            chosen = sorted(rng.choice(len(per[package]), size=cap, replace=False))
            split_texts[split] += [per[package][i] for i in chosen]
            split_labels[split] += [label] * cap
    extra = {"source": "python stdlib packages", "python": sysconfig.get_python_version(), "files": files}
    return _text_bundle(split_texts, split_labels, list(cfg.packages), cfg, seed, extra)


def load_text_csv(cfg: TextCsvConfig, seed: int) -> DataBundle:
    """The user's CSV with a text column and a label column; stratified split from the seed."""
    from ember.data.splits import split_indices

    if not cfg.path.is_file():
        raise DataError(f"CSV file '{cfg.path}' does not exist")
    with open(cfg.path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in (cfg.text_column, cfg.label_column):
            if col not in header:
                raise DataError(f"'{cfg.path}': no column '{col}'; {did_you_mean(col, header)}")
        rows = [(r[cfg.text_column] or "", (r[cfg.label_column] or "").strip()) for r in reader]
    if len(rows) < 3:
        raise DataError(f"'{cfg.path}': needs at least 3 rows")
    classes = sorted({label for _, label in rows})
    labels = np.array([classes.index(label) for _, label in rows])
    stratify = labels if np.bincount(labels).min() >= 3 else None
    tr, va, te = split_indices(len(rows), cfg, seed, labels=stratify)
    split_texts = {s: [rows[i][0] for i in idx.tolist()] for s, idx in (("train", tr), ("val", va), ("test", te))}
    split_labels = {s: [int(labels[i]) for i in idx.tolist()] for s, idx in (("train", tr), ("val", va), ("test", te))}
    return _text_bundle(split_texts, split_labels, classes, cfg, seed, {"source": f"csv {cfg.path}"})
