"""Token files: a corpus tokenised once into memory-mapped uint16/uint32 files, then mapped.

Layout, under the cache folder (`data.token_cache`, default `~/.cache/ember/tokens`):

    <key>/tokenizer.json                 the fitted tokenizer
    <key>/<split>.bin                    the split's token ids, native-endian uint16 or uint32
    <key>/<split>.json                   sidecar: format, dtype, count, tokenizer_sha256, corpus_sha256

`key` is a hash of the corpus sha256 and the tokenizer's settings. A later run (and every
rank) with the same corpus and tokenizer maps the files instead of tokenising again; a
sidecar that is missing, unreadable or disagrees with its .bin (size, tokenizer hash, corpus)
means the cache is stale or truncated, and the whole folder is rebuilt. Files are written
to temporary names and renamed, sidecars last, under a file lock so concurrent ranks build
once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ember.data.lazy import ItemDataset, LazyRows
from ember.data.tokenizer import BPETokenizer, CharTokenizer, tokenizer_from_json
from ember.errors import DataError

__all__ = ["TokenWindows", "TokenFile", "build_token_files", "default_cache", "SPLITS"]

FORMAT = 1
SPLITS = ("train", "val", "test")
Tokenizer = CharTokenizer | BPETokenizer


def default_cache() -> Path:
    return Path.home() / ".cache" / "ember" / "tokens"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TokenFile:
    """A split's token ids on disk: `path` (.bin) holds `count` ids of `dtype`."""

    path: Path
    dtype: str
    count: int

    def open(self) -> np.ndarray:
        if self.count == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,))


