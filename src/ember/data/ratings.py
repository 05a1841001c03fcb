"""Recommendation data: rating prediction (random split) and ranking (leave-last-out by time).

Rating task: inputs are (user, item) index pairs, targets the rating; an 80/10/10 random split
from the seed. Ranking task: each user's last interaction (by time) is the test item, the one
before it the validation item, the rest train. Training rows are (user, positive item) and the
dataset appends `negatives` items drawn from (seed, epoch, index); validation and test rows
are users, with a dense target over the whole catalogue (1 held-out item, -1 seen, 0 other)
so the metrics rank every item the user has not seen (see `ember.retrieval`).

A popularity baseline (ranking: items by training count; rating: each item's mean training
rating) is scored on the same splits and recorded in `info.extra["baseline"]`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.interactions import Interactions, read_interactions
from ember.data.randomness import uniform
from ember.data.rec_config import InteractionsBaseConfig
from ember.data.splits import limit, split_indices
from ember.errors import DataError
from ember.retrieval import ranking_scores

__all__ = ["load_interactions", "NegativeSampling", "leave_last_out", "popularity_baseline"]

_NEG_SALT = 0x4E45  # "NE": negatives draw from their own stream
_MAX_DENSE = 200_000_000  # users x items held as one int8 matrix (200 MB)


class NegativeSampling(ArrayDataset):
    """Training pairs (user, positive); a training batch gains `negatives` items per row.

    `batch(train=True)` returns x (B, 2 + k) = user, positive, k negatives and y (B, 1 + k) =
    1 for the positive, 0 for a negative, -1 for a negative the user has seen (left out of the
    softmax). Outside training (scoring the train split) a row is the user against the whole
    catalogue: x (B, 1), y (B, items) with the row's item 1 and the user's other items -1.
    """

    def __init__(self, pairs: Tensor, seen: Tensor, negatives: int, seed: int) -> None:
        super().__init__(pairs, torch.ones(len(pairs), 1, dtype=torch.int8))
        self.seen = seen  # (users, items) bool: every training interaction
        self.negatives = negatives
        self.seed = seed

    def batch(self, indices: Tensor, epoch: int = 0, train: bool = False) -> tuple[Tensor, Tensor]:
        pairs = self.x[indices]  # (B, 2)
        users, items = pairs[:, 0], pairs[:, 1]
        if not train:
            target = torch.where(self.seen[users], -1, 0).to(torch.int8)  # (B, I)
            target[torch.arange(len(users)), items] = 1
            return users[:, None], target
        k, n_items = self.negatives, self.seen.shape[1]
        draw = indices[:, None].long() * k + torch.arange(k)  # (B, k): a draw per (index, slot)
        negs = (uniform(self.seed, epoch, draw.flatten(), _NEG_SALT) * n_items).long().clamp_(max=n_items - 1)
        negs = negs.view(-1, k)
        target = torch.zeros(len(users), 1 + k, dtype=torch.int8)
        target[:, 0] = 1
        target[:, 1:] = torch.where(self.seen[users[:, None], negs], -1, 0).to(torch.int8)
        return torch.cat([pairs, negs], dim=1), target

    def subset(self, indices: Tensor) -> NegativeSampling:
        return NegativeSampling(self.x[indices], self.seen, self.negatives, self.seed)


def leave_last_out(data: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (train, val, test): per user the last row by time is test, the one before val.

    Users with fewer than three interactions keep them all in training. Ties in time keep the
    file's order.
    """
    assert data.timestamps is not None
    order = np.lexsort((np.arange(len(data.users)), data.timestamps, data.users))  # by user, time, row
    users = data.users[order]
    last = np.r_[users[1:] != users[:-1], True]  # the last row of each user's run
    starts = np.r_[True, users[1:] != users[:-1]]
    run_len = np.diff(np.r_[np.flatnonzero(starts), len(users)])
    counts = np.repeat(run_len, run_len)
    test_mask = last & (counts >= 3)
    val_mask = np.r_[last[1:], False] & (counts >= 3)
    train_mask = ~(test_mask | val_mask)
    return order[train_mask], order[val_mask], order[test_mask]


def _dense_targets(users: np.ndarray, items: np.ndarray, seen: Tensor) -> tuple[Tensor, Tensor]:
    """One row per held-out interaction: x the user (R, 1), y (R, items) 1 held out, -1 seen."""
    u = torch.from_numpy(users)
    target = torch.where(seen[u], -1, 0).to(torch.int8)
    target[torch.arange(len(u)), torch.from_numpy(items)] = 1
    return u[:, None], target


def popularity_baseline(train_counts: Tensor, splits: dict[str, ArrayDataset], k: int = 10) -> dict[str, Any]:
    """Recall/NDCG/HitRate@k of ranking every unseen item by its training count."""
    out: dict[str, Any] = {"name": "popularity", "description": "items ranked by their training interactions"}
    for name, ds in splits.items():
        if len(ds):
            scores = train_counts.float().expand(len(ds), -1)
            values = ranking_scores(scores, ds.y, k)
            out[name] = {f"{m}_at_{k}": round(float(v.mean()), 6) for m, v in values.items()}
    return out


