"""Language-modelling corpora: this Python's standard library, or the user's own text files.

Both split *by file*, so no file's text is in two splits; the tokenizer is fitted on the
training text only, and the corpus hash is recorded in the run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
from pathlib import Path

import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.text_config import StdlibTextConfig, TextFilesConfig
from ember.data.tokenizer import fit_tokenizer, tokenizer_from
from ember.errors import DataError

__all__ = ["stdlib_files", "assign_splits", "load_stdlib_text", "load_text_files", "lm_windows"]

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "ensurepip", "venv"}
_MAX_FILE = 200_000
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst")


def _path_hash(rel: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha1(f"{salt}{rel}".encode()).digest()[:8], "big")


def _skip_dir(name: str) -> bool:
    return name in _SKIP_DIRS or name.startswith(("config-", "lib-dynload", "__phello__"))


@functools.lru_cache(maxsize=4)
def _walk_stdlib(base: str) -> tuple[tuple[str, Path], ...]:
    found = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if not _skip_dir(d)]  # prune: never walks site-packages
        for name in names:
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            path = Path(folder) / name
            try:
                if path.stat().st_size > _MAX_FILE:
                    continue
            except OSError:
                continue
            found.append((path.relative_to(base).as_posix(), path))
    return tuple(sorted(found))


def stdlib_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative path, path) of the standard library's .py sources, sorted by relative path.

    Excluded: site-packages, test/tests folders and test_*.py, idlelib, lib2to3, demo and
    packaging tools, and files over 200 KB.
    """
    return list(_walk_stdlib(str(root or sysconfig.get_paths()["stdlib"])))


def assign_splits(names: list[str], val_fraction: float, test_fraction: float,
                  sizes: dict[str, int] | None = None) -> dict[str, list[str]]:
    """Put each name (a file) in exactly one split, from a hash of the names alone.

    Files are visited in an order fixed by a hash of their name; test, then val, take files
    until they hold their fraction of the total size (`sizes`, default 1 per file), never
    overshooting a target by half again, so one big file cannot swallow a held-out split.
    A held-out split left empty gets the smallest training file while train keeps one.
    The result is stable across seeds and runs, and every name appears once.
    """
    size = {n: 1 for n in names} if sizes is None else {n: max(int(sizes[n]), 0) for n in names}
    total = sum(size.values())
    target = {"test": test_fraction * total, "val": val_fraction * total}
    have = {"test": 0, "val": 0}
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in sorted(names, key=lambda n: (_path_hash(n, "split:"), n)):
        for split in ("test", "val"):
            if have[split] < target[split] and have[split] + size[name] <= 1.5 * target[split]:
                out[split].append(name)
                have[split] += size[name]
                break
        else:
            out["train"].append(name)
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction > 0 and not out[split] and len(out["train"]) > 1:
            smallest = min(out["train"], key=lambda n: (size[n], _path_hash(n, "split:"), n))
            out["train"].remove(smallest)  # tiny corpora: never an empty held-out split
            out[split].append(smallest)
    return {k: sorted(v) for k, v in out.items()}


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
    tok = tokenizer_from(cfg.tokenizer_from) if cfg.tokenizer_from else fit_tokenizer(
        cfg.tokenizer, texts["train"], cfg.bpe_vocab_size)  # reused: e.g. the run fine-tuned from
    splits = {}
    train_tokens = 0
    for name, text in texts.items():
        ids = tok.encode(text)
        if name == "train":
            train_tokens = len(ids)
        splits[name] = lm_windows(ids, cfg.block_size)
    for name, fraction in (("train", 1.0), ("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        if fraction > 0 and len(splits[name][0]) == 0:
            raise DataError(f"the {name} text ({len(texts[name])} chars) is too short for "
                            f"data.block_size={cfg.block_size}; raise data.max_chars or lower the block size")
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
    parts = assign_splits(sorted(chosen), cfg.val_fraction, cfg.test_fraction,
                          sizes={n: len(t) for n, t in chosen.items()})
    texts = {s: "\n\n".join(chosen[n] for n in names) for s, names in parts.items()}
    extra = {"source": "python stdlib sources", "python": sysconfig.get_python_version(),
             "files": {s: len(n) for s, n in parts.items()}, "split_files": parts}
    return _lm_bundle(texts, cfg, extra)


def load_text_files(cfg: TextFilesConfig, seed: int) -> DataBundle:
    """The user's files (folders searched for .txt/.md/.py/.rst).

    Three or more files are split by file (by a hash of each path, sized by characters);
    fewer are split by position: the first part of the text trains, the end tests.
    """
    files: list[Path] = []
    for p in cfg.paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in TEXT_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"data.paths: '{p}' does not exist")
    files = list(dict.fromkeys(files))  # a file named twice (folder + file) counts once
    if not files:
        raise DataError(f"data.paths: no text files ({', '.join(TEXT_SUFFIXES)}) found in "
                        f"{', '.join(str(p) for p in cfg.paths)}")
    contents = {}
    for f in files:
        try:
            contents[str(f)] = f.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise DataError(f"data.paths: cannot read '{f}': {e.strerror or e}") from None
    extra: dict = {"source": "text files", "files": len(files)}
    if len(files) >= 3:
        parts = assign_splits(sorted(contents), cfg.val_fraction, cfg.test_fraction,
                              sizes={n: len(t) for n, t in contents.items()})
        texts = {s: "\n\n".join(contents[n] for n in names) for s, names in parts.items()}
        extra.update(split_by="file", split_files=parts)
    else:  # too few files to split by file: split the text by position instead
        text = "\n\n".join(contents.values())
        a = int(len(text) * (1 - cfg.val_fraction - cfg.test_fraction))
        b = int(len(text) * (1 - cfg.test_fraction))
        texts = {"train": text[:a], "val": text[a:b], "test": text[b:]}
        extra.update(split_by="position")
    return _lm_bundle(texts, cfg, extra)