class TokenWindows(ItemDataset):
    """Non-overlapping windows of `block_size + 1` tokens of a token file: inputs and targets.

    Window i is ids[i*T : (i+1)*T] and its targets ids[i*T+1 : (i+1)*T+1]; only the batch
    being read is in memory (the file is memory-mapped, opened once per process).
    """

    def __init__(self, file: TokenFile, block_size: int, limit: int | None = None, spread: bool = False) -> None:
        n = max((file.count - 1) // block_size, 0)
        windows = torch.arange(n)
        if limit is not None and limit < n:  # the first `limit` windows, or `limit` spread evenly over all
            windows = torch.linspace(0, n - 1, limit).round().long() if spread else windows[:limit]
        super().__init__(windows)
        self.file = file
        self.block_size = block_size
        self._ids: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A memmap pickles as a full copy of its data: workers reopen the file instead.
        return {**self.__dict__, "_ids": None}

    def item_shape(self) -> tuple[int, ...]:
        return (self.block_size,)

    def _read(self, rows: Tensor, epoch: int, train: bool, positions: Tensor) -> tuple[Tensor, Tensor]:
        if self._ids is None:
            self._ids = self.file.open()
        t = self.block_size
        if len(rows) == 0:
            empty = torch.zeros(0, t, dtype=torch.long)
            return empty, empty
        windows = np.stack([self._ids[s : s + t + 1] for s in (rows * t).tolist()]).astype(np.int64)
        w = torch.from_numpy(windows)  # (B, T+1)
        return w[:, :-1], w[:, 1:]

    @property
    def y(self) -> LazyRows:
        return LazyRows(lambda idx: self.batch(idx)[1], len(self), (self.block_size,))


def encode_array(tok: Tokenizer, text: str) -> np.ndarray:
    """Token ids of `text` as int64; characters are looked up vectorised, not one by one."""
    if isinstance(tok, CharTokenizer):
        points = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        known = np.array([ord(c) for c in tok.chars[1:]], dtype=np.uint32)
        order = np.argsort(known)
        keys, ids = known[order], order + 1  # id 0 is <unk>
        if len(keys) == 0:
            return np.zeros(len(points), dtype=np.int64)
        pos = np.searchsorted(keys, points).clip(0, len(keys) - 1)
        return np.where(keys[pos] == points, ids[pos], 0).astype(np.int64)
    return np.asarray(tok.encode(text), dtype=np.int64)


def _dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def _read_sidecar(folder: Path, split: str, tok_sha: str, corpus_sha: str) -> TokenFile | None:
    """The split's token file if its sidecar and .bin agree with each other and the key."""
    bin_path = folder / f"{split}.bin"
    try:
        meta = json.loads((folder / f"{split}.json").read_text())
        ok = (meta["format"] == FORMAT and meta["tokenizer_sha256"] == tok_sha
              and meta["corpus_sha256"] == corpus_sha and meta["dtype"] in ("uint16", "uint32"))
        count = int(meta["count"])
        size = bin_path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok or size != count * np.dtype(meta["dtype"]).itemsize:
        return None
    return TokenFile(bin_path, meta["dtype"], count)


def _write_split(folder: Path, split: str, pieces: Iterable[str], tok: Tokenizer, tok_sha: str,
                 corpus_sha: str) -> tuple[TokenFile, int]:
    """Tokenise `pieces` into `<split>.bin` + sidecar; returns the file and the characters read."""
    dtype = _dtype(tok.vocab_size)
    tmp = folder / f".{split}.bin.{os.getpid()}.tmp"
    count = chars = 0
    with open(tmp, "wb") as f:
        for piece in pieces:
            ids = encode_array(tok, piece).astype(dtype)
            ids.tofile(f)
            count += len(ids)
            chars += len(piece)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / f"{split}.bin")
    meta = {"format": FORMAT, "split": split, "dtype": dtype, "count": count, "chars": chars,
            "tokenizer_sha256": tok_sha, "corpus_sha256": corpus_sha}
    side = folder / f".{split}.json.{os.getpid()}.tmp"
    side.write_text(json.dumps(meta, indent=2))
    os.replace(side, folder / f"{split}.json")
    return TokenFile(folder / f"{split}.bin", dtype, count), chars


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # ranks starting together: one builds, the others map
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_token_files(
    cache: Path, corpus_sha: str, settings: dict[str, Any],
    fit: Callable[[], Tokenizer], pieces: Callable[[str], Iterable[str]],
) -> tuple[Tokenizer, dict[str, TokenFile], dict[str, Any]]:
    """Map the corpus's token files from `cache`, building them first if absent or stale.

    Args:
        cache: the cache folder.
        corpus_sha: sha256 of the corpus text (all splits).
        settings: the tokenizer's settings (kind, vocabulary size, sample bound): part of the key.
        fit: fits the tokenizer (called only when building).
        pieces: split name -> the split's text in pieces, in order (called only when building).

    Returns:
        The tokenizer, each split's token file, and the build's facts (chars per split, whether
        the cache was hit).

    Raises:
        DataError: the cache folder cannot be created or written.
    """
    key = hashlib.sha256(json.dumps({"corpus": corpus_sha, "format": FORMAT, **settings},
                                    sort_keys=True).encode()).hexdigest()[:24]
    folder = cache / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data.token_cache: cannot create '{folder}': {e.strerror or e}") from None
    try:
        with _locked(folder):
            return _map_or_build(folder, corpus_sha, fit, pieces)
    except OSError as e:
        raise DataError(f"data.token_cache: cannot write token files in '{folder}': {e.strerror or e}") from None


def _map_or_build(folder: Path, corpus_sha: str, fit: Callable[[], Tokenizer],
                  pieces: Callable[[str], Iterable[str]]) -> tuple[Tokenizer, dict[str, TokenFile], dict[str, Any]]:
    tok_path = folder / "tokenizer.json"
    if tok_path.is_file():
        tok_text = tok_path.read_text()
        files = {s: _read_sidecar(folder, s, _sha256_text(tok_text), corpus_sha) for s in SPLITS}
        if all(f is not None for f in files.values()):
            chars = {s: json.loads((folder / f"{s}.json").read_text()).get("chars", 0) for s in SPLITS}
            try:
                tok = tokenizer_from_json(tok_text)
            except DataError:
                tok = None
            if tok is not None:
                return tok, files, {"chars": chars, "cache": "hit"}  # type: ignore[return-value]
    tok = fit()
    tok_text = tok.to_json()
    tmp = folder / f".tokenizer.json.{os.getpid()}.tmp"
    tmp.write_text(tok_text)
    os.replace(tmp, tok_path)
    tok_sha = _sha256_text(tok_text)
    built, chars = {}, {}
    for split in SPLITS:
        built[split], chars[split] = _write_split(folder, split, pieces(split), tok, tok_sha, corpus_sha)
    return tok, built, {"chars": chars, "cache": "built"}
