"""Top-k recommendations from a finished recommendation run (`ember recommend`, `/v1/recommend`).

The run's model scores every item for a user; items the user already interacted with (any row
of the run's interactions, whatever split it fell in) are left out, and titles come from the
item file (MovieLens' `ml-100k.item`, or `data.items` for an interactions CSV).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ember.data.bundle import DataInfo
from ember.data.interactions import item_titles, read_interactions
from ember.errors import DataError, RunError
from ember.loading import LoadedRun, load_run

__all__ = ["Recommender", "recommend", "interaction_input"]


class Recommender:
    """A loaded recommendation run, the items each user has seen, and the item titles."""

    def __init__(self, loaded: LoadedRun) -> None:
        info = loaded.info
        if info.input_kind != "interactions":
            raise RunError(f"'{loaded.run.path}' is a {info.task} run on {info.input_kind} inputs; recommending "
                           "needs a run on interactions (data.name=movielens or interactions_csv)")
        self.loaded = loaded
        self.user_ids: list[str] = list(info.extra["user_ids"])
        self.item_ids: list[str] = list(info.extra["item_ids"])
        self._user_index = {u: i for i, u in enumerate(self.user_ids)}
        data = read_interactions(loaded.config.data)  # type: ignore[arg-type]
        if data.item_ids != self.item_ids or data.user_ids != self.user_ids:
            raise DataError(f"the interactions '{data.source}' no longer match the run's users and items; "
                            "retrain on the current file")
        self.seen = torch.zeros(len(self.user_ids), len(self.item_ids), dtype=torch.bool)
        self.seen[torch.from_numpy(data.users), torch.from_numpy(data.items)] = True
        self.titles = item_titles(loaded.config.data)  # type: ignore[arg-type]

    def user_index(self, user: str | int) -> int:
        key = str(user).strip()
        if key not in self._user_index:
            shown = ", ".join(self.user_ids[:5])
            raise DataError(f"unknown user '{key}'; this run knows {len(self.user_ids)} users (ids such as {shown})")
        return self._user_index[key]

    @torch.no_grad()
    def top_k(self, user: str | int, k: int = 10, exclude_seen: bool = True) -> list[dict[str, Any]]:
        """The `k` best-scored items for `user`: rank, item id, title and score."""
        if k < 1:
            raise DataError(f"-k: got {k}; give a positive number of items")
        u = self.user_index(user)
        scores = self.loaded.model(torch.tensor([[u]]))[0].float()  # (items,)
        if exclude_seen:
            scores = scores.masked_fill(self.seen[u], float("-inf"))
        k = min(k, int(torch.isfinite(scores).sum()))
        top = scores.topk(k)
        label = "predicted_rating" if self.loaded.info.task == "regression" else "score"
        return [{"rank": r + 1, "item": self.item_ids[int(i)], "title": self.titles.get(self.item_ids[int(i)], ""),
                 label: round(float(s), 4)} for r, (s, i) in enumerate(zip(top.values, top.indices))]


def recommend(run_dir: str | Path, user: str | int, k: int = 10, exclude_seen: bool = True) -> list[dict[str, Any]]:
    """Top-`k` items for `user` (a raw user id, as in the data file) from a finished run.

    Example:
        >>> recommend("runs/movielens-mf-20261201-120000", "42", k=5)[0]
        {'rank': 1, 'item': '...', 'title': '...', 'predicted_rating': 4.6}
    """
    return Recommender(load_run(run_dir)).top_k(user, k, exclude_seen)


def interaction_input(item: Any, info: DataInfo) -> torch.Tensor:
    """A served item -> (1, 2) indices for a rating model ({"user", "item"}) or (1, 1) for ranking ({"user"}).

    Raises:
        DataError: an unknown id or a malformed item.
    """
    if not isinstance(item, dict) or "user" not in item:
        want = '{"user": "42", "item": "50"}' if info.task == "regression" else '{"user": "42"}'
        raise DataError(f"interaction models take items like {want}")
    users = {u: i for i, u in enumerate(info.extra["user_ids"])}
    user = str(item["user"])
    if user not in users:
        raise DataError(f"unknown user '{user}'")
    if info.task != "regression":
        return torch.tensor([[users[user]]])
    items = {v: i for i, v in enumerate(info.extra["item_ids"])}
    key = str(item.get("item"))
    if key not in items:
        raise DataError(f"unknown item '{key}'; a rating model needs {{'user': ..., 'item': ...}}")
    return torch.tensor([[users[user], items[key]]])
