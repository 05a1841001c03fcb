"""Language-modelling corpora: this Python's standard library, or the user's own text files.

Both split *by file*, so no file's text is in two splits; the tokenizer is fitted on the
training text only, and the corpus hash is recorded in the run.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.text_config import StdlibTextConfig, TextFilesConfig
from ember.data.tokenizer import fit_tokenizer
from ember.errors import DataError

__all__ = ["stdlib_files", "assign_splits", "load_stdlib_text", "load_text_files", "lm_windows"]

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "ensurepip", "venv"}
_MAX_FILE = 200_000
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst")


def _path_hash(rel: str) -> int:
    return int.from_bytes(hashlib.sha1(rel.encode()).digest()[:8], "big")


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py sources, tests and tools excluded."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    found = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base)
        if any(part in _SKIP_DIRS for part in rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        try:
            if path.stat().st_size > _MAX_FILE:
                continue
        except OSError:
            continue
        found.append((rel.as_posix(), path))
    return sorted(found)


def assign_splits(names: list[str], val_fraction: float, test_fraction: float) -> dict[str, list[str]]:
    """Each name goes to one split by a hash of the name alone (stable across seeds and runs)."""
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in names:
        u = (_path_hash(name) % 1_000_000) / 1_000_000
        split = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        out[split].append(name)
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and not out[split] and len(out["train"]) > 1:
            out[split].append(out["train"].pop())  # tiny corpora: never an empty held-out split
    return out


def lm_windows(ids: list[int], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of block_size+1 tokens -> inputs and next-token targets."""
    t = torch.tensor(ids, dtype=torch.long)
    n = (len(t) - 1) // block_size
    if n <= 0:
        return torch.zeros(0, block_size, dtype=torch.long), torch.zeros(0, block_size, dtype=torch.long)
    x = t[: n * block_size].view(n, block_size)  # (N, T)
    y = t[1 : n * block_size + 1].view(n, block_size)  # (N, T), shifted by one
    return x, y


def _lm_bundle(texts: dict[str, str], cfg: StdlibTextConfig | TextFilesConfig, extra: dict) -> DataBundle:
    tok = fit_tokenizer(cfg.tokenizer, texts["train"], cfg.bpe_vocab_size)
    splits = {}
    train_tokens = 0
    for name, text in texts.items():
        ids = tok.encode(text)
        if name == "train":
            train_tokens = len(ids)
        splits[name] = lm_windows(ids, cfg.block_size)
    if len(splits["train"][0]) == 0:
        raise DataError(f"the training text is too short for data.block_size={cfg.block_size}")
    x, y = splits["train"]
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    corpus = hashlib.sha256("\x00".join(texts[s] for s in ("train", "val", "test")).encode()).hexdigest()
    info = DataInfo(
        task="lm", input_kind="tokens", input_shape=(cfg.block_size,), num_outputs=tok.vocab_size,
        extra={**extra, "vocab_size": tok.vocab_size, "tokenizer": tok.kind, "corpus_sha256": corpus,
               "chars": {k: len(v) for k, v in texts.items()},
               "chars_per_token": len(texts["train"]) / max(train_tokens, 1)},
    )
    return DataBundle(ArrayDataset(x, y), ArrayDataset(*splits["val"]), ArrayDataset(*splits["test"]), info,
                      tokenizer=tok)


def load_stdlib_text(cfg: StdlibTextConfig, seed: int) -> DataBundle:
    """The standard library's sources, taken in an order fixed by their paths up to `max_chars`."""
    files = sorted(stdlib_files(), key=lambda f: _path_hash(f[0]))
    chosen: dict[str, str] = {}
    total = 0
    for rel, path in files:
        if total >= cfg.max_chars:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        chosen[rel] = text
        total += len(text)
    if not chosen:
        raise DataError("no standard-library sources found on this Python")
    parts = assign_splits(sorted(chosen), cfg.val_fraction, cfg.test_fraction)
    texts = {s: "\n\n".join(chosen[n] for n in names) for s, names in parts.items()}
    extra = {"source": "python stdlib sources", "python": sysconfig.get_python_version(),
             "files": {s: len(n) for s, n in parts.items()}, "split_files": parts}
    return _lm_bundle(texts, cfg, extra)


def load_text_files(cfg: TextFilesConfig, seed: int) -> DataBundle:
    """The user's files (folders searched for .txt/.md/.py/.rst); split by file, or by position."""
    files: list[Path] = []
    for p in cfg.paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in TEXT_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"data.paths: '{p}' does not exist")
    if not files:
        raise DataError(f"data.paths: no text files ({', '.join(TEXT_SUFFIXES)}) found")
    contents = {str(f): f.read_text(encoding="utf-8", errors="replace") for f in files}
    if len(files) >= 3:
        parts = assign_splits(sorted(contents), cfg.val_fraction, cfg.test_fraction)
        texts = {s: "\n\n".join(contents[n] for n in names) for s, names in parts.items()}
    else:  # too few files to split by file: split the text by position instead
        text = "\n\n".join(contents.values())
        a = int(len(text) * (1 - cfg.val_fraction - cfg.test_fraction))
        b = int(len(text) * (1 - cfg.test_fraction))
        texts = {"train": text[:a], "val": text[a:b], "test": text[b:]}
    return _lm_bundle(texts, cfg, {"source": "text files", "files": len(files)})
