"""Ember's `fit` against a hand-written PyTorch loop on the digits CNN, in one process.

Same model and initial weights, same data order and augmentation, same optimizer, LR
schedule and batch size. Start-up, data loading and evaluation are excluded: Ember's
`train_time_s` counts only its optimizer steps (logging and the per-step NaN check
included, validation and checkpoint writes excluded). `ratio_with_checkpoints` also counts
the checkpoint written at each epoch's end. Rounds alternate to cancel drift; the ratio compares the fastest round of each.

    python benchmarks/overhead.py --epochs 10 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ember.config import load
from ember.data import build as build_data
from ember.models import build as build_model
from ember.runs import new_run_dir
from ember.tasks import for_info
from ember.training.batches import BatchPlan
from ember.training.loop import fit
from ember.training.optim import build_optimizer
from ember.training.schedule import lr_at


def raw_loop(cfg, bundle) -> float:  # noqa: ANN001
    """The hand-written baseline: the loop a PyTorch user would write."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    opt = build_optimizer(model, cfg.optim)
    plan = BatchPlan(len(bundle.train), cfg.data.batch_size, seed=cfg.train.seed)
    steps = plan.steps_per_epoch()
    total = cfg.train.epochs * steps
    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(cfg.train.epochs):
        order = plan.order(epoch)
        for pos in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.optim.lr, cfg.schedule)
            x, y = bundle.train.batch(plan.micro_batches(order, pos)[0], epoch, train=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    return time.perf_counter() - start


def ember_fit(cfg, bundle, root: Path, i: int) -> tuple[float, float]:  # noqa: ANN001
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    run = new_run_dir(root, "bench", root / f"run{i}")
    start = time.perf_counter()
    state = fit(model, bundle, for_info(bundle.info), cfg, run, torch.device("cpu"))
    wall = time.perf_counter() - start
    return state.train_time_s, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    # Validation only at the very end (eval_every beyond the run), so it is not in the wall time much.
    cfg = load("digits-cnn", [f"train.epochs={args.epochs}", f"train.eval_every={args.epochs + 1}",
                              "log.report=false", "train.threads=2"])
    bundle = build_data(cfg.data, cfg.train.seed)
    raw_loop(cfg, bundle)  # warm-up (allocator, kernels)
    raw, ember_train, ember_wall = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            if i % 2:  # alternate which goes first, so neither always runs on a warmer cache
                raw.append(raw_loop(cfg, bundle))
            t, w = ember_fit(cfg, bundle, Path(tmp), i)
            ember_train.append(t)
            ember_wall.append(w)
            if not i % 2:
                raw.append(raw_loop(cfg, bundle))
    # The minimum over rounds is the figure least disturbed by other work on the machine
    # (as timeit reports); the medians are printed beside it.
    raw_s = min(raw)
    print(json.dumps({
        "ember_s": round(min(ember_train), 4),
        "raw_s": round(raw_s, 4),
        "ratio": round(min(ember_train) / raw_s, 4),
        "ratio_median": round(statistics.median(ember_train) / statistics.median(raw), 4),
        "ember_wall_s": round(min(ember_wall), 4),
        "ratio_with_checkpoints": round(min(ember_wall) / raw_s, 4),
        "rounds": args.rounds, "epochs": args.epochs, "steps": args.epochs * BatchPlan(
            len(bundle.train), cfg.data.batch_size).steps_per_epoch(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
