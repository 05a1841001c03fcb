"""Few-shot Fashion-MNIST with a pretrained MobileNetV2: frozen head, the recipe, from scratch.

Runs `fashion-mobilenet-transfer` per seed in each variant (the seed also draws which images per
class). Prints JSON: test accuracy per seed and the means. Long on a CPU (each run scores the
10,000 test images); run from the repository root:
    python benchmarks/transfer_fashion.py [--seeds 3] [--variants frozen,recipe,scratch]
    python benchmarks/transfer_fashion.py --target "train.max_steps=2 model.input_size=32"   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import ember

# Overrides of fashion-mobilenet-transfer.
VARIANTS: dict[str, list[str]] = {
    "frozen": ["model.freeze=true", "train.freeze=[]", "train.unfreeze_at_epoch=null", "optim.groups=[]"],  # a linear probe
    "recipe": [],  # head alone, then everything fine-tuned
    "scratch": ["model.pretrained=false", "train.freeze=[]", "train.unfreeze_at_epoch=null", "optim.groups=[]"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed+seeds-1")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--target", default="", help="extra overrides of every run, space-separated")
    args = parser.parse_args()
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [f"log.runs_dir={tmp}", "log.report=false"]
        for name in args.variants.split(","):
            out[name] = []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                overrides = [*quiet, f"train.seed={seed}", *VARIANTS[name], *args.target.split()]
                run = ember.train("fashion-mobilenet-transfer", overrides, verbose=False)
                out[name].append(round(json.loads(run.summary.read_text())["test"]["accuracy"], 4))
    means = {name: round(statistics.mean(accs), 4) for name, accs in out.items()}
    print(json.dumps({"per_seed": out, "mean": means, "target": args.target}, indent=2))


if __name__ == "__main__":
    main()
