"""Tiny synthetic interactions (users with a taste for one of two item groups) and trained runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ember

TINY = ["train.threads=1", "log.report=true", "data.eval_batch_size=64"]


def write_interactions(path: Path, users: int = 24, items: int = 30, per_user: int = 12, seed: int = 0) -> Path:
    """users x per_user rows: even users like items 0..14, odd ones 15..29; times increase."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,timestamp"]
    half = items // 2
    for u in range(users):
        liked = np.arange(half) + (0 if u % 2 == 0 else half)
        chosen = rng.choice(liked, size=min(per_user, half), replace=False)
        for t, i in enumerate(chosen):
            rating = int(np.clip(round(4 + rng.normal(0, 0.5)), 1, 5))
            lines.append(f"u{u},m{i},{rating},{1000 + 10 * t}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def interactions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("interactions")
    items = folder / "items.csv"
    items.write_text("item,title\n" + "".join(f"m{i},Film {i}\n" for i in range(30)))
    return write_interactions(folder / "ratings.csv")


@pytest.fixture(scope="session")
def rec_runs(tmp_path_factory: pytest.TempPathFactory, interactions: Path) -> dict[str, Path]:
    """A rating MF run and a ranking two-tower run on the synthetic interactions."""
    root = tmp_path_factory.mktemp("rec-runs")
    data = ["data.name=interactions_csv", f"data.path={interactions}", f"data.items={interactions.parent / 'items.csv'}"]
    common = [f"log.runs_dir={root}", *TINY, *data]
    rating = ember.train("movielens-mf", [*common, "train.epochs=3", "model.dim=8", "model.user_features=false",
                                            "model.item_features=false"], verbose=False)
    ranking = ember.train("movielens-two-tower", [*common, "train.epochs=3", "model.dim=8", "model.hidden=[16]",
                                                  "model.out_dim=8", "data.negatives=4",
                                                  "model.user_features=false", "model.item_features=false"], verbose=False)
    return {"rating": rating.path, "ranking": ranking.path}
