"""`fit`: the training loop, a short ordered sequence you can read top to bottom.

Per optimizer step: set the LR from the schedule, gather this step's micro-batches,
forward/backward each (loss summed and divided by the step's item count), check the loss
is finite, clip, step. Logging reads device-side accumulators only every `log_every`
steps; checkpoints are written every `checkpoint_every` steps and at each epoch's end.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ember.config import ExperimentConfig
from ember.data.bundle import DataBundle
from ember.errors import ConfigError, NonFiniteLossError
from ember.runs import Run
from ember.tasks import Task
from ember.training.batches import BatchPlan
from ember.training.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from ember.training.device import autocast
from ember.training.evaluation import evaluate_split
from ember.training.optim import build_optimizer
from ember.training.progress import Reporter
from ember.training.schedule import lr_at
from ember.weights import load_weights, save_weights

__all__ = ["fit", "LoopState"]


@dataclass
class LoopState:
    """Everything besides tensors that resume needs; saved as JSON in each checkpoint."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # optimizer steps done in the current epoch
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    skipped_steps: int = 0
    samples: int = 0
    train_time_s: float = 0.0
    last_val: dict[str, Any] = field(default_factory=dict)


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def fit(
    model: nn.Module,
    data: DataBundle,
    task: Task,
    cfg: ExperimentConfig,
    run: Run,
    device: torch.device,
    resume: bool = False,
    reporter: Reporter | None = None,
    on_validate: Callable[[nn.Module, LoopState], dict[str, Any] | None] | None = None,
) -> LoopState:
    """Train `model` on `data.train`, validating on `data.val`; returns the final loop state.

    `on_validate(model, state)` runs after each validation pass (in eval mode); a dict it
    returns is logged to metrics.jsonl (language models log generated samples this way). It
    must not draw from the global RNG, or resume would no longer be exact.
    """
    tc = cfg.train
    reporter = reporter or Reporter(enabled=False)
    plan = BatchPlan(len(data.train), cfg.data.batch_size, tc.grad_accum, shuffle=cfg.data.shuffle,
                     drop_last=cfg.data.drop_last, seed=tc.seed)
    steps_per_epoch = plan.steps_per_epoch()
    if steps_per_epoch == 0:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} x grad_accum {tc.grad_accum} exceeds "
                          f"the {len(data.train)} training samples with drop_last; lower it")
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    metric_names = task.metric_names()
    es = tc.early_stopping
    if es is not None and es.metric not in metric_names:
        raise ConfigError(f"train.early_stopping.metric: got '{es.metric}'; valid: {', '.join(sorted(metric_names))}")

    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type) if tc.precision == "fp16" else None
    forward = torch.compile(model) if tc.compile else model
    state = LoopState()
    best_path = run.checkpoints / "best.safetensors"

    if resume and not has_checkpoint(run.checkpoints):
        # Killed before its first checkpoint completed: start over; the result is the same.
        run.truncate_metrics(0)
        reporter.message("no complete checkpoint yet; restarting this run from step 0")
    elif resume:
        ckpt = load_checkpoint(run.checkpoints)
        model.load_state_dict(ckpt.model, strict=False)
        optimizer.load_state_dict(ckpt.optimizer)
        loop = ckpt.state["loop"]
        state = LoopState(**loop)
        set_rng_state(ckpt.state["rng"])
        run.truncate_metrics(state.step)
        reporter.message(f"resumed from {ckpt.path.name} (step {state.step}, epoch {state.epoch})")

    saved_at = -1

    def checkpoint() -> None:
        nonlocal saved_at
        if saved_at == state.step:
            return
        saved_at = state.step
        save_checkpoint(run.checkpoints, state.step, model, optimizer, {"loop": asdict(state)},
                        keep=tc.keep_checkpoints)

    amp = (lambda: contextlib.nullcontext()) if tc.precision == "fp32" else (lambda: autocast(tc.precision, device))
    # The finite check reads each step's loss anyway (one scalar), so the running sum for
    # logging is a plain float and costs no extra tensor ops.
    loss_acc = 0.0
    move = device.type != "cpu"  # batches are built on the CPU
    steps_acc, samples_acc, t_log = 0, 0, time.perf_counter()
    reporter.start(total_steps, state.step, cfg.recipe)
    model.train()
    try:
        while state.epoch < tc.epochs and state.step < total_steps and not state.stopped_early:
            epoch = state.epoch
            order = plan.order(epoch)
            t_epoch = time.perf_counter()
            while state.pos < steps_per_epoch and state.step < total_steps:
                lr = lr_at(state.step, total_steps, cfg.optim.lr, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batches = [data.train.batch(idx, epoch, train=True) for idx in plan.micro_batches(order, state.pos)]
                count = task.count(batches[0][1]) if len(batches) == 1 else sum(task.count(y) for _, y in batches)
                step_loss = None
                for x, y in batches:
                    if move:
                        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with amp():
                        out = forward(x)
                    loss = task.loss(out, y, count)
                    (scaler.scale(loss) if scaler else loss).backward()
                    step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                loss_value = step_loss.item()
                if not math.isfinite(loss_value):
                    if tc.nonfinite == "stop":
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss_value}) at step {state.step + 1} (epoch {epoch + 1}); "
                            "lower optim.lr, set train.grad_clip, or train.nonfinite=skip"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    state.skipped_steps += 1
                    reporter.message(f"skipped step {state.step + 1}: non-finite loss")
                else:
                    if scaler:
                        scaler.unscale_(optimizer)
                    if tc.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss_acc += loss_value
                    steps_acc += 1
                state.step += 1
                state.pos += 1
                n = len(batches[0][1]) if len(batches) == 1 else sum(len(y) for _, y in batches)
                state.samples += n
                samples_acc += n
                logged = None
                sps = None
                if state.step % tc.log_every == 0 or state.step == total_steps:
                    now = time.perf_counter()
                    logged = loss_acc / max(steps_acc, 1)
                    sps = samples_acc / max(now - t_log, 1e-9)
                    run.append_metrics({"split": "train", "step": state.step, "epoch": epoch + 1,
                                        "loss": logged, "lr": lr, "samples_per_s": sps,
                                        "time_s": state.train_time_s + now - t_epoch})
                    loss_acc = 0.0
                    steps_acc, samples_acc, t_log = 0, 0, now
                reporter.step(state.step, total_steps, logged, sps, lr)
                if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    state.train_time_s += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    checkpoint()
            state.train_time_s += time.perf_counter() - t_epoch
            finished_epoch = state.pos >= steps_per_epoch
            last = state.step >= total_steps
            if finished_epoch:
                state.epoch += 1
                state.pos = 0
            if (finished_epoch and state.epoch % tc.eval_every == 0) or last:
                _validate(model, data, task, cfg, run, device, state, reporter, best_path)
                if on_validate is not None:
                    was_training = model.training
                    model.eval()
                    extra = on_validate(model, state)
                    model.train(was_training)
                    if extra:
                        run.append_metrics({"step": state.step, "epoch": state.epoch, **extra})
            checkpoint()
    finally:
        reporter.close()
    if es is not None and es.restore_best and best_path.exists():
        load_weights(model, best_path)
    return state


def _validate(model: nn.Module, data: DataBundle, task: Task, cfg: ExperimentConfig, run: Run,
              device: torch.device, state: LoopState, reporter: Reporter, best_path: Any) -> None:
    """Evaluate on the validation split; track the best model and early stopping."""
    if len(data.val) == 0:
        return
    val = evaluate_split(model, data.val, task, device, cfg.data.eval_batch_size, cfg.train.precision)
    scalars = {k: v for k, v in val.items() if isinstance(v, float)}
    state.last_val = scalars
    run.append_metrics({"split": "val", "step": state.step, "epoch": state.epoch, **scalars})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items())
    reporter.message(f"epoch {state.epoch} step {state.step}: val {shown}")
    es = cfg.train.early_stopping
    metric = es.metric if es else task.primary_metric
    mode = es.mode if es else task.primary_mode
    value = scalars.get(metric, math.nan)
    if _improved(value, state.best, mode, es.min_delta if es else 0.0):
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        save_weights(model, best_path)
    else:
        state.bad_evals += 1
        if es is not None and state.bad_evals >= es.patience:
            state.stopped_early = True
            reporter.message(f"early stopping: val {metric} has not improved for {es.patience} evaluations")
