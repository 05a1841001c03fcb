"""Config sections for the recommendation sources: MovieLens 100k and the user's interactions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ember.data.config import BaseDataConfig

__all__ = ["InteractionsBaseConfig", "MovieLensConfig", "InteractionsCsvConfig"]


class InteractionsBaseConfig(BaseDataConfig):
    """What every interactions source shares: the task, its split and the negatives drawn."""

    task: Literal["rating", "ranking"] = Field(
        "rating", description="rating: predict the rating (random split); ranking: recommend the next items "
                              "(per-user leave-last-out by time)")
    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(256, ge=1, description="rows per evaluation batch (ranking: users)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="rating task: random share held out for validation")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="rating task: random share held out for testing")
    negatives: int = Field(32, ge=1, le=4096, description="ranking: items drawn per positive from (seed, epoch, index)")
    min_rating: float | None = Field(
        None, description="ranking: interactions rated below this are not positives (None: all are)")


class MovieLensConfig(InteractionsBaseConfig):
    """MovieLens 100k (943 users, 1,682 films, 100,000 ratings) as shipped in the `recbole` package.

    Its licence forbids redistribution, so it is read from the installed package, never copied:
    `pip install --no-deps recbole`.
    """

    name: Literal["movielens"] = "movielens"


class InteractionsCsvConfig(InteractionsBaseConfig):
    """The user's interactions: a CSV with columns user, item, rating, timestamp.

    `rating` is needed for the rating task, `timestamp` for the ranking task's split; `items`
    (optional) is a CSV with columns item, title that `ember recommend` shows.
    """

    name: Literal["interactions_csv"] = "interactions_csv"
    path: Path
    items: Path | None = None
