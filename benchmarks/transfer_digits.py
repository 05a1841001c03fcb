"""Few-shot transfer on the digits: the 0-4 CNN's features reused for 5-9, 10 images per class.

Trains `digits-cnn-0to4` once, then `digits-cnn-transfer` per seed in each variant (the seed
also draws which 10 images per class). Prints JSON: test accuracy per seed and the means.
Run from the repository root:
    python benchmarks/transfer_digits.py [--seeds 5] [--variants scratch,frozen]
    python benchmarks/transfer_digits.py --target "data.per_class=3 data.batch_size=5"
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import ember

# Overrides of digits-cnn-transfer (whose model.init_from is replaced by the 0-4 run).
VARIANTS: dict[str, list[str]] = {
    "scratch": ["model.init_from=null", "train.freeze=[]"],
    "frozen": [],  # the recipe: every conv block frozen
    "first_block_frozen": ["train.freeze=['features.0.*','features.1.*']"],
    "fine_tune_low_lr": ["train.freeze=[]", "optim.groups=[{params: 'features.*', lr: 0.0003}]"],
    "random_frozen": ["model.init_from=null"],  # control: untrained features, frozen
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--source", default="", help="extra overrides of the 0-4 pre-training, space-separated")
    parser.add_argument("--target", default="", help="extra overrides of every 5-9 run, space-separated")
    args = parser.parse_args()
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [f"log.runs_dir={tmp}", "log.report=false", "train.threads=1"]
        source = ember.train("digits-cnn-0to4", [*quiet, *args.source.split()], run_dir=Path(tmp) / "src",
                             verbose=False).path
        for name in args.variants.split(","):
            out[name] = []
            for seed in range(args.seeds):
                overrides = [*quiet, f"train.seed={seed}", f"model.init_from={source}", *VARIANTS[name],
                             *args.target.split()]
                run = ember.train("digits-cnn-transfer", overrides, verbose=False)
                out[name].append(round(json.loads(run.summary.read_text())["test"]["accuracy"], 4))
    means = {name: round(statistics.mean(accs), 4) for name, accs in out.items()}
    print(json.dumps({"per_seed": out, "mean": means, "source": args.source, "target": args.target}, indent=2))


if __name__ == "__main__":
    main()
