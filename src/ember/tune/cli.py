"""`ember tune`: the subcommand's parser and handler (no torch or optuna import at module level)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register `ember tune` on the `ember` subparsers."""
    t = sub.add_parser("tune", help="search hyperparameters with Optuna (trials are normal runs)",
                       description="Search a recipe's hyperparameters over a YAML space. Every trial is a run "
                                   "in runs/<study>/trial-NNNN/; running the same command again resumes the study.")
    t.add_argument("recipe", help="a shipped recipe name or a CONFIG.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value",
                   help="fixed overrides for every trial, e.g. train.epochs=10")
    t.add_argument("--space", required=True, type=Path,
                   help="YAML: config key -> {uniform|loguniform|int: [lo, hi]} or {choice: [...]}")
    t.add_argument("--trials", type=int, default=40, help="finished trials the study should hold (default 40)")
    t.add_argument("--workers", type=int, default=1, help="trial processes at once; cores are divided among them")
    t.add_argument("--timeout", default=None, help="start no trial after this long, e.g. 30m, 2h, 600")
    t.add_argument("--metric", default=None, help="validation metric, e.g. val.accuracy (default: the task's)")
    t.add_argument("--direction", default=None, choices=["max", "min"], help="default: the metric's own")
    t.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    t.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "cmaes"])
    t.add_argument("--storage", default=None,
                   help="SQLAlchemy URL, e.g. sqlite:///study.db (default: a journal file in the study folder)")
    t.add_argument("--study", default=None, help="study name and folder under runs/ (default: <recipe>-tune)")
    t.add_argument("--quiet", action="store_true", help="no line per trial")


def run(args: argparse.Namespace) -> int:
    """Run the study; print where its report and best config are."""
    from ember.tune.study import tune

    recipe, overrides = args.recipe, list(args.overrides)
    try:
        result = tune(recipe, args.space, overrides, trials=args.trials, workers=args.workers,
                      timeout=args.timeout, metric=args.metric, direction=args.direction, pruner=args.pruner,
                      sampler=args.sampler, storage=args.storage, study=args.study, quiet=args.quiet)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()))
    print(f"study {result.name}: {counts}")
    if result.best_value is not None:
        print(f"best: {result.best_value:.4f} with {result.best_params}")
        print(f"best config: {result.best_config} (ember train {result.best_config})")
    print(f"report: {result.path / 'study.html'}")
    return 0
