"""`fit`: the training loop, a short ordered sequence you can read top to bottom.

Per optimizer step (`_train_step`): set the LR from the schedule, gather this rank's
micro-batches of the step's global batch, forward/backward each (loss summed and divided by
the global batch's item count), check the loss is finite, clip, step. After each epoch
(`_end_of_epoch`): validate, track the best model, checkpoint. Callbacks fire at fixed
points (see `ember.training.callbacks`).

Under DDP or FSDP every rank runs this same loop on its slice; gradients are exchanged on
the last micro-batch only, and the loss (summed over ranks) decides the finite check on
every rank alike, so the ranks never disagree about skipping or stopping. Rank 0 alone
writes metrics and the progress bar; checkpoints are written together.

With `train.privacy`, `ember.privacy.engine.PrivateTraining` (`loop.privacy`) takes over each
step (DP-SGD) and adds its state to checkpoints and ε to validation points; every line that
calls it is marked `[privacy]`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ember.config import ExperimentConfig
from ember.data.bundle import DataBundle
from ember.data.loader import StepLoader
from ember.errors import ConfigError, NonFiniteLossError
from ember.runs import Run
from ember.tasks import Task
from ember.training.batches import BatchPlan
from ember.training.callbacks import Callback, CallbackList
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
    gradient_sync,
)
from ember.training.loop_state import LoopContext, LoopState, LossFn
from ember.training.optim import build_optimizer
from ember.training.progress import Reporter
from ember.training.schedule import lr_at
from ember.training.train_state import load_full_model_state
from ember.training.validation import sample, validate
from ember.transfer.freeze import unfreeze_at
from ember.weights import load_tensors

__all__ = ["fit", "LoopState"]



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
    loss_fn: LossFn | None = None,
    env: DistEnv | None = None,
    strategy: str = "single",
    callbacks: Iterable[Callback] = (),
) -> LoopState:
    """Train `model` on `data.train`, validating on `data.val`; returns the final loop state.

    `on_validate(model, state)` runs after each validation pass (in eval mode); a dict it
    returns is logged to metrics.jsonl (language models log generated samples this way). It
    must not draw from the global RNG, or resume would no longer be exact.

    `loss_fn(out, x, y, count)` replaces `task.loss(out, y, count)` (distillation passes one
    that also asks a teacher about `x`); like the task's, it must sum over the micro-batch
    and divide by `count`, the step's item count.

    `model` is what `distributed.parallelize` returned for `strategy` (the model itself, a
    DDP wrapper, or an FSDP-sharded model); `env` says which rank this is. `callbacks` see a
    read-only `FitState` at each hook.
    """
    loop = _setup(model, data, task, cfg, run, device, reporter, loss_fn, env or DistEnv(), strategy, callbacks)
    state = _start_or_resume(loop, resume)
    tc = cfg.train
    steps_per_epoch = loop.plan.steps_per_epoch()
    stop = loop.callbacks.fire("on_fit_start", lambda: loop.fit_state(state))
    loop.reporter.start(loop.total_steps, state.step, cfg.recipe)
    model.train()
    try:
        while state.epoch < tc.epochs and state.step < loop.total_steps and not state.stopped_early and not stop:
            order = loop.plan.order(state.epoch)
            unfreeze_at(model, state.epoch)  # train.unfreeze_at_epoch: frozen parameters join from here
            # This rank's micro-batches of each remaining step, built here or by workers.
            feed = loop.loader.steps(order, state.epoch, state.pos,
                                     min(steps_per_epoch, state.pos + loop.total_steps - state.step))
            t_epoch = time.perf_counter()
            while state.pos < steps_per_epoch and state.step < loop.total_steps and not stop:
                # [privacy] DP-SGD draws its own (Poisson) batches: the feed's are not built
                _train_step(loop, state, order, next(feed) if loop.privacy is None else [])
                _log_point(loop, state, t_epoch)
                stop = loop.callbacks.fire("on_step_end", lambda: loop.fit_state(state))
                if tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    state.train_time_s += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    stop = _checkpoint(loop, state) or stop
            feed.close()  # stopped mid-epoch: the workers go now
            state.train_time_s += time.perf_counter() - t_epoch
            stop = _end_of_epoch(loop, state, steps_per_epoch, on_validate, stopping=stop) or stop
    finally:
        loop.reporter.close()
    if stop:
        state.stopped_early = True
        loop.reporter.message(f"stopped by callback {loop.callbacks.stop_reason}")
    es = tc.early_stopping
    if es is not None and es.restore_best and loop.best_path.exists():
        load_full_model_state(model, load_tensors(loop.best_path))
    if loop.privacy is not None:  # [privacy] privacy/budget.json + report section; Opacus's hooks off
        loop.privacy.finish(loop.run, loop.env.is_main)
    loop.callbacks.fire("on_fit_end", lambda: loop.fit_state(state))
    return state


def _setup(model: nn.Module, data: DataBundle, task: Task, cfg: ExperimentConfig, run: Run, device: torch.device,
           reporter: Reporter | None, loss_fn: LossFn | None, env: DistEnv, strategy: str,
           callbacks: Iterable[Callback]) -> LoopContext:
    """Check the plan against the data and build the optimizer, scaler and compiled forward."""
    tc = cfg.train
    plan = BatchPlan(len(data.train), cfg.data.batch_size, tc.grad_accum, shuffle=cfg.data.shuffle,
                     drop_last=cfg.data.drop_last, seed=tc.seed, world_size=env.world_size, rank=env.rank)
    if plan.steps_per_epoch() == 0:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} x grad_accum {tc.grad_accum} exceeds "
                          f"the {len(data.train)} training samples with drop_last; lower it")
    total_steps = tc.epochs * plan.steps_per_epoch()
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    es = tc.early_stopping
    if es is not None and es.metric not in task.metric_names():
        raise ConfigError(f"train.early_stopping.metric: got '{es.metric}'; valid: "
                          f"{', '.join(sorted(task.metric_names()))}")
    amp = contextlib.nullcontext if tc.precision == "fp32" else (lambda: autocast(tc.precision, device))
    loop = LoopContext(
        model=model, data=data, task=task, cfg=cfg, run=run, device=device, env=env,
        reporter=reporter or Reporter(enabled=False), callbacks=CallbackList(callbacks), plan=plan,
        loader=StepLoader(data.train, plan, cfg.data.workers, cfg.data.prefetch, pin_memory=device.type == "cuda"),
        total_steps=total_steps, optimizer=build_optimizer(model, cfg.optim),
        scaler=torch.amp.GradScaler(device.type) if tc.precision == "fp16" else None,
        forward=torch.compile(model) if tc.compile else model, loss_fn=loss_fn, sharded=strategy == "fsdp",
        best_path=run.checkpoints / "best.safetensors", amp=amp, t_log=time.perf_counter(),
    )
    if tc.privacy is not None:  # [privacy] DP-SGD wraps the model and optimizer (Opacus)
        from ember.privacy.engine import PrivateTraining

        loop.privacy = PrivateTraining.attach(loop)
    return loop


def _start_or_resume(loop: LoopContext, resume: bool) -> LoopState:
    """A fresh state, or the one in the latest good checkpoint (weights and optimizer restored)."""
    state = LoopState()
    if resume and not has_checkpoint(loop.run.checkpoints):
        # Killed before its first checkpoint completed: start over; the result is the same.
        if loop.env.is_main:
            loop.run.truncate_metrics(0)
        loop.reporter.message("no complete checkpoint yet; restarting this run from step 0")
    elif resume:
        ckpt = load_checkpoint(loop.run.checkpoints)
        # The config's strategy, not this job's: an FSDP run may resume in one process.
        restore_checkpoint(ckpt, loop.model, loop.optimizer, loop.env, sharded=loop.cfg.train.strategy == "fsdp")
        state = LoopState(**ckpt.state["loop"])
        if loop.privacy is not None:  # [privacy] the accountant's history
            loop.privacy.load_state_dict(ckpt.state.get("privacy"))
        if loop.scaler is not None and "scaler" in ckpt.state:  # fp16: the loss scale it had reached
            loop.scaler.load_state_dict(ckpt.state["scaler"])
        if loop.env.is_main:
            loop.run.truncate_metrics(state.step)
        saved_world = ckpt.state.get("world_size", 1)
        loop.reporter.message(f"resumed from {ckpt.path.name} (step {state.step}, epoch {state.epoch}"
                              + (f", saved by {saved_world} processes)" if saved_world != loop.env.world_size
                                 else ")"))
    barrier(loop.env)  # no rank starts before every rank has read the checkpoint
    return state


def _train_step(loop: LoopContext, state: LoopState, order: torch.Tensor,
                batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """One optimizer step over this rank's micro-batches of the step's global batch."""
    if loop.privacy is not None:  # [privacy] DP-SGD draws its own (Poisson) batch and owns the step
        return loop.privacy.step(loop, state, order)
    tc, env, model, optimizer, scaler = loop.cfg.train, loop.env, loop.model, loop.optimizer, loop.scaler
    loop.lr = lr_at(state.step, loop.total_steps, loop.cfg.optim.lr, loop.cfg.schedule)
    for group in optimizer.param_groups:
        group["lr"] = loop.lr * group.get("lr_scale", 1.0)  # optim.groups: own LR, same schedule
    world = env.world_size
    step_indices = loop.plan.global_indices(order, state.pos)
    # A rank left without samples (a short last step) still joins the gradient exchange, with
    # a zero-weighted pass over the step's first sample (the loader gave it that one).
    idle = world > 1 and not loop.plan.micro_batches(order, state.pos)
    # The loss is a mean over the global batch's items. Each rank counts them itself from the
    # step's indices (mixup blends targets but keeps one per sample): no collective.
    count = (sum(loop.task.count(y) for _, y in batches) if world == 1
             else loop.task.count(loop.data.train.y[step_indices]))
    step_loss = None
    for i, (x, y) in enumerate(batches):
        if loop.device.type != "cpu":  # batches are built on the CPU
            x, y = x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
        with gradient_sync(model, i == len(batches) - 1):
            with loop.amp():
                out = loop.forward(x)
            loss = loop.task.loss(out, y, count) if loop.loss_fn is None else loop.loss_fn(out, x, y, count)
            if world > 1:
                # DDP and FSDP average gradients over ranks; each rank's share of the global
                # mean is scaled back up by the world size.
                loss = loss * (0.0 if idle else float(world))
            (scaler.scale(loss) if scaler else loss).backward()
        step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
    if world > 1:
        step_loss = all_sum(step_loss.float(), env) / world
    # The one host sync per step DESIGN.md allows: the finite check must see this step's loss
    # before the optimizer applies it (checking every N steps could not skip the bad step
    # itself). The same float feeds the logged average, so logging costs no tensor op.
    loop.loss = step_loss.item()
    if not math.isfinite(loop.loss):
        if tc.nonfinite == "stop":
            raise NonFiniteLossError(f"non-finite loss ({loop.loss}) at step {state.step + 1} (epoch "
                                     f"{state.epoch + 1}); lower optim.lr, set train.grad_clip, or "
                                     "train.nonfinite=skip")
        optimizer.zero_grad(set_to_none=True)
        state.skipped_steps += 1
        loop.reporter.message(f"skipped step {state.step + 1}: non-finite loss")
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
        loop.loss_acc += loop.loss
        loop.steps_acc += 1
    n = len(step_indices)
    state.step += 1
    state.pos += 1
    state.samples += n
    loop.samples_acc += n


def _log_point(loop: LoopContext, state: LoopState, t_epoch: float) -> None:
    """At every `log_every` steps: a train point in metrics.jsonl and on the progress bar."""
    loop.logged = None
    if state.step % loop.cfg.train.log_every and state.step != loop.total_steps:
        loop.reporter.step(state.step, loop.total_steps, None, None, loop.lr)
        return
    now = time.perf_counter()
    loss = loop.loss_acc / max(loop.steps_acc, 1)
    sps = loop.samples_acc / max(now - loop.t_log, 1e-9)
    # `epoch`: the 1-based epoch this step belongs to, as validation points record it.
    loop.logged = {"split": "train", "step": state.step, "epoch": state.epoch + 1, "loss": loss, "lr": loop.lr,
                   "samples_per_s": sps, "time_s": state.train_time_s + now - t_epoch}
    if loop.env.is_main:
        loop.run.append_metrics(loop.logged)
    loop.loss_acc, loop.steps_acc, loop.samples_acc, loop.t_log = 0.0, 0, 0, now
    loop.reporter.step(state.step, loop.total_steps, loss, sps, loop.lr)


def _checkpoint(loop: LoopContext, state: LoopState) -> bool:
    """Write a checkpoint for this step (once); True when a callback asked to stop."""
    if loop.saved_at == state.step:
        return False
    loop.saved_at = state.step
    loop.saved_t = time.monotonic()
    extra = {"scaler": loop.scaler.state_dict()} if loop.scaler is not None else {}
    if loop.privacy is not None:  # [privacy]
        extra["privacy"] = loop.privacy.state_dict()
    path = save_checkpoint(loop.run.checkpoints, state.step, loop.model, loop.optimizer,
                           {"loop": asdict(state), **extra}, keep=loop.cfg.train.keep_checkpoints, env=loop.env,
                           sharded=loop.sharded)
    return loop.callbacks.fire("on_checkpoint", lambda: loop.fit_state(state, path))


def _end_of_epoch(loop: LoopContext, state: LoopState, steps_per_epoch: int,
                  on_validate: Callable[[nn.Module, LoopState], dict[str, Any] | None] | None,
                  stopping: bool) -> bool:
    """Close the epoch: validate when due (or at the end), then checkpoint. True: stop asked."""
    step_epoch = state.epoch + 1  # the 1-based epoch the last step belongs to
    finished_epoch = state.pos >= steps_per_epoch
    if finished_epoch:
        state.epoch += 1
        state.pos = 0
    stop = False
    last = state.step >= loop.total_steps or stopping
    if (finished_epoch and state.epoch % loop.cfg.train.eval_every == 0) or last:
        stop = validate(loop, state, step_epoch)
        if on_validate is not None:
            sample(loop, state, on_validate, step_epoch)
    tc = loop.cfg.train
    young = time.monotonic() - loop.saved_t < tc.checkpoint_min_interval_s
    # Epochs of milliseconds (xor-mlp's 300) would spend most of the run writing checkpoints.
    # Ranks must agree on every (collective) save, and clocks differ: the floor is for one process.
    if not last and not tc.checkpoint_every and young and not loop.env.distributed:
        return stop
    return _checkpoint(loop, state) or stop
