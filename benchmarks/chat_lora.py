"""Instruction LoRA of an imported SmolLM2 on a chat JSONL: held-out answer-token loss before and after.

    ember import smollm2-135m-instruct --out runs/smollm2-135m-instruct
    python benchmarks/chat_lora.py --base runs/smollm2-135m-instruct
    python benchmarks/chat_lora.py --base runs/smollm2-135m-instruct --over train.max_steps=2   # a smoke run

"Before" scores the base run's weights on the same seeded val/test conversations the
recipe holds out (the same tokens, the same mask: answers and end-of-turn markers only);
"after" is the tuned run's summary. Then one greedy answer from `ember.chat` per question
in --ask. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import ember
from ember.data import build as build_data
from ember.tasks import for_info
from ember.training.evaluation import evaluate_split


def _short(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(metrics[k]), 4) for k in ("loss", "perplexity", "accuracy") if k in metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="runs/smollm2-135m-instruct", help="the imported SmolLM2 run")
    parser.add_argument("--recipe", default="smollm2-chat-lora")
    parser.add_argument("--runs-dir", default=None, help="where the tuned run goes (default: a temp folder)")
    parser.add_argument("--over", nargs="*", default=[], help="more key=value overrides")
    parser.add_argument("--ask", nargs="*", default=["What is the capital of Italy?", "Which continent is Peru in?"])
    args = parser.parse_args()
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="chat-lora-")
    over = [f"model.init_from={args.base}", f"data.tokenizer_from={args.base}", f"log.runs_dir={runs_dir}",
            "log.report=false", *args.over]
    cfg = ember.load_config(args.recipe, over)
    bundle = build_data(cfg.data, cfg.train.seed)
    task = for_info(bundle.info)
    base = ember.load_run(args.base).model
    device = torch.device("cpu")
    before = {s: _short(evaluate_split(base, bundle.split(s), task, device, cfg.data.eval_batch_size, "fp32"))
              for s in ("val", "test")}
    del base
    t0 = time.perf_counter()
    run = ember.train(cfg, verbose=True)
    wall = time.perf_counter() - t0
    summary = json.loads(run.summary.read_text())
    answers = {q: ember.chat(run.path, [{"role": "user", "content": q}], temperature=0, max_new_tokens=60)
               for q in args.ask}
    base_answers = {q: ember.chat(args.base, [{"role": "user", "content": q}], temperature=0, max_new_tokens=60)
                    for q in args.ask}
    print(json.dumps({
        "recipe": args.recipe, "run": str(run.path), "threads": torch.get_num_threads(),
        "conversations": bundle.info.extra["conversations"],
        "trainable_params": summary.get("trainable_params"), "trainable_share": summary.get("trainable_share"),
        "steps": summary["steps"], "train_time_s": summary["train_time_s"], "wall_s": round(wall, 1),
        "before": before, "after": {s: _short(summary[s]) for s in ("val", "test")},
        "answers_after": answers, "answers_before": base_answers,
    }, indent=2))


if __name__ == "__main__":
    main()
