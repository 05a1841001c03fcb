"""Few-shot transfer on the digits: 0-4 features frozen vs from scratch, 10 images per class of 5-9.

Prints JSON: test accuracy per seed for both, and their means. Run from the repository root:
    python benchmarks/transfer_digits.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ember


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    out: dict[str, list[float]] = {"transfer": [], "scratch": []}
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [f"log.runs_dir={tmp}", "log.report=false"]
        source = ember.train("digits-cnn-0to4", quiet, run_dir=Path(tmp) / "src", verbose=False).path
        for seed in range(args.seeds):
            common = [*quiet, f"train.seed={seed}"]
            for name, extra in (("transfer", [f"model.init_from={source}"]),
                                ("scratch", ["model.init_from=null", "train.freeze=[]"])):
                run = ember.train("digits-cnn-transfer", [*common, *extra], verbose=False)
                out[name].append(json.loads(run.summary.read_text())["test"]["accuracy"])
    means = {f"{k}_mean": sum(v) / len(v) for k, v in out.items()}
    print(json.dumps({**out, **means, "samples_per_class": 10}, indent=2))


if __name__ == "__main__":
    main()
