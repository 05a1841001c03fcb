"""`ember recommend RUN --user 42 -k 10`: the subcommand's parser and handler (no torch at import)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add `recommend` to the `ember` parser's subparsers."""
    r = sub.add_parser("recommend", help="top-k items for a user from a recommendation run",
                       description="Score every item for a user with a finished recommendation run and print "
                                   "the best ones the user has not interacted with yet.")
    r.add_argument("run_dir", type=Path, help="a recommendation run folder (movielens / interactions_csv)")
    r.add_argument("--user", required=True, help="the user's id as in the data file, e.g. 42")
    r.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    r.add_argument("--include-seen", action="store_true", help="also rank items the user already rated")
    r.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Print the recommendations; user mistakes raise EmberError (exit 2 in `ember.cli`)."""
    from ember.recommend.topk import recommend

    rows = recommend(args.run_dir, args.user, args.k, exclude_seen=not args.include_seen)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        value = row.get("predicted_rating", row.get("score"))
        print(f"{row['rank']:3d}. {row['title'] or row['item']}  [item {row['item']}, {value:.3f}]")
    return 0
