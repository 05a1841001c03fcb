"""The user's text files as a stream: splits of (file, byte range) segments read in pieces.

Nothing holds a whole corpus: the hash, the tokenizer's alphabet or sample, and the token
files are each made in one pass over pieces of about 1 MB that end at a line break.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ember.errors import DataError

__all__ = ["Segment", "TextCorpus", "PIECE_BYTES"]

PIECE_BYTES = 1 << 20
_SEPARATOR = "\n\n"  # between files, as the in-memory sources join them


@dataclass(frozen=True)
class Segment:
    """Bytes [start, end) of one file."""

    path: Path
    start: int
    end: int


def _newline_after(path: Path, offset: int, size: int) -> int:
    """The offset just past the first line break at or after `offset` (or a character boundary)."""
    if offset <= 0 or offset >= size:
        return max(0, min(offset, size))
    with open(path, "rb") as f:
        f.seek(offset)
        window = f.read(PIECE_BYTES)
    cut = window.find(b"\n")
    if cut >= 0:
        return offset + cut + 1
    skip = 0
    while skip < len(window) and window[skip] & 0xC0 == 0x80:  # never split a UTF-8 character
        skip += 1
    return offset + skip


def _segment_pieces(seg: Segment) -> Iterator[str]:
    with open(seg.path, "rb") as f:
        f.seek(seg.start)
        left, carry = seg.end - seg.start, b""
        while left > 0:
            block = f.read(min(PIECE_BYTES, left))
            if not block:  # the file shrank under us: take what there is
                break
            left -= len(block)
            data = carry + block
            cut = len(data)
            if left > 0:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # one very long line: carry on, or cut at a character boundary
                    if len(data) < 4 * PIECE_BYTES:
                        carry = data
                        continue
                    cut = len(data)
                    while cut > 0 and data[cut - 1] & 0xC0 == 0x80:
                        cut -= 1
                    cut = max(cut - 1, 1) if data[cut - 1] >= 0xC0 else cut
            yield data[:cut].decode("utf-8", errors="replace")
            carry = data[cut:]
        if carry:
            yield carry.decode("utf-8", errors="replace")


@dataclass
class TextCorpus:
    """Each split's segments; pieces are decoded as UTF-8 (invalid bytes replaced)."""

    splits: dict[str, list[Segment]]

    @classmethod
    def by_files(cls, parts: dict[str, list[str]]) -> TextCorpus:
        return cls({s: [Segment(Path(n), 0, Path(n).stat().st_size) for n in names]
                    for s, names in parts.items()})

    @classmethod
    def by_position(cls, files: list[Path], val_fraction: float, test_fraction: float) -> TextCorpus:
        """The files' text end to end, cut at line breaks: first part trains, the end tests."""
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        cuts = [int(total * (1 - val_fraction - test_fraction)), int(total * (1 - test_fraction))]
        splits: dict[str, list[Segment]] = {"train": [], "val": [], "test": []}
        names = list(splits)
        base = 0
        for f, size in zip(files, sizes, strict=True):
            local = [_newline_after(f, c - base, size) if base <= c < base + size else
                     (0 if c < base else size) for c in cuts]
            bounds = [0, *local, size]
            for name, a, b in zip(names, bounds, bounds[1:], strict=False):
                if b > a:
                    splits[name].append(Segment(f, a, b))
            base += size
        return cls(splits)

    def pieces(self, split: str) -> Iterator[str]:
        """The split's text in pieces of about 1 MB ending at line breaks, files joined by a blank line."""
        for i, seg in enumerate(self.splits[split]):
            if i:
                yield _SEPARATOR
            try:
                yield from _segment_pieces(seg)
            except OSError as e:
                raise DataError(f"data.paths: cannot read '{seg.path}': {e.strerror or e}") from None

    def sha256(self) -> str:
        """Hash of every split's text and the split boundaries: the token cache's key."""
        h = hashlib.sha256()
        for split in ("train", "val", "test"):
            h.update(f"\x00split:{split}\x00".encode())
            for piece in self.pieces(split):
                h.update(piece.encode("utf-8", errors="surrogatepass"))
        return h.hexdigest()

    def bytes(self, split: str) -> int:
        return sum(s.end - s.start for s in self.splits[split])

    def sample(self, split: str, max_chars: int) -> str:
        """At most `max_chars` of the split, in pieces spread evenly over it (the BPE sample)."""
        total = max(self.bytes(split), 1)
        kept: list[str] = []
        seen = taken = 0
        for piece in self.pieces(split):
            # Paced: a piece is kept while the sample is behind its share of what was read.
            if taken + len(piece) <= max_chars and taken <= max_chars * seen / total:
                kept.append(piece)
                taken += len(piece)
            seen += len(piece)
        return "".join(kept)
