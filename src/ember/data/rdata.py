"""Read the data sets an installed R package ships, without R and without unpickling anything.

An R package's `data/` folder is a lazy-load database: `Rdata.rdx` (gzip of one serialized R list:
the name of each object and where its bytes sit) and `Rdata.rdb` (the objects, each serialized
and compressed). This module decodes R's XDR serialization format (version 2 and 3) for the plain
data types data sets use: character, integer, double and logical vectors, lists, pairlists and
attributes (so data frames and factors come through as dicts of columns). Anything else (closures,
environments, byte code) is refused: a data file that holds code is not read.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ember.errors import DataError

__all__ = ["RVector", "read_lazyload", "unserialize"]

# SEXP type codes (R Internals, "Serialization formats").
_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 0, 1, 2, 9, 10, 13, 14, 16, 19
_REF, _NILVALUE, _EMPTYENV, _GLOBALENV, _BASEENV, _MISSINGARG = 255, 254, 242, 253, 241, 251
_NA_INT = -(2**31)
_MAX_ITEMS = 50_000_000  # a declared length past this is a damaged or hostile file


@dataclass
class RVector:
    """An R vector with its attributes (names, class, levels, row.names...)."""

    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 0
        self.refs: list[Any] = []

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise DataError("R data is truncated")
        out = self.raw[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints give the length
            n = (self.int() << 32) + self.int()
        if not 0 <= n <= _MAX_ITEMS:
            raise DataError(f"R data declares a vector of {n} items")
        return n

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if kind in (_NILVALUE, _EMPTYENV, _GLOBALENV, _BASEENV, _MISSINGARG):
            return None
        if kind == _REF:
            index = flags >> 8 or self.int()
            if not 0 < index <= len(self.refs):
                raise DataError(f"R data refers to object {index} of {len(self.refs)}")
            return self.refs[index - 1]
        if kind == _SYM:
            name = self.item()  # its print name, a CHARSXP
            self.refs.append(name)
            return name
        if kind == _CHAR:
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", errors="replace")
        if kind == _LIST:
            return self._pairlist(has_attr, has_tag)
        if kind in (_LGL, _INT):
            n = self.length()
            ints = struct.unpack(f">{n}i", self.take(4 * n))
            values: list[Any] = [None if v == _NA_INT else (bool(v) if kind == _LGL else v) for v in ints]
        elif kind == _REAL:
            n = self.length()
            values = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind in (_STR, _VEC):
            values = [self.item() for _ in range(self.length())]
        else:
            raise DataError(f"R data holds an object of type {kind}, which a data set never needs; not read")
        attributes = self._attributes() if has_attr else {}
        return RVector(values, attributes)

    def _attributes(self) -> dict[str, Any]:
        attrs = self.item()
        return attrs if isinstance(attrs, dict) else {}

    def _pairlist(self, has_attr: bool, has_tag: bool) -> dict[str, Any]:
        """A pairlist (attributes, argument lists) as a dict keyed by tag, read iteratively."""
        out: dict[str, Any] = {}
        while True:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            out[str(tag) if tag is not None else f"[{len(out)}]"] = self.item()
            flags = self.int()
            kind = flags & 0xFF
            if kind == _NILVALUE:
                return out
            if kind != _LIST:
                raise DataError("R data holds a malformed pairlist")
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))


def unserialize(raw: bytes) -> Any:
    """One object from R's XDR serialization (`serialize(x, NULL)`, `saveRDS(compress=FALSE)`)."""
    reader = _Reader(raw)
    if reader.take(2) != b"X\n":
        raise DataError("not R's XDR serialization format (only 'X' is read)")
    version = reader.int()
    reader.int(), reader.int()  # the writer's R version and the oldest that reads it
    if version == 3:
        reader.take(reader.int())  # the native encoding's name
    elif version != 2:
        raise DataError(f"R serialization version {version} is not supported (2 and 3 are)")
    try:
        return reader.item()
    except RecursionError:
        raise DataError("R data nests lists too deeply to be a data set") from None


def _inflate(blob: bytes) -> bytes:
    """An .rdb entry: 4-byte big-endian length, then zlib; or a type byte (Z, 2, X, 0) first."""
    if len(blob) < 5:
        raise DataError("R lazy-load entry is truncated")
    kind = blob[4:5]
    try:
        if kind == b"Z":
            return lzma.decompress(blob[5:])
        if kind == b"2":
            return bz2.decompress(blob[5:])
        if kind == b"0":
            return blob[5:]
        return zlib.decompress(blob[4:])
    except (zlib.error, lzma.LZMAError, OSError, ValueError) as exc:
        raise DataError(f"R lazy-load entry cannot be decompressed: {exc}") from None


def read_lazyload(folder: Path, names: list[str] | None = None) -> dict[str, Any]:
    """The objects of an R package's `data/Rdata.rdb`, by name (all, or those in `names`)."""
    rdx, rdb = folder / "Rdata.rdx", folder / "Rdata.rdb"
    try:
        raw_index = rdx.read_bytes()
        index = unserialize(gzip.decompress(raw_index) if raw_index[:2] == b"\x1f\x8b" else _inflate(raw_index))
        data = rdb.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read the R data in '{folder}': {exc}") from None
    variables = index.values[index.attributes["names"].values.index("variables")] \
        if isinstance(index, RVector) and "names" in index.attributes else None
    if not isinstance(variables, RVector):
        raise DataError(f"'{rdx}' is not an R lazy-load index")
    keys = variables.attributes.get("names")
    found: dict[str, Any] = {}
    for name, where in zip(keys.values if isinstance(keys, RVector) else [], variables.values):
        if names is not None and name not in names:
            continue
        offset, length = (int(v) for v in where.values)
        found[name] = unserialize(_inflate(data[offset:offset + length]))
    missing = sorted(set(names or []) - set(found))
    if missing:
        raise DataError(f"'{folder}' has no object {', '.join(missing)}; it has {', '.join(keys.values)}")
    return found
