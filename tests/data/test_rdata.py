"""R lazy-load databases (an R package's data/ folder) read without R, and the Austen corpus on them."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest

from ember.data import build
from ember.data.rdata import RVector, read_lazyload, unserialize
from ember.data.text import AUSTEN_BOOKS, AUSTEN_DIRS
from ember.data.text_config import AustenConfig
from ember.errors import DataError

_HAS_ATTR, _HAS_TAG = 1 << 9, 1 << 10


def _i(v: int) -> bytes:
    return struct.pack(">i", v)


def _char(s: str | None) -> bytes:
    if s is None:
        return _i(9) + _i(-1)
    raw = s.encode()
    return _i(9 | (1 << 15)) + _i(len(raw)) + raw  # CHARSXP, UTF-8 flag in the levels bits


def _strs(values: list[str | None], names: list[str] | None = None) -> bytes:
    body = _i(16 | (_HAS_ATTR if names else 0)) + _i(len(values)) + b"".join(_char(v) for v in values)
    if names:  # attributes: pairlist (names = <STRSXP>)
        body += _i(2 | _HAS_TAG) + _i(1) + _char("names") + _strs(names) + _i(254)
    return body


def _serialize(item: bytes) -> bytes:
    return b"X\n" + _i(3) + _i(0x040300) + _i(0x030500) + _i(5) + b"UTF-8" + item


def _write_lazyload(folder: Path, objects: dict[str, bytes]) -> None:
    """A data/ folder as R writes it: each object zlib-compressed in .rdb, a gzip'd index in .rdx."""
    folder.mkdir(parents=True)
    blobs, where = b"", []
    for raw in objects.values():
        entry = struct.pack(">I", len(raw)) + zlib.compress(raw)
        where.append((len(blobs), len(entry)))
        blobs += entry
    (folder / "Rdata.rdb").write_bytes(blobs)
    places = b"".join(_i(13) + _i(2) + _i(off) + _i(n) for off, n in where)  # INTSXP c(offset, length)
    names_attr = _i(2 | _HAS_TAG) + _i(1) + _char("names") + _strs(list(objects)) + _i(254)
    variables = _i(19 | _HAS_ATTR) + _i(len(objects)) + places + names_attr
    index = _i(19 | _HAS_ATTR) + _i(1) + variables + _i(2 | _HAS_TAG) + _i(1) + _char("names") + \
        _strs(["variables"]) + _i(254)
    (folder / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))


def test_character_vectors_with_names_and_na() -> None:
    out = unserialize(_serialize(_strs(["a", None, "ü"], names=["x", "y", "z"])))
    assert isinstance(out, RVector) and out.values == ["a", None, "ü"]
    assert out.attributes["names"].values == ["x", "y", "z"]


def test_lazyload_round_trip_and_bad_files(tmp_path: Path) -> None:
    _write_lazyload(tmp_path / "data", {"book": _serialize(_strs(["Chapter 1", "It is a truth"])),
                                        "other": _serialize(_strs(["x"]))})
    found = read_lazyload(tmp_path / "data", ["book"])
    assert list(found) == ["book"] and found["book"].values == ["Chapter 1", "It is a truth"]
    with pytest.raises(DataError, match="has no object missing"):
        read_lazyload(tmp_path / "data", ["missing"])
    with pytest.raises(DataError, match="not R's XDR"):
        unserialize(b"A\n" + b"\0" * 20)
    with pytest.raises(DataError, match="truncated"):
        unserialize(_serialize(_strs(["abc"]))[:-2])
    closure = _serialize(_i(3) + b"\0" * 16)  # CLOSXP: code, never read
    with pytest.raises(DataError, match="type 3"):
        unserialize(closure)
    with pytest.raises(DataError, match="vector of"):
        unserialize(_serialize(_i(16) + _i(2**31 - 1)))


def tiny_austen(folder: Path, lines: int = 400) -> Path:
    """Six tiny "novels" in an R lazy-load database, as janeaustenr's data folder holds them."""
    _write_lazyload(folder, {name: _serialize(_strs([f"{name.upper()} line {i}" for i in range(lines)]))
                             for name in AUSTEN_BOOKS})
    return folder


def test_austen_corpus_splits_by_book(tmp_path: Path) -> None:
    bundle = build(AustenConfig(root=tiny_austen(tmp_path / "data"), block_size=32, token_cache=tmp_path / "tok",
                                val_fraction=0.15, test_fraction=0.15), 0)
    parts = bundle.info.extra["split_files"]
    assert sorted(sum(parts.values(), [])) == sorted(AUSTEN_BOOKS) and parts["test"] and parts["val"]
    assert len(bundle.train) > 0 and bundle.info.task == "lm"
    test_windows = len(bundle.test)
    few = build(AustenConfig(root=tmp_path / "data", block_size=32, token_cache=tmp_path / "tok",
                             val_fraction=0.15, test_fraction=0.15, eval_limit=3), 0)
    assert len(few.test) == 3 < test_windows and len(few.train) == len(bundle.train)
    # spread over the whole held-out text: the first, a middle and the last window
    assert few.test.rows.tolist() == [0, round((test_windows - 1) / 2), test_windows - 1]


def test_austen_missing_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ember.data import text

    monkeypatch.setattr(text, "AUSTEN_DIRS", (tmp_path / "none",))
    with pytest.raises(DataError, match="apt-get install r-cran-janeaustenr"):
        build(AustenConfig(), 0)


@pytest.mark.skipif(not any((d / "Rdata.rdb").is_file() for d in AUSTEN_DIRS),
                    reason="r-cran-janeaustenr is not installed (apt-get install r-cran-janeaustenr)")
def test_the_installed_novels() -> None:
    folder = next(d for d in AUSTEN_DIRS if (d / "Rdata.rdb").is_file())
    novels = read_lazyload(folder, ["prideprejudice", "persuasion"])
    assert novels["prideprejudice"].values[0] == "PRIDE AND PREJUDICE"
    assert any("truth universally acknowledged" in (line or "") for line in novels["prideprejudice"].values[:20])
