"""interactions_csv and movielens: splits, negatives from (seed, epoch, index), baselines, bad inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ember.data.interactions import read_interactions
from ember.data.ratings import leave_last_out, load_interactions
from ember.data.rec_config import InteractionsCsvConfig, MovieLensConfig
from ember.errors import DataError
from tests.conftest import run_cli


def test_rating_split_and_info(interactions: Path) -> None:
    b = load_interactions(InteractionsCsvConfig(path=interactions), seed=0)
    assert b.sizes() == {"train": 230, "val": 29, "test": 29}  # 288 rows, 80/10/10
    x, y = b.train.batch(torch.arange(4))
    assert x.dtype == torch.long and x.shape == (4, 2) and y.shape == (4, 1)
    assert b.info.task == "regression" and b.info.extra["num_users"] == 24 and b.info.extra["num_items"] == 30
    assert b.info.extra["baseline"]["name"] == "item_mean" and "rmse" in b.info.extra["baseline"]["test"]
    again = load_interactions(InteractionsCsvConfig(path=interactions), seed=0)
    assert torch.equal(again.test.x, b.test.x)


def test_leave_last_out_by_time(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    # user a: 4 rows out of time order; user b: 2 rows (all kept for training).
    path.write_text("user,item,rating,timestamp\na,1,5,30\na,2,4,10\na,3,3,40\na,4,2,20\nb,1,5,1\nb,2,1,2\n")
    data = read_interactions(InteractionsCsvConfig(path=path, task="ranking"))
    tr, va, te = leave_last_out(data)
    items = np.array(data.item_ids)[data.items]
    assert items[te].tolist() == ["3"] and items[va].tolist() == ["1"]
    assert sorted(items[tr].tolist()) == ["1", "2", "2", "4"]


def test_ranking_targets_and_negatives(interactions: Path) -> None:
    cfg = InteractionsCsvConfig(path=interactions, task="ranking", negatives=5)
    b = load_interactions(cfg, seed=3)
    assert b.sizes() == {"train": 24 * 10, "val": 24, "test": 24}
    x, y = b.test.batch(torch.arange(24))
    assert x.shape == (24, 1) and y.shape == (24, 30)
    assert ((y == 1).sum(1) == 1).all() and ((y == -1).sum(1) == 11).all()  # 10 train + 1 val item seen
    idx = torch.tensor([0, 7, 100])
    x1, y1 = b.train.batch(idx, epoch=2, train=True)
    x2, y2 = b.train.batch(idx, epoch=2, train=True)
    x3, _ = b.train.batch(idx, epoch=3, train=True)
    assert x1.shape == (3, 7) and y1.shape == (3, 6) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    # Each sample's negatives depend on its own index only, not on the batch it is in.
    x_alone, _ = b.train.batch(idx[1:2], epoch=2, train=True)
    assert torch.equal(x_alone[0], x1[1])
    seen = b.train.seen
    negs = x1[:, 2:]
    assert torch.equal(y1[:, 1:] == -1, seen[x1[:, :1].expand_as(negs), negs])
    base = b.info.extra["baseline"]
    assert base["name"] == "popularity" and set(base["test"]) == {"recall_at_10", "ndcg_at_10", "hit_rate_at_10"}


def test_movielens_from_recbole() -> None:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole not installed (pip install --no-deps recbole)")
    data = read_interactions(MovieLensConfig())
    assert (data.num_users, data.num_items, len(data.users)) == (943, 1682, 100000)
    feats = data.features
    assert len(feats["user_features"]["values"]) == 943 and len(feats["item_features"]["masks"]) == 1682


def test_movielens_without_recbole(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real(name, *a))
    with pytest.raises(DataError, match="pip install --no-deps recbole"):
        read_interactions(MovieLensConfig())


@pytest.mark.parametrize(("text", "message"), [
    ("user,item,timestamp\n1,2,3\n", "no 'rating' column"),
    ("user,item,rating,timestamp\n1,2,five,3\n", "row 2, column 'rating': 'five' is not a number"),
    ("user,item,rating,timestamp\n1,2,nan,3\n", "not a finite number"),
    ("user,item,rating,timestamp\n1,2\n", "row 2: 2 fields"),
    ("user,item,rating,timestamp\n", "needs a header row and at least one data row"),
])
def test_bad_ratings_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_interactions(InteractionsCsvConfig(path=path))


def test_ranking_needs_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match="no 'timestamp' column"):
        read_interactions(InteractionsCsvConfig(path=path, task="ranking"))


def test_cli_bad_ratings_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user,item,rating,timestamp\n1,2,3,4\n1,3,x,5\n")
    proc = run_cli("train", "movielens-mf", "data.name=interactions_csv", f"data.path={path}",
                   f"log.runs_dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "column 'rating': 'x' is not a number" in lines[0]
