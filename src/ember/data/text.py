"""Language-modelling corpora: this Python's standard library, or the user's own text files.

Both split *by file*, so no file's text is in two splits; the tokenizer is fitted on the
training text only, and the corpus hash is recorded in the run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path

from ember.data.bundle import DataBundle, DataInfo
from ember.data.corpus import TextCorpus
from ember.data.text_config import AustenConfig, StdlibTextConfig, TextFilesConfig
from ember.data.token_files import SPLITS, TokenWindows, build_token_files, default_cache
from ember.data.tokenizer import BPETokenizer, CharTokenizer, fit_tokenizer, tokenizer_from
from ember.errors import DataError

Tokenizer = CharTokenizer | BPETokenizer

__all__ = ["stdlib_files", "assign_splits", "load_stdlib_text", "load_text_files", "load_austen",
           "AUSTEN_DIRS"]

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


def _lm_bundle(cfg: StdlibTextConfig | TextFilesConfig | AustenConfig, corpus_sha: str, fit: Callable[[], Tokenizer],
               pieces: Callable[[str], Iterable[str]], extra: dict) -> DataBundle:
    """Token files for the corpus (mapped from the cache, or built once), cut into windows."""
    settings = {"tokenizer": cfg.tokenizer, "vocab": cfg.bpe_vocab_size if cfg.tokenizer == "bpe" else 0,
                "sample": cfg.bpe_sample_chars if cfg.tokenizer == "bpe" else 0}
    if cfg.tokenizer_from:  # reused (e.g. the run this one fine-tunes): its own tokens, its own cache key
        reused = tokenizer_from(cfg.tokenizer_from)
        settings = {"tokenizer_sha256": hashlib.sha256(reused.to_json().encode()).hexdigest()}

        def reuse() -> Tokenizer:
            return reused

        fit = reuse

    tok, files, facts = build_token_files(cfg.token_cache or default_cache(), corpus_sha, settings, fit, pieces)
    splits = {s: TokenWindows(files[s], cfg.block_size, cfg.limit if s == "train" else cfg.eval_limit,
                              spread=s != "train") for s in SPLITS}
    chars = facts["chars"]
    for name, fraction in (("train", 1.0), ("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        if fraction > 0 and len(splits[name]) == 0:
            raise DataError(f"the {name} text ({chars[name]} chars) is too short for "
                            f"data.block_size={cfg.block_size}; raise data.max_chars or lower the block size")
    info = DataInfo(
        task="lm", input_kind="tokens", input_shape=(cfg.block_size,), num_outputs=tok.vocab_size,
        extra={**extra, "vocab_size": tok.vocab_size, "tokenizer": tok.kind, "corpus_sha256": corpus_sha,
               "chars": chars, "tokens": {s: f.count for s, f in files.items()},
               "token_files": str(files["train"].path.parent),
               "chars_per_token": chars["train"] / max(files["train"].count, 1)},
    )
    return DataBundle(splits["train"], splits["val"], splits["test"], info, tokenizer=tok)


def _in_memory(cfg: StdlibTextConfig | AustenConfig, texts: dict[str, str], extra: dict) -> DataBundle:
    corpus = hashlib.sha256("\x00".join(texts[s] for s in ("train", "val", "test")).encode()).hexdigest()
    train = texts["train"]

    def fit() -> Tokenizer:
        sample = train if len(train) <= cfg.bpe_sample_chars else _even_sample(train, cfg.bpe_sample_chars)
        return fit_tokenizer(cfg.tokenizer, train if cfg.tokenizer == "char" else sample, cfg.bpe_vocab_size)

    return _lm_bundle(cfg, corpus, fit, lambda split: [texts[split]] if texts[split] else [], extra)


def _even_sample(text: str, max_chars: int, pieces: int = 64) -> str:
    """`max_chars` of `text` in `pieces` runs spread evenly over it."""
    step, run = len(text) / pieces, max_chars // pieces
    return "".join(text[int(i * step): int(i * step) + run] for i in range(pieces))


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
    return _in_memory(cfg, texts, extra)


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
    extra: dict = {"source": "text files", "files": len(files)}
    if len(files) >= 3:
        parts = assign_splits(sorted(str(f) for f in files), cfg.val_fraction, cfg.test_fraction,
                              sizes={str(f): f.stat().st_size for f in files})
        corpus = TextCorpus.by_files(parts)
        extra.update(split_by="file", split_files=parts)
    else:  # too few files to split by file: split the text by position instead
        corpus = TextCorpus.by_position(files, cfg.val_fraction, cfg.test_fraction)
        extra.update(split_by="position")

    def fit() -> Tokenizer:
        if cfg.tokenizer == "char":
            alphabet: set[str] = set()
            for piece in corpus.pieces("train"):
                alphabet.update(piece)
            return CharTokenizer(sorted(alphabet))
        return fit_tokenizer("bpe", corpus.sample("train", cfg.bpe_sample_chars), cfg.bpe_vocab_size)

    return _lm_bundle(cfg, corpus.sha256(), fit, corpus.pieces, extra)


# Where R packages are installed (Debian's r-cran-* packages use the first).
AUSTEN_DIRS = tuple(Path(p) / "janeaustenr" / "data" for p in
                    ("/usr/lib/R/site-library", "/usr/local/lib/R/site-library", "/usr/lib/R/library"))
AUSTEN_BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")


def load_austen(cfg: AustenConfig, seed: int) -> DataBundle:
    """The six novels as text (one line per line of the printed book), split by book."""
    from ember.data.rdata import RVector, read_lazyload

    folder = cfg.root or next((d for d in AUSTEN_DIRS if (d / "Rdata.rdb").is_file()), None)
    if folder is None:
        raise DataError("austen: Jane Austen's novels are not installed; install them with: "
                        "apt-get install r-cran-janeaustenr (or set data.root to the package's data folder)")
    books = read_lazyload(folder, list(AUSTEN_BOOKS))
    texts = {name: "\n".join(v or "" for v in book.values) for name, book in books.items()
             if isinstance(book, RVector)}
    parts = assign_splits(sorted(texts), cfg.val_fraction, cfg.test_fraction,
                          sizes={n: len(t) for n, t in texts.items()})
    joined = {s: "\n\n".join(texts[n] for n in names) for s, names in parts.items()}
    extra = {"source": f"janeaustenr ({folder})", "split_files": parts}
    return _in_memory(cfg, joined, extra)