def _rating_baseline(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, tr: np.ndarray,
                     held: dict[str, np.ndarray], n_items: int) -> dict[str, Any]:
    """RMSE/MAE of predicting each item's mean training rating (the global mean for unseen items)."""
    sums = np.bincount(items[tr], ratings[tr], minlength=n_items)
    counts = np.bincount(items[tr], minlength=n_items)
    mean = float(ratings[tr].mean())
    item_mean = np.where(counts > 0, sums / np.maximum(counts, 1), mean)
    out: dict[str, Any] = {"name": "item_mean", "description": "each item's mean training rating"}
    for name, rows in held.items():
        if len(rows):
            err = item_mean[items[rows]] - ratings[rows]
            out[name] = {"rmse": round(float(np.sqrt((err**2).mean())), 6), "mae": round(float(np.abs(err).mean()), 6)}
    return out


def _info(cfg: InteractionsBaseConfig, data: Interactions, extra: dict[str, Any]) -> DataInfo:
    common = {"source": data.source, "num_users": data.num_users, "num_items": data.num_items,
              "interactions": len(data.users), "user_ids": data.user_ids, "item_ids": data.item_ids,
              **data.features, **extra}
    if cfg.task == "rating":
        return DataInfo(task="regression", input_kind="interactions", input_shape=(2,), num_outputs=1,
                        feature_names=("user", "item"), extra={**common, "targets": ["rating"]})
    return DataInfo(task="ranking", input_kind="interactions", input_shape=(1,), num_outputs=data.num_items,
                    feature_names=("user",), extra=common)


def _load_rating(cfg: InteractionsBaseConfig, data: Interactions, seed: int) -> DataBundle:
    assert data.ratings is not None
    tr, va, te = split_indices(len(data.users), cfg, seed)
    tr = limit(tr, cfg)
    x = torch.from_numpy(np.stack([data.users, data.items], axis=1))  # (N, 2)
    y = torch.from_numpy(data.ratings)[:, None]  # (N, 1)
    ratings = data.ratings
    baseline = _rating_baseline(data.users, data.items, ratings, tr.numpy(),
                                {"val": va.numpy(), "test": te.numpy()}, data.num_items)
    extra = {"global_mean": float(ratings[tr.numpy()].mean()) if len(tr) else 0.0,
             "rating_range": [float(ratings.min()), float(ratings.max())], "baseline": baseline}
    return DataBundle(ArrayDataset(x[tr], y[tr]), ArrayDataset(x[va], y[va]), ArrayDataset(x[te], y[te]),
                      _info(cfg, data, extra))


def _load_ranking(cfg: InteractionsBaseConfig, data: Interactions, seed: int) -> DataBundle:
    if cfg.min_rating is not None:
        if data.ratings is None:
            raise DataError("data.min_rating needs a 'rating' column in the interactions")
        keep = data.ratings >= cfg.min_rating
        data.users, data.items = data.users[keep], data.items[keep]
        data.timestamps = data.timestamps[keep] if data.timestamps is not None else None
        data.ratings = data.ratings[keep]
    if data.num_users * data.num_items > _MAX_DENSE:
        raise DataError(f"{data.num_users} users x {data.num_items} items is too large for the dense ranking "
                        f"targets (limit {_MAX_DENSE:,} pairs); filter the interactions first")
    tr, va, te = leave_last_out(data)
    if len(te) == 0:
        raise DataError("no user has 3 or more interactions, so leave-last-out leaves nothing to test on")
    seen = torch.zeros(data.num_users, data.num_items, dtype=torch.bool)
    seen[torch.from_numpy(data.users[tr]), torch.from_numpy(data.items[tr])] = True
    val_seen = seen.clone()  # at test time the validation item has been seen too
    val_seen[torch.from_numpy(data.users[va]), torch.from_numpy(data.items[va])] = True
    pairs = torch.from_numpy(np.stack([data.users[tr], data.items[tr]], axis=1))
    pairs = limit(pairs, cfg)
    val = ArrayDataset(*_dense_targets(data.users[va], data.items[va], seen))
    test = ArrayDataset(*_dense_targets(data.users[te], data.items[te], val_seen))
    counts = torch.bincount(pairs[:, 1], minlength=data.num_items)
    extra = {"negatives": cfg.negatives, "baseline": popularity_baseline(counts, {"val": val, "test": test})}
    train = NegativeSampling(pairs, seen, cfg.negatives, seed)
    return DataBundle(train, val, test, _info(cfg, data, extra))


def load_interactions(cfg: InteractionsBaseConfig, seed: int) -> DataBundle:
    """`movielens` / `interactions_csv`: the bundle for `cfg.task` (rating or ranking)."""
    data = read_interactions(cfg)
    return _load_rating(cfg, data, seed) if cfg.task == "rating" else _load_ranking(cfg, data, seed)
