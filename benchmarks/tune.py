"""Tune benchmark: a 30-trial study on digits-mlp, against the recipe's defaults and no pruning.

    python benchmarks/tune.py                  # 30 trials, 2 workers, median pruner (~10 min on 2 cores)
    python benchmarks/tune.py --quick          # 6 trials of 3 epochs: a smoke test of the script

Three things are run, each as `ember` runs them:
1. the recipe with its defaults (`ember train digits-mlp`): its final val accuracy;
2. the study (`ember tune digits-mlp --trials 30 --workers 2 --pruner median`): wall time,
   best val accuracy, epochs run;
3. the same trials without pruning: a second study, its queue filled with the first study's
   parameters in order, `--pruner none`; its epochs are what pruning is measured against.

Prints one JSON object: wall times, best val accuracy vs the defaults, the share of epochs
pruning saved, the machine's load average before and after (the figures depend on it), and
whether the issue's targets hold (under 15 minutes on 2 cores; at least as good as the
defaults; >= 40% of the epochs saved).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import optuna  # noqa: E402
from optuna.storages.journal import JournalFileBackend, JournalStorage  # noqa: E402

import ember  # noqa: E402
from ember.runs import Study  # noqa: E402

SPACE: dict[str, Any] = {
    "optim.lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "optim.weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
    "data.batch_size": {"int": [16, 128], "log": True},
    "model.dropout": {"uniform": [0.0, 0.5]},
    "model.hidden": {"choice": [[64], [128, 64], [256, 128]]},
}


def _study(recipe: str, overrides: list[str], trials: int, workers: int, pruner: str, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = ember.tune(recipe, SPACE, overrides, trials=trials, workers=workers, pruner=pruner, study=name,
                        quiet=True)
    wall = time.perf_counter() - t0
    record = json.loads((result.path / "study.json").read_text())
    return {"wall_s": round(wall, 1), "best_val_accuracy": result.best_value, "best_params": result.best_params,
            "epochs_run": record["epochs_run"], "counts": record["counts"], "path": str(result.path),
            "trials": record["trials"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="6 trials of 3 epochs")
    p.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temp folder)")
    args = p.parse_args()
    trials = 6 if args.quick else args.trials
    root = args.out or Path(tempfile.mkdtemp(prefix="ember-tune-bench-"))
    overrides = [f"log.runs_dir={root}"] + (["train.epochs=3"] if args.quick else [])
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    default = ember.train("digits-mlp", [*overrides, "train.threads=1"], run_dir=root / "defaults", quiet=True,
                          verbose=False)
    default_s = time.perf_counter() - t0
    default_val = json.loads(default.summary.read_text())["val"]["accuracy"]

    pruned = _study("digits-mlp", overrides, trials, args.workers, "median", "bench-median")

    # The same trials without pruning: queue the first study's params, in its order.
    none_dir = Study(root / "bench-none")
    none_dir.path.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(none_dir.journal)))
    queued = optuna.create_study(storage=storage, study_name="bench-none", direction="maximize")
    first = optuna.load_study(study_name="bench-median",
                              storage=JournalStorage(JournalFileBackend(str(Study(Path(pruned["path"])).journal))))
    for t in sorted(first.get_trials(), key=lambda t: t.number):
        queued.enqueue_trial(dict(t.params))
    unpruned = _study("digits-mlp", overrides, trials, args.workers, "none", "bench-none")
    same = [t["params"] for t in pruned["trials"]] == [t["params"] for t in unpruned["trials"]]

    epochs = ember.load_config("digits-mlp", overrides).train.epochs
    saved = 1 - pruned["epochs_run"] / max(unpruned["epochs_run"], 1)
    out = {
        "benchmark": "tune",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "optuna": optuna.__version__,
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"recipe": "digits-mlp", "trials": trials, "workers": args.workers, "epochs_per_trial": epochs,
                  "sampler": "tpe", "space": SPACE},
        "defaults": {"val_accuracy": default_val, "wall_s": round(default_s, 1)},
        "median_pruner": {k: v for k, v in pruned.items() if k != "trials"},
        "no_pruning_same_trials": {k: v for k, v in unpruned.items() if k != "trials"},
        "same_trials": same,
        "epochs_saved_share": round(saved, 4),
        "best_minus_defaults": None if pruned["best_val_accuracy"] is None
        else round(pruned["best_val_accuracy"] - default_val, 4),
        "targets": {
            "under_15_min": pruned["wall_s"] < 900,
            "at_least_defaults": pruned["best_val_accuracy"] is not None and pruned["best_val_accuracy"] >= default_val,
            "pruning_saves_40pct": saved >= 0.40,
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
