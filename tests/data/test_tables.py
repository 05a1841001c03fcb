"""Parquet, JSON Lines and streamed CSV tables: read in blocks into memory-mapped arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data import build
from ember.data.config import CsvConfig
from ember.data.table_config import TableConfig
from ember.data.text_config import TextCsvConfig
from ember.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N = 300


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tables")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=N), rng.normal(size=N) * 3 + 1
    label = (a + b > 1).astype(int)
    pq.write_table(pa.table({"a": a, "b": b, "label": label}), root / "t.parquet", row_group_size=64)
    with open(root / "t.csv", "w") as f:
        rows = zip(a.tolist(), b.tolist(), label.tolist(), strict=True)
        f.write("a,b,label\n" + "".join(f"{x!r},{y!r},{c}\n" for x, y, c in rows))
    with open(root / "t.jsonl", "w") as f:
        for i in range(N):
            f.write(json.dumps({"text": ("fine day " if label[i] else "grim rain ") + str(i % 7),
                                "label": ["no", "yes"][label[i]]}) + "\n")
    with open(root / "texts.csv", "w") as f:
        f.write("text,label\n" + "".join(
            f"{'fine day' if label[i] else 'grim rain'} {i % 7},{['no', 'yes'][label[i]]}\n" for i in range(N)))
    return {"parquet": root / "t.parquet", "csv": root / "t.csv", "jsonl": root / "t.jsonl",
            "texts": root / "texts.csv"}


def test_parquet_and_streamed_csv_match_the_in_memory_csv(tables: dict[str, Path], tmp_path: Path) -> None:
    memory = build(CsvConfig(path=tables["csv"]), 0)
    streamed = build(CsvConfig(path=tables["csv"], stream=True, cache=tmp_path), 0)
    parquet = build(TableConfig(name="parquet", path=tables["parquet"], cache=tmp_path), 0)
    for other in (streamed, parquet):
        assert other.info.task == "classification" and other.info.feature_names == ("a", "b")
        assert other.sizes() == memory.sizes()
        for split in ("train", "val", "test"):
            torch.testing.assert_close(other.split(split).x[:], memory.split(split).x, rtol=0, atol=1e-5)
            assert torch.equal(other.split(split).y, memory.split(split).y)
    again = build(TableConfig(name="parquet", path=tables["parquet"], cache=tmp_path), 0)
    assert again.info.extra["table_cache"] == parquet.info.extra["table_cache"]


def test_text_tables(tables: dict[str, Path], tmp_path: Path) -> None:
    jsonl = build(TableConfig(name="jsonl", path=tables["jsonl"], text_column="text", max_len=12,
                              cache=tmp_path), 0)
    csv_streamed = build(TextCsvConfig(path=tables["texts"], max_len=12, stream=True, cache=tmp_path), 0)
    for b in (jsonl, csv_streamed):
        assert b.info.input_kind == "tokens" and b.info.class_names == ("no", "yes")
        x = b.train.x[:]
        assert x.shape == (len(b.train), 12) and x.dtype == torch.long
        assert int(x.max()) == b.info.extra["pad_id"] < b.info.extra["vocab_size"]  # padded
        text = b.tokenizer.decode([i for i in x[0].tolist() if i != b.info.extra["pad_id"]])
        assert text.startswith(("fine day", "grim rain"))


def test_regression_from_parquet(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"u": np.arange(50.0), "target": np.arange(50.0) * 0.37}), path)
    b = build(TableConfig(name="parquet", path=path, label_column="target", cache=tmp_path / "c"), 0)
    assert b.info.task == "regression" and b.train.y.shape[1:] == (1,)


def test_bad_tables(tables: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "c"
    with pytest.raises(DataError, match="no column 'species'"):
        build(TableConfig(name="parquet", path=tables["parquet"], label_column="species", cache=cache), 0)
    with pytest.raises(DataError, match="does not exist"):
        build(TableConfig(name="jsonl", path=tmp_path / "none.jsonl", cache=cache), 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\nnot json\n')
    with pytest.raises(DataError, match="line 3 is not JSON"):
        build(TableConfig(name="jsonl", path=bad, text_column="text", cache=cache), 0)
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="line 2: no 'label'"):
        build(TableConfig(name="jsonl", path=bad, text_column="text", cache=cache), 0)
    fake = tmp_path / "fake.parquet"
    fake.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a Parquet file"):
        build(TableConfig(name="parquet", path=fake, cache=cache), 0)
    words = tmp_path / "words.csv"
    words.write_text("a,label\n1,0\nseven,1\n3,0\n")
    with pytest.raises(DataError, match="row 2: a feature"):
        build(CsvConfig(path=words, stream=True, cache=cache), 0)


def test_truncated_table_cache_is_rebuilt(tables: dict[str, Path], tmp_path: Path) -> None:
    good = build(TableConfig(name="parquet", path=tables["parquet"], cache=tmp_path), 0)
    folder = Path(good.info.extra["table_cache"])
    data = (folder / "x.bin").read_bytes()
    (folder / "x.bin").write_bytes(data[:100])
    again = build(TableConfig(name="parquet", path=tables["parquet"], cache=tmp_path), 0)
    assert torch.equal(again.train.x[:], good.train.x[:])
