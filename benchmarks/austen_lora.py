"""LoRA continued pretraining of SmolLM2-135M on Jane Austen: held-out perplexity before and after.

    ember import smollm2-135m-instruct --out runs/smollm2-135m-instruct
    python benchmarks/austen_lora.py [--base runs/smollm2-135m-instruct] [--steps 60] [--threads 2]

Scores the imported model on the held-out novel (the recipe's test windows, `data.eval_limit`
of them spread over the book), trains the `smollm2-lora-austen` recipe, and scores the result
on the same windows. Prints JSON: perplexity before and after, the drop, the share of
parameters trained and the training time (with the load average: the time depends on it).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import ember
from ember.data import build as build_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="runs/smollm2-135m-instruct", help="the imported SmolLM2 run")
    parser.add_argument("--steps", type=int, default=None, help="train.max_steps (default: the recipe's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], help="more overrides for the recipe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = Path(args.base).resolve()
    runs = Path(tempfile.mkdtemp(prefix="austen-lora-"))
    overrides = [f"model.init_from={base}", f"data.tokenizer_from={base}", f"log.runs_dir={runs}",
                 f"train.threads={args.threads}", "log.report=false", *args.set]
    if args.steps is not None:
        overrides.append(f"train.max_steps={args.steps}")
    cfg = ember.load_config("smollm2-lora-austen", overrides)
    bundle = build_data(cfg.data, cfg.train.seed)
    t0 = time.perf_counter()
    before = ember.evaluate(base, "test", data=bundle)
    score_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = ember.train(cfg, verbose=True)
    train_s = time.perf_counter() - t0
    summary = json.loads(run.summary.read_text())
    after = summary["test"]
    print(json.dumps({
        "benchmark": "austen_lora",
        "test_windows": len(bundle.test), "block_size": cfg.data.block_size,
        "perplexity_before": round(before["perplexity"], 3), "perplexity_after": round(after["perplexity"], 3),
        "drop_percent": round(100 * (1 - after["perplexity"] / before["perplexity"]), 1),
        "trainable_share_percent": round(100 * summary["trainable_share"], 2),
        "steps": summary["steps"], "tokens_trained": summary["steps"] * cfg.data.batch_size * cfg.data.block_size,
        "train_and_score_s": round(train_s, 1), "train_loop_s": round(summary["train_time_s"], 1),
        "base_scoring_s": round(score_s, 1), "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()], "run": str(run.path),
    }, indent=2))


if __name__ == "__main__":
    main()
