"""Text classification: which standard-library package does a snippet of code come from?

Snippets are runs of consecutive non-empty lines; files are assigned to splits by a hash
of their path (within each package), so no file contributes to two splits. Classes are
balanced by capping each at the same count.
"""

from __future__ import annotations

import csv
import hashlib
import sysconfig

import numpy as np
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.tables import load_table
from ember.data.text import assign_splits, stdlib_files
from ember.data.text_config import StdlibModulesConfig, TextCsvConfig, _TokensMixin
from ember.data.tokenizer import fit_tokenizer, tokenizer_from
from ember.errors import DataError, did_you_mean

__all__ = ["load_stdlib_modules", "load_text_csv", "encode_padded"]

_MIN_CHARS = 80


def _snippets(text: str, lines_per: int, stride: int | None = None) -> list[str]:
    """Runs of `lines_per` consecutive non-empty lines, starting every `stride` lines."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = []
    for i in range(0, len(lines) - lines_per + 1, stride or lines_per):
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
                 cfg: _TokensMixin, seed: int, extra: dict) -> DataBundle:
    if cfg.tokenizer_from:  # a pretrained model's (or another run's) tokenizer, not fitted here
        tok = tokenizer_from(cfg.tokenizer_from, cfg.max_len)
    else:
        tok = fit_tokenizer(cfg.tokenizer, "\n".join(split_texts["train"]), cfg.bpe_vocab_size)
    own_pad = getattr(tok, "pad_id", None)  # a pretrained tokenizer pads with its own [PAD]
    pad_id = tok.vocab_size if own_pad is None else own_pad  # else: one id past the vocabulary
    datasets = {}
    texts = dict(split_texts)
    for split in ("train", "val", "test"):
        x = encode_padded(split_texts[split], tok, cfg.max_len, pad_id)
        y = torch.tensor(split_labels[split], dtype=torch.long)
        if split == "train" and cfg.limit is not None:
            gen = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(x), generator=gen)[: cfg.limit].sort().values
            x, y = x[keep], y[keep]
            texts[split] = [split_texts[split][i] for i in keep.tolist()]
        datasets[split] = ArrayDataset(x, y)
    info = DataInfo(
        task="classification", input_kind="tokens", input_shape=(cfg.max_len,), num_outputs=len(classes),
        class_names=tuple(classes),
        extra={**extra, "vocab_size": tok.vocab_size + (own_pad is None), "pad_id": pad_id, "tokenizer": tok.kind,
               "sizes": {s: len(d) for s, d in datasets.items()}},
    )
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info, tokenizer=tok, texts=texts)


def _package_files(packages: list[str]) -> dict[str, dict[str, str]]:
    """package -> {relative path: source} for each requested top-level stdlib package."""
    files = stdlib_files()
    available = sorted({rel.split("/")[0] for rel, _ in files if "/" in rel})
    for package in packages:
        if package not in available:
            raise DataError(f"data.packages: '{package}' is not a package of this Python's standard "
                            f"library; {did_you_mean(package, available)}")
    if len(set(packages)) < 2 or len(set(packages)) != len(packages):
        raise DataError("data.packages: name at least 2 different packages, each once")
    out: dict[str, dict[str, str]] = {p: {} for p in packages}
    for rel, path in files:
        top = rel.split("/")[0]
        if top in out and "/" in rel:
            try:
                out[top][rel] = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
    return out


def load_stdlib_modules(cfg: StdlibModulesConfig, seed: int) -> DataBundle:
    """Snippets of stdlib packages labelled by package; split by file, balanced per split.

    Each package's files are split on their own (by a hash of the path, sized by snippet
    count), so every class has files in every split and no file is in two. Training
    snippets half-overlap by default (`stride`); val/test ones never do. Each split keeps
    the same number of snippets per class: the smallest class's (train: `per_class` if set).
    Nothing here depends on the seed except `limit`'s subsample.
    """
    sources = _package_files(list(cfg.packages))
    stride = cfg.stride or max(cfg.snippet_lines // 2, 1)
    texts: dict[str, dict[str, list[str]]] = {s: {} for s in ("train", "val", "test")}
    split_files: dict[str, list[str]] = {s: [] for s in texts}
    files: dict[str, dict[str, int]] = {s: {} for s in texts}
    for package in cfg.packages:
        counts = {rel: len(_snippets(src, cfg.snippet_lines)) for rel, src in sources[package].items()}
        counts = {rel: n for rel, n in counts.items() if n > 0}  # empty __init__.py etc.
        if len(counts) < 3:
            raise DataError(f"data.packages: '{package}' has {len(counts)} files with {cfg.snippet_lines}-line "
                            "snippets; it needs 3 (one per split): drop it or lower data.snippet_lines")
        parts = assign_splits(sorted(counts), cfg.val_fraction, cfg.test_fraction, sizes=counts)
        for split, names in parts.items():
            step = stride if split == "train" else None
            texts[split][package] = [sn for n in names for sn in _snippets(sources[package][n], cfg.snippet_lines, step)]
            files[split][package] = len(names)
            split_files[split] += names
    split_texts: dict[str, list[str]] = {}
    split_labels: dict[str, list[int]] = {}
    caps: dict[str, int] = {}
    for split, per in texts.items():
        cap = min(len(v) for v in per.values())
        if split == "train" and cfg.per_class is not None:
            cap = cfg.per_class
        if min(len(v) for v in per.values()) == 0:
            raise DataError(f"stdlib_modules: a package has no {split} snippets; lower data.snippet_lines")
        rng = np.random.default_rng(int(hashlib.sha1(split.encode()).hexdigest()[:8], 16))
        split_texts[split], split_labels[split] = [], []
        for label, package in enumerate(cfg.packages):
            k = min(cap, len(per[package]))
            chosen = sorted(rng.choice(len(per[package]), size=k, replace=False))
            split_texts[split] += [per[package][i] for i in chosen]
            split_labels[split] += [label] * k
        caps[split] = cap
    extra = {"source": "python stdlib packages", "python": sysconfig.get_python_version(),
             "snippet_lines": cfg.snippet_lines, "train_stride": stride, "per_class": caps,
             "files": files, "split_files": {s: sorted(v) for s, v in split_files.items()},
             "snippets_available": {s: {p: len(v) for p, v in per.items()} for s, per in texts.items()}}
    return _text_bundle(split_texts, split_labels, list(cfg.packages), cfg, seed, extra)


def load_text_csv(cfg: TextCsvConfig, seed: int) -> DataBundle:
    """The user's CSV with a text column and a label column; stratified split from the seed."""
    from ember.data.splits import split_indices

    if cfg.stream:
        return load_table(cfg, seed)
    if not cfg.path.is_file():
        raise DataError(f"CSV file '{cfg.path}' does not exist")
    with open(cfg.path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for col in (cfg.text_column, cfg.label_column):
            if col not in header:
                raise DataError(f"'{cfg.path}': no column '{col}'; {did_you_mean(col, header)}")
        rows = [(r[cfg.text_column] or "", (r[cfg.label_column] or "").strip()) for r in reader]
    if len(rows) < 3:
        raise DataError(f"'{cfg.path}': needs at least 3 rows")
    empty = [i + 2 for i, (_, label) in enumerate(rows) if not label]
    if empty:
        raise DataError(f"'{cfg.path}': empty '{cfg.label_column}' on row(s) {empty[:5]}")
    names = {label for _, label in rows}
    numeric = all(n.lstrip("-").isdigit() for n in names)
    classes = sorted(names, key=int) if numeric else sorted(names)  # "2" before "10"
    if len(classes) < 2:
        raise DataError(f"'{cfg.path}': column '{cfg.label_column}' has a single class {classes}")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[label] for _, label in rows])
    try:  # stratified when every class can appear in every split, else a plain seeded split
        tr, va, te = split_indices(len(rows), cfg, seed, labels=labels if np.bincount(labels).min() >= 3 else None)
    except ValueError:
        tr, va, te = split_indices(len(rows), cfg, seed)
    split_texts = {s: [rows[i][0] for i in idx.tolist()] for s, idx in (("train", tr), ("val", va), ("test", te))}
    split_labels = {s: [int(labels[i]) for i in idx.tolist()] for s, idx in (("train", tr), ("val", va), ("test", te))}
    return _text_bundle(split_texts, split_labels, classes, cfg, seed, {"source": f"csv {cfg.path}"})
