"""Few-shot Fashion-MNIST with a pretrained MobileNetV2: the recipes, fine-tuning, from scratch.

Runs `fashion-mobilenet-transfer` (`fashion-mobilenet-finetune` for `full`) per seed in each
variant (the seed also draws which images per class). Prints JSON: test accuracy per seed and the
means. Long on a CPU (each run scores the 10,000 test images); run from the repository root:
    python benchmarks/transfer_fashion.py [--seeds 5] [--variants recipe,finetune,scratch]
    python benchmarks/transfer_fashion.py --per-class 100 [--variants full,recipe,finetune,scratch]
    python benchmarks/transfer_fashion.py --target "train.max_steps=2 model.input_size=32"   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import ember

TRANSFER, FINETUNE = "fashion-mobilenet-transfer", "fashion-mobilenet-finetune"
# Per variant: the recipe and its overrides. fashion-mobilenet-transfer is a linear head on three
# mid-level blocks, the backbone frozen; fashion-mobilenet-finetune trains everything from the first
# step, the backbone at a third of the head's LR.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "recipe": (TRANSFER, []),
    # the head alone for 8 epochs, then everything, the backbone at a tenth of the head's LR
    "finetune": (TRANSFER, ["model.freeze=false", "train.freeze=[features.*]", "train.unfreeze_at_epoch=8",
                            "optim.lr=0.003", "optim.weight_decay=0.0001",
                            "optim.groups=[{params: features.*, lr: 0.0003}]"]),
    "full": (FINETUNE, []),  # its per-class count and batch are set by --per-class below
    # the same network from a random initialisation, every weight trained (at the LR it was measured at)
    "scratch": (TRANSFER, ["model.pretrained=false", "model.freeze=false", "optim.lr=0.003",
                           "optim.weight_decay=0.0001"]),
}
# 100 images per class: 10x the steps per run, so the probe's strong weight decay is dropped.
HUNDRED_PER_CLASS = ["data.per_class=100", "data.batch_size=50", "optim.lr=0.003", "optim.weight_decay=0.0001"]
TEN_PER_CLASS = ["data.per_class=10", "data.batch_size=20"]  # the probe's own; FINETUNE's are 100 and 50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed+seeds-1")
    parser.add_argument("--variants", default="recipe,scratch", help=f"comma-separated of {list(VARIANTS)}")
    parser.add_argument("--per-class", type=int, choices=(10, 100), default=10, help="training images per class")
    parser.add_argument("--target", default="", help="extra overrides of every run, space-separated")
    args = parser.parse_args()
    out: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}  # the whole run: training, validation and the 10,000 test images
    size = HUNDRED_PER_CLASS if args.per_class == 100 else TEN_PER_CLASS
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [f"log.runs_dir={tmp}", "log.report=false"]
        for name in args.variants.split(","):
            out[name], seconds[name] = [], []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                recipe, variant = VARIANTS[name]
                overrides = [*quiet, f"train.seed={seed}", *size, *variant, *args.target.split()]
                start = time.perf_counter()
                run = ember.train(recipe, overrides, verbose=False)
                seconds[name].append(round(time.perf_counter() - start, 1))
                out[name].append(round(json.loads(run.summary.read_text())["test"]["accuracy"], 4))
    means = {name: round(statistics.mean(accs), 4) for name, accs in out.items()}
    print(json.dumps({"per_seed": out, "mean": means, "run_seconds": seconds, "per_class": args.per_class,
                      "target": args.target}, indent=2))


if __name__ == "__main__":
    main()
