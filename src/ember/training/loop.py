"""`fit`: the training loop, a short ordered sequence you can read top to bottom.

Per optimizer step: set the LR from the schedule, gather this rank's micro-batches of the
step's global batch, forward/backward each (loss summed and divided by the global batch's
item count), check the loss is finite, clip, step. Checkpoints are written every
`checkpoint_every` steps and at each epoch's end.

Under DDP or FSDP every rank runs this same loop on its slice; gradients are exchanged on
the last micro-batch only, and the loss (summed over ranks) decides the finite check on
every rank alike, so the ranks never disagree about skipping or stopping. Rank 0 alone
writes metrics and the progress bar; checkpoints are written together.
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
    restore_checkpoint,
    save_checkpoint,
)
from ember.training.device import autocast
from ember.training.distributed import (
    DistEnv,
    all_sum,
    barrier,
    broadcast_object,
    gradient_sync,
    unwrap,
)
from ember.training.evaluation import evaluate_split
from ember.training.optim import build_optimizer
from ember.training.progress import Reporter
from ember.training.schedule import lr_at
from ember.training.train_state import load_full_model_state, save_model_weights
from ember.transfer.freeze import unfreeze_at
from ember.weights import load_tensors

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
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
    env: DistEnv | None = None,
    strategy: str = "single",
) -> LoopState:
    """Train `model` on `data.train`, validating on `data.val`; returns the final loop state.

    `on_validate(model, state)` runs after each validation pass (in eval mode); a dict it
    returns is logged to metrics.jsonl (language models log generated samples this way). It
    must not draw from the global RNG, or resume would no longer be exact.

    `loss_fn(out, x, y, count)` replaces `task.loss(out, y, count)` (distillation passes one
    that also asks a teacher about `x`); like the task's, it must sum over the micro-batch
    and divide by `count`, the step's item count.

    `model` is what `distributed.parallelize` returned for `strategy` (the model itself, a
    DDP wrapper, or an FSDP-sharded model); `env` says which rank this is.
    """
    tc = cfg.train
    env = env or DistEnv()
    sharded = strategy == "fsdp"
    reporter = reporter or Reporter(enabled=False)
    plan = BatchPlan(len(data.train), cfg.data.batch_size, tc.grad_accum, shuffle=cfg.data.shuffle,
                     drop_last=cfg.data.drop_last, seed=tc.seed, world_size=env.world_size, rank=env.rank)
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
        if env.is_main:
            run.truncate_metrics(0)
        reporter.message("no complete checkpoint yet; restarting this run from step 0")
    elif resume:
        ckpt = load_checkpoint(run.checkpoints)
        restore_checkpoint(ckpt, model, optimizer, env)
        state = LoopState(**ckpt.state["loop"])
        if env.is_main:
            run.truncate_metrics(state.step)
        saved_world = ckpt.state.get("world_size", 1)
        reporter.message(f"resumed from {ckpt.path.name} (step {state.step}, epoch {state.epoch}"
                         + (f", saved by {saved_world} processes)" if saved_world != env.world_size else ")"))
    barrier(env)  # no rank starts before every rank has read the checkpoint

    saved_at = -1

    def checkpoint() -> None:
        nonlocal saved_at
        if saved_at == state.step:
            return
        saved_at = state.step
        save_checkpoint(run.checkpoints, state.step, model, optimizer, {"loop": asdict(state)},
                        keep=tc.keep_checkpoints, env=env, sharded=sharded)

    amp = (lambda: contextlib.nullcontext()) if tc.precision == "fp32" else (lambda: autocast(tc.precision, device))
    # The finite check reads each step's loss anyway (one scalar), so the running sum for
    # logging is a plain float and costs no extra tensor ops.
    loss_acc = 0.0
    move = device.type != "cpu"  # batches are built on the CPU
    world = env.world_size
    append_metrics = run.append_metrics if env.is_main else (lambda _record: None)
    steps_acc, samples_acc, t_log = 0, 0, time.perf_counter()
    reporter.start(total_steps, state.step, cfg.recipe)
    model.train()
    try:
        while state.epoch < tc.epochs and state.step < total_steps and not state.stopped_early:
            epoch = state.epoch
            unfreeze_at(model, epoch)  # train.unfreeze_at_epoch: frozen parameters join from here
            order = plan.order(epoch)
            t_epoch = time.perf_counter()
            while state.pos < steps_per_epoch and state.step < total_steps:
                lr = lr_at(state.step, total_steps, cfg.optim.lr, cfg.schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # optim.groups: own LR, same schedule
                step_indices = plan.global_indices(order, state.pos)
                n = len(step_indices)
                indices = plan.micro_batches(order, state.pos)
                # A rank left without samples (a short last step) still joins the gradient
                # exchange, with a zero-weighted pass over the step's first sample.
                idle = not indices
                if idle:
                    indices = [step_indices[:1]]
                batches = [data.train.batch(idx, epoch, train=True) for idx in indices]
                # The loss is a mean over the global batch's items. Targets are never augmented,
                # so every rank counts them itself from the step's indices: no collective.
                count = (sum(task.count(y) for _, y in batches) if world == 1
                         else task.count(data.train.y[step_indices]))
                step_loss = None
                for i, (x, y) in enumerate(batches):
                    if move:
                        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with gradient_sync(model, i == len(batches) - 1):
                        with amp():
                            out = forward(x)
                        loss = task.loss(out, y, count) if loss_fn is None else loss_fn(out, x, y, count)
                        if world > 1:
                            # DDP and FSDP average gradients over ranks; each rank's share of
                            # the global mean is scaled back up by the world size.
                            loss = loss * (0.0 if idle else float(world))
                        (scaler.scale(loss) if scaler else loss).backward()
                    step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                if world > 1:
                    step_loss = all_sum(step_loss.float(), env) / world
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
                state.samples += n
                samples_acc += n
                logged = None
                sps = None
                if state.step % tc.log_every == 0 or state.step == total_steps:
                    now = time.perf_counter()
                    logged = loss_acc / max(steps_acc, 1)
                    sps = samples_acc / max(now - t_log, 1e-9)
                    append_metrics({"split": "train", "step": state.step, "epoch": epoch + 1,
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
                _validate(model, data, task, cfg, run, device, state, reporter, best_path, env)
                if on_validate is not None:
                    # Every rank runs it (a sharded model needs all of them for a forward pass).
                    # It may call methods other than forward (GPT's generate), which FSDP's
                    # hooks do not see: gather the root's parameters by hand around it.
                    was_training = model.training
                    model.eval()
                    if sharded:
                        model.unshard()
                    extra = on_validate(unwrap(model), state)
                    if sharded:
                        model.reshard()
                    model.train(was_training)
                    if extra:
                        append_metrics({"step": state.step, "epoch": state.epoch, **extra})
            checkpoint()
    finally:
        reporter.close()
    if es is not None and es.restore_best and best_path.exists():
        load_full_model_state(model, load_tensors(best_path))
    return state


def _validate(model: nn.Module, data: DataBundle, task: Task, cfg: ExperimentConfig, run: Run,
              device: torch.device, state: LoopState, reporter: Reporter, best_path: Any,
              env: DistEnv) -> None:
    """Evaluate on the validation split; track the best model and early stopping.

    Every rank evaluates the whole split (a sharded model needs them all for a forward
    pass, and the figures are then exactly those of a one-process run); rank 0's figures
    are broadcast so that every rank takes the same early-stopping decision.
    """
    if len(data.val) == 0:
        return
    val = evaluate_split(unwrap(model), data.val, task, device, cfg.data.eval_batch_size, cfg.train.precision)
    scalars = broadcast_object({k: v for k, v in val.items() if isinstance(v, float)}, env)
    state.last_val = scalars
    if env.is_main:
        run.append_metrics({"split": "val", "step": state.step, "epoch": state.epoch, **scalars})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items())
    reporter.message(f"epoch {state.epoch} step {state.step}: val {shown}")
    es = cfg.train.early_stopping
    metric = es.metric if es else task.primary_metric
    mode = es.mode if es else task.primary_mode
    value = scalars.get(metric, math.nan)
    if _improved(value, state.best, mode, es.min_delta if es else 0.0):
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        save_model_weights(model, best_path, env.is_main)  # collective under FSDP
        barrier(env)  # the file is complete before any rank may read it back
    else:
        state.bad_evals += 1
        if es is not None and state.bad_evals >= es.patience:
            state.stopped_early = True
            reporter.message(f"early stopping: val {metric} has not improved for {es.patience} evaluations")
