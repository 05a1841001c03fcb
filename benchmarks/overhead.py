"""Ember's `fit` against a hand-written PyTorch loop on the digits CNN, in one process.

Both train the digits-cnn recipe's model from the same initial weights (same seed) on the
same data order (`BatchPlan`) and augmentation (`bundle.train.batch(idx, epoch, train=True)`),
with the same optimizer (`build_optimizer`), LR schedule (`lr_at`) and batch size. Start-up
and data building are outside every timed region, and the two alternate round by round
(which one goes first alternates too) so that drift on the machine hits both alike.

Two ratios, because `fit` does more than train:
  ratio             wall time of the whole `fit()` call / the raw loop. `fit` also runs a
                    validation pass and writes a checkpoint at the end of every epoch (the
                    recipe's defaults); the raw loop does neither.
  ratio_train_only  `LoopState.train_time_s` (optimizer steps only, including Ember's
                    logging and per-step NaN check; validation and checkpoint writes
                    excluded) / the raw loop: the comparable-work figure.
Figures are medians over rounds; `*_min` use the fastest round of each (least disturbed by
other work on the machine). `same_final_weights` checks that both loops did the same work.

    python benchmarks/overhead.py --epochs 10 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ember.config import ExperimentConfig, load
from ember.data import DataBundle
from ember.data import build as build_data
from ember.models import build as build_model
from ember.runs import new_run_dir
from ember.tasks import for_info
from ember.training.batches import BatchPlan
from ember.training.loop import fit
from ember.training.optim import build_optimizer
from ember.training.schedule import lr_at

THREADS = 2


def raw_loop(cfg: ExperimentConfig, bundle: DataBundle) -> tuple[float, nn.Module]:
    """The hand-written baseline, the loop a PyTorch user would write: (seconds, model)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    opt = build_optimizer(model, cfg.optim)
    plan = BatchPlan(len(bundle.train), cfg.data.batch_size, shuffle=cfg.data.shuffle,
                     drop_last=cfg.data.drop_last, seed=cfg.train.seed)
    steps = plan.steps_per_epoch()
    total = cfg.train.epochs * steps
    model.train()
    start = time.perf_counter()
    step = 0
    for epoch in range(cfg.train.epochs):
        order = plan.order(epoch)
        for pos in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg.optim.lr, cfg.schedule)
            x, y = bundle.train.batch(order[pos * cfg.data.batch_size:(pos + 1) * cfg.data.batch_size],
                                      epoch, train=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
    return time.perf_counter() - start, model


def ember_fit(cfg: ExperimentConfig, bundle: DataBundle, root: Path, i: int) -> tuple[float, float, nn.Module]:
    """Ember's loop into a fresh run directory: (wall seconds of fit, train_time_s, model)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    run = new_run_dir(root, "bench", root / f"run{i}")
    task = for_info(bundle.info)
    start = time.perf_counter()
    state = fit(model, bundle, task, cfg, run, torch.device("cpu"))
    return time.perf_counter() - start, state.train_time_s, model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def measure(epochs: int, rounds: int) -> dict[str, Any]:
    """Run the interleaved rounds and return the figures as a JSON-able dict."""
    torch.set_num_threads(THREADS)
    cfg = load("digits-cnn", [f"train.epochs={epochs}", "train.device=cpu", "log.report=false"])
    bundle = build_data(cfg.data, cfg.train.seed)
    warm = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    raw: list[float] = []
    wall: list[float] = []
    train: list[float] = []
    identical = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw_loop(warm, bundle)  # warm-up, untimed: allocator, kernels, lazy imports
        ember_fit(warm, bundle, root, -1)
        for i in range(rounds):
            if i % 2:  # alternate which goes first, so neither always runs on a warmer cache
                raw_s, raw_model = raw_loop(cfg, bundle)
            wall_s, train_s, ember_model = ember_fit(cfg, bundle, root, i)
            if not i % 2:
                raw_s, raw_model = raw_loop(cfg, bundle)
            raw.append(raw_s)
            wall.append(wall_s)
            train.append(train_s)
            identical = identical and same_weights(raw_model, ember_model)
    med = statistics.median
    return {
        "ember_s": round(med(wall), 4),
        "raw_s": round(med(raw), 4),
        "ratio": round(med(wall) / med(raw), 4),
        "ember_train_only_s": round(med(train), 4),
        "ratio_train_only": round(med(train) / med(raw), 4),
        "ratio_min": round(min(wall) / min(raw), 4),
        "ratio_train_only_min": round(min(train) / min(raw), 4),
        "same_final_weights": identical,
        "rounds": rounds,
        "epochs": epochs,
        "steps": epochs * BatchPlan(len(bundle.train), cfg.data.batch_size,
                                    drop_last=cfg.data.drop_last).steps_per_epoch(),
        "ember_extras": "val pass + checkpoint each epoch (in ratio, not in ratio_train_only)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per training run (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each loop, interleaved (default 5)")
    args = parser.parse_args()
    if args.epochs < 1 or args.rounds < 1:
        parser.error("--epochs and --rounds must be >= 1")
    print(json.dumps(measure(args.epochs, args.rounds)))


if __name__ == "__main__":
    main()
