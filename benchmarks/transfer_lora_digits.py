"""LoRA vs full fine-tuning: the 0-4 digits CNN adapted to the digits 5-9 (all their training images).

LoRA: a rank-1 adapter on the hidden head layer plus the new output layer (~2% of the
parameters); full: every parameter trains. Prints JSON with test accuracies per seed, means,
and the trainable shares. Run from the repository root:
    python benchmarks/transfer_lora_digits.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import ember

LORA = "model.lora={r: 1, alpha: 2, targets: ['head.2'], also_train: ['head.5']}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    out: dict[str, list[float]] = {"full": [], "lora": []}
    share: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [f"log.runs_dir={tmp}", "log.report=false"]
        source = ember.train("digits-cnn-0to4", quiet, run_dir=Path(tmp) / "src", verbose=False).path
        for seed in range(args.seeds):
            common = [*quiet, f"train.seed={seed}", f"model.init_from={source}", "data.per_class=null",
                      "data.batch_size=32", "train.epochs=10", "train.freeze=[]"]
            for name, extra in (("full", []), ("lora", [LORA, "optim.lr=0.01"])):
                run = ember.train("digits-cnn-transfer", [*common, *extra], verbose=False)
                summary = json.loads(run.summary.read_text())
                out[name].append(summary["test"]["accuracy"])
                share[name] = summary["trainable_share"]
    means = {f"{k}_mean": sum(v) / len(v) for k, v in out.items()}
    print(json.dumps({**out, **means, "trainable_share": share}, indent=2))


if __name__ == "__main__":
    main()
