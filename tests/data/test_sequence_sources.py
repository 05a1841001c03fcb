"""Text and sequence sources: real stdlib corpora split by file, series, memory tasks, tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from ember.data import SOURCES, DataConfig, build
from ember.data.series import series_values
from ember.data.text import assign_splits
from ember.data.text_config import (
    AddingConfig,
    CopyConfig,
    CsvSeriesConfig,
    SeriesConfig,
    StdlibModulesConfig,
    StdlibTextConfig,
    TextCsvConfig,
    TextFilesConfig,
)
from ember.data.tokenizer import BPETokenizer, CharTokenizer, tokenizer_from_json
from ember.errors import DataError

SMALL_TEXT = StdlibTextConfig(max_chars=200_000, block_size=32, val_fraction=0.1, test_fraction=0.1)
SMALL_MODULES = StdlibModulesConfig(snippet_lines=20, max_len=64)


@pytest.fixture(scope="module")
def stdlib_text():  # noqa: ANN201
    return build(SMALL_TEXT, 0)


@pytest.fixture(scope="module")
def stdlib_modules():  # noqa: ANN201
    return build(SMALL_MODULES, 0)


def _no_file_in_two_splits(parts: dict[str, list[str]]) -> None:
    names = [n for split in ("train", "val", "test") for n in parts[split]]
    assert len(names) == len(set(names)) and all(parts[s] for s in ("train", "val", "test"))


# ----------------------------------------------------------------------------- stdlib_text


def test_stdlib_text_windows_and_targets(stdlib_text) -> None:  # noqa: ANN001
    b = stdlib_text
    assert b.info.task == "lm" and b.info.input_kind == "tokens" and b.info.input_shape == (32,)
    for split in ("train", "val", "test"):
        ds = b.split(split)
        assert len(ds) > 0 and ds.x.shape[1:] == (32,) and ds.y.shape == ds.x.shape
        assert ds.x.dtype == torch.long and ds.y.dtype == torch.long
        assert int(ds.x.max()) < b.info.num_outputs == b.info.extra["vocab_size"]
    # y is x shifted by one inside the token stream, across window boundaries too
    assert torch.equal(b.train.x[:, 1:], b.train.y[:, :-1])
    assert torch.equal(b.train.y[:-1, -1], b.train.x[1:, 0])
    assert b.info.extra["chars_per_token"] == 1.0 and b.info.extra["tokenizer"] == "char"
    assert len(b.tokenizer.decode(b.train.x[0].tolist())) == 32
    json.loads(b.info.to_json())  # everything recorded in the run is JSON


def test_stdlib_text_split_by_file_and_stable(stdlib_text) -> None:  # noqa: ANN001
    extra = stdlib_text.info.extra
    parts = extra["split_files"]
    _no_file_in_two_splits(parts)
    assert extra["files"] == {s: len(parts[s]) for s in ("train", "val", "test")}
    assert not any("site-packages" in n or "/test/" in n or n.startswith(("idlelib/", "lib2to3/"))
                   for split in parts.values() for n in split)
    assert sum(extra["chars"].values()) >= 200_000
    again = build(SMALL_TEXT, 1)  # the corpus and its splits do not depend on the seed
    assert again.info.extra["corpus_sha256"] == extra["corpus_sha256"]
    assert again.info.extra["split_files"] == parts
    assert torch.equal(again.train.x, stdlib_text.train.x)


def test_assign_splits_sizes_and_tiny_inputs() -> None:
    names = [f"pkg/m{i}.py" for i in range(40)]
    parts = assign_splits(names, 0.1, 0.2, sizes={n: 10 for n in names})
    assert sorted(sum(parts.values(), [])) == sorted(names)
    assert len(parts["test"]) == 8 and len(parts["val"]) == 4
    assert assign_splits(names, 0.1, 0.2) == parts  # stable, size 1 per file by default
    three = assign_splits(["a", "b", "c"], 0.15, 0.15, sizes={"a": 100, "b": 50, "c": 5})
    assert all(len(v) == 1 for v in three.values())  # every split gets a file
    assert three["train"] == ["a"]  # the biggest file trains


# ----------------------------------------------------------------------------- tokenizers


def test_char_tokenizer_round_trip_and_unknown() -> None:
    tok = CharTokenizer.fit("hello world")
    assert tok.vocab_size == len(set("hello world")) + 1  # + <unk>
    assert tok.decode(tok.encode("hello")) == "hello"
    assert tok.encode("z")[0] == 0 and tok.decode([0]) == "\ufffd"
    assert tok.encode(" dehlorw") == list(range(1, 9))  # sorted training characters after <unk>
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, CharTokenizer) and again.vocab_size == tok.vocab_size
    assert again.encode("world!") == tok.encode("world!")


def test_tokenizer_from_bad_json() -> None:
    for text in ("{", "[]", '{"kind": "wordpiece"}'):
        with pytest.raises(DataError):
            tokenizer_from_json(text)


def test_bpe_trained_on_train_split_round_trips() -> None:
    b = build(StdlibTextConfig(max_chars=100_000, block_size=32, tokenizer="bpe", bpe_vocab_size=400), 0)
    tok = b.tokenizer
    assert isinstance(tok, BPETokenizer) and tok.vocab_size <= 400
    assert b.info.extra["vocab_size"] == tok.vocab_size == b.info.num_outputs
    sample = "def main(argv):\n    return sorted(argv)  # ünïcode ok\n\ttabs\r\n"
    assert tok.decode(tok.encode(sample)) == sample
    again = tokenizer_from_json(tok.to_json())
    assert again.encode(sample) == tok.encode(sample) and again.vocab_size == tok.vocab_size
    assert b.info.extra["chars_per_token"] > 1.5


def test_bpe_sees_only_training_text(tmp_path: Path) -> None:
    # Two files: split by position, the last 20% (val + test) holds the only 'z' and 'q'.
    (tmp_path / "a.txt").write_text("alpha beta gamma delta epsilon\n" * 300)
    (tmp_path / "b.txt").write_text("alpha beta gamma delta epsilon\n" * 50 + "zyzzyva quux\n" * 200)
    b = build(TextFilesConfig(paths=[tmp_path], block_size=16, tokenizer="bpe", bpe_vocab_size=300), 0)
    assert b.info.extra["split_by"] == "position"
    vocab = b.tokenizer.tok.get_vocab()
    assert any(len(t) > 3 for t in vocab)  # merges were learned ...
    assert not [t for t in vocab if len(t) > 1 and ("z" in t or "q" in t)]  # none from held-out text
    assert b.tokenizer.decode(b.tokenizer.encode("zyzzyva quux")) == "zyzzyva quux"


# ----------------------------------------------------------------------------- stdlib_modules


def test_stdlib_modules_balanced_and_split_by_file(stdlib_modules) -> None:  # noqa: ANN001
    b = stdlib_modules
    assert b.info.task == "classification" and b.info.input_kind == "tokens"
    assert len(b.info.class_names) >= 8 and b.info.num_outputs == len(b.info.class_names)
    for split in ("train", "val", "test"):
        ds = b.split(split)
        assert ds.x.shape[1:] == (64,) and ds.x.dtype == torch.long and ds.y.dtype == torch.long
        counts = torch.bincount(ds.y, minlength=len(b.info.class_names))
        assert counts.min() == counts.max() > 0
    pad = b.info.extra["pad_id"]
    assert b.train.x.max() <= pad and b.info.extra["vocab_size"] == pad + 1
    files = b.info.extra["files"]
    assert all(files[s][p] > 0 for s in files for p in files[s])
    _no_file_in_two_splits(b.info.extra["split_files"])
    json.loads(b.info.to_json())


def test_stdlib_modules_padding_and_determinism(stdlib_modules) -> None:  # noqa: ANN001
    cfg = SMALL_MODULES.model_copy(update={"max_len": 512})
    b = build(cfg, 7)
    pad = b.info.extra["pad_id"]
    lengths = (b.train.x != pad).sum(1)
    assert (lengths < 512).any()  # right-padded ...
    row = b.train.x[int(torch.argmin(lengths))]
    n = int((row != pad).sum())
    assert (row[n:] == pad).all() and (row[:n] != pad).all()  # ... with padding only at the end
    # Splits and snippets do not depend on the seed, and the tokens are the same text.
    assert b.info.extra["split_files"] == stdlib_modules.info.extra["split_files"]
    assert torch.equal(b.train.y, stdlib_modules.train.y)
    assert torch.equal(b.train.x[:, :64], stdlib_modules.train.x)


def test_stdlib_modules_per_class_and_bad_package() -> None:
    b = build(StdlibModulesConfig(per_class=5, max_len=16), 0)
    assert torch.bincount(b.train.y).tolist() == [5] * len(b.info.class_names)
    with pytest.raises(DataError, match="did you mean 'asyncio'"):
        build(StdlibModulesConfig(packages=["asynico", "email"]), 0)


# ----------------------------------------------------------------------------- user text


def test_text_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = ["text,label"] + [f"\"good day number {i}\",pos" for i in range(10)] + \
           [f"\"bad day number {i}\",neg" for i in range(10)]
    path.write_text("\n".join(rows))
    b = build(TextCsvConfig(path=path, max_len=16), 0)
    assert b.info.class_names == ("neg", "pos") and b.train.x.shape[1] == 16
    assert sum(b.sizes().values()) == 20 and b.info.extra["pad_id"] == b.info.extra["vocab_size"] - 1
    with pytest.raises(DataError, match="did you mean 'text'"):
        build(TextCsvConfig(path=path, text_column="txt"), 0)
    with pytest.raises(DataError, match="no column 'target'"):
        build(TextCsvConfig(path=path, label_column="target"), 0)
    with pytest.raises(DataError, match="does not exist"):
        build(TextCsvConfig(path=tmp_path / "missing.csv"), 0)


def test_text_csv_numeric_labels_in_order(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("label,text\n" + "".join(f"{c},row {i}\n" for i in range(5) for c in (2, 10, 1)))
    assert build(TextCsvConfig(path=path), 0).info.class_names == ("1", "2", "10")


def test_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    b = build(TextFilesConfig(paths=[tmp_path], block_size=16), 0)
    assert len(b.train) > 0 and len(b.val) > 0 and len(b.test) > 0
    assert torch.equal(b.train.x[:, 1:], b.train.y[:, :-1])
    with pytest.raises(DataError, match="does not exist"):
        build(TextFilesConfig(paths=[tmp_path / "nope"]), 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.bin").write_bytes(b"\x00")
    with pytest.raises(DataError, match="no text files"):
        build(TextFilesConfig(paths=[empty]), 0)


def test_text_files_split_by_file(tmp_path: Path) -> None:
    for i in range(12):
        (tmp_path / f"doc{i}.md").write_text(f"# note {i}\n" + "some words about things\n" * 30)
    b = build(TextFilesConfig(paths=[tmp_path, tmp_path / "doc0.md"], block_size=16), 0)
    assert b.info.extra["split_by"] == "file" and b.info.extra["files"] == 12
    _no_file_in_two_splits(b.info.extra["split_files"])


# ----------------------------------------------------------------------------- series


def test_sunspots_chronological_and_normalised() -> None:
    b = build(SeriesConfig(name="sunspots", window=12, horizon=2), 0)
    info = b.info
    assert info.task == "forecast" and info.input_kind == "series" and info.num_outputs == 2
    assert b.train.x.shape[1:] == (12, 1) and b.train.y.shape[1:] == (2,) and b.train.x.dtype == torch.float32
    points = info.extra["split_points"]
    assert points["train"] + points["val"] + points["test"] == info.extra["points"] == 309
    assert torch.equal(b.train.x[1, :-1], b.train.x[0, 1:])  # windows slide by one step
    raw = series_values("sunspots")
    mean, std = info.mean[0], info.std[0]
    n_train, n_val = points["train"], points["val"]
    assert mean == pytest.approx(raw[:n_train].mean()) and std == pytest.approx(raw[:n_train].std())
    assert abs(((raw[:n_train] - mean) / std).mean()) < 1e-6
    # targets in time order: the train targets end before val's begin, and val's before test's
    z = (raw - mean) / std
    np.testing.assert_allclose(b.train.y[-1, -1].item(), z[n_train - 1], rtol=1e-5)
    np.testing.assert_allclose(b.val.y[0, 0].item(), z[n_train], rtol=1e-5)
    np.testing.assert_allclose(b.test.y[0, 0].item(), z[n_train + n_val], rtol=1e-5)
    np.testing.assert_allclose(b.test.y[-1, -1].item(), z[-1], rtol=1e-5)
    assert info.extra["frequency"] == "yearly"
    json.loads(info.to_json())


def test_co2_monthly() -> None:
    b = build(SeriesConfig(name="co2", window=24), 0)
    assert b.info.extra["points"] > 500 and torch.isfinite(b.train.x).all() and b.info.extra["series"] == "co2"
    assert 300 < b.info.mean[0] < 360  # ppm, normalised away in the inputs
    assert abs(float(b.train.x.mean())) < 1.0


def test_csv_series(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("value\n" + "\n".join(str(i % 7) for i in range(100)))
    b = build(CsvSeriesConfig(path=path, window=8), 0)
    assert b.train.x.shape[1:] == (8, 1) and b.info.extra["points"] == 100
    with pytest.raises(DataError, match="no column 'level'"):
        build(CsvSeriesConfig(path=path, column="level"), 0)
    with pytest.raises(DataError, match="does not exist"):
        build(CsvSeriesConfig(path=tmp_path / "none.csv"), 0)
    path.write_text("value\n1\n2\nabc\n")
    with pytest.raises(DataError, match="row 4"):
        build(CsvSeriesConfig(path=path), 0)


# ----------------------------------------------------------------------------- memory tasks


def test_adding_targets() -> None:
    b = build(AddingConfig(length=20, n_samples=100), 3)
    x, y = b.train.x, b.train.y
    assert b.info.task == "regression" and x.shape[1:] == (20, 2) and y.shape[1:] == (1,)
    assert sum(b.sizes().values()) == 100
    assert torch.all(x[..., 1].sum(1) == 2)
    assert torch.all(x[:, :10, 1].sum(1) == 1)  # one marker in each half
    assert ((x[..., 0] >= 0) & (x[..., 0] < 1)).all()
    torch.testing.assert_close((x[..., 0] * x[..., 1]).sum(1, keepdim=True), y)
    assert torch.equal(build(AddingConfig(length=20, n_samples=100), 3).train.x, x)
    assert not torch.equal(build(AddingConfig(length=20, n_samples=100), 4).train.x, x)


def test_copy_targets() -> None:
    cfg = CopyConfig(n_symbols=4, copy_length=3, delay=5, n_samples=50)
    b = build(cfg, 0)
    x, y = b.train.x, b.train.y
    assert b.info.task == "lm" and b.info.extra["vocab_size"] == 6 and x.dtype == torch.long
    assert x.shape[1] == 3 + 5 + 1 + 3 and y.shape == x.shape
    assert torch.equal(y[:, -3:], x[:, :3]) and (x[:, :3] < 4).all()
    assert (y[:, :-3] == -100).all()
    assert (x[:, 3:3 + 5] == 4).all() and (x[:, -3:] == 4).all()  # blanks = n_symbols
    assert (x[:, 3 + 5] == 5).all()  # delimiter id = n_symbols + 1
    assert torch.equal(build(cfg, 0).train.x, x)


def test_every_sequence_source_is_registered() -> None:
    adapter = TypeAdapter(DataConfig)
    for name in ("stdlib_text", "stdlib_modules", "adding", "copy"):
        assert type(adapter.validate_python({"name": name})).__name__.endswith("Config")
    for name in ("text_files", "text_csv", "sunspots", "co2", "csv_series"):
        assert name in SOURCES
