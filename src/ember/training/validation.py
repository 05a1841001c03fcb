"""The end-of-epoch evaluation `fit` runs: validation, best-model tracking, early stopping,
and the `on_validate` hook (language models write text samples with it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ember.training.distributed import barrier, broadcast_object, unwrap
from ember.training.evaluation import evaluate_split
from ember.training.loop_state import LoopContext, LoopState
from ember.training.train_state import save_model_weights

__all__ = ["validate", "sample"]


def sample(loop: LoopContext, state: LoopState, on_validate: Callable[[nn.Module, LoopState], dict[str, Any] | None],
           epoch: int) -> None:
    """Run `on_validate` in eval mode on every rank (a sharded model needs all of them).

    It may call methods other than forward (GPT's generate), which FSDP's hooks do not see:
    the root's parameters are gathered by hand around it.
    """
    model = loop.model
    was_training = model.training
    model.eval()
    if loop.sharded:
        model.unshard()
    extra = on_validate(unwrap(model), state)
    if loop.sharded:
        model.reshard()
    model.train(was_training)
    if extra and loop.env.is_main:
        loop.run.append_metrics({"step": state.step, "epoch": epoch, **extra})


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def validate(loop: LoopContext, state: LoopState, epoch: int) -> bool:
    """Evaluate on the validation split; track the best model and early stopping.

    `epoch` is the 1-based epoch the current step belongs to, as the train points record it.

    Every rank evaluates the whole split (a sharded model needs them all for a forward
    pass, and the figures are then exactly those of a one-process run); rank 0's figures
    are broadcast so that every rank takes the same early-stopping decision. Returns True
    when a callback asked to stop.
    """
    data, cfg, env = loop.data, loop.cfg, loop.env
    if len(data.val) == 0:
        return False
    val = evaluate_split(unwrap(loop.model), data.val, loop.task, loop.device, cfg.data.eval_batch_size,
                         cfg.train.precision)
    scalars = broadcast_object({k: v for k, v in val.items() if isinstance(v, float)}, env)
    state.last_val = scalars
    spent = loop.privacy.figures() if loop.privacy is not None else {}  # [privacy] ε spent so far
    if env.is_main:
        loop.run.append_metrics({"split": "val", "step": state.step, "epoch": epoch, **scalars, **spent})
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()) + (f", ε {spent['epsilon']:.3g}" if spent else "")
    loop.reporter.message(f"epoch {epoch} step {state.step}: val {shown}")
    es = cfg.train.early_stopping
    metric = es.metric if es else loop.task.primary_metric
    mode = es.mode if es else loop.task.primary_mode
    value = scalars.get(metric, math.nan)
    if _improved(value, state.best, mode, es.min_delta if es else 0.0):
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        save_model_weights(loop.model, loop.best_path, env.is_main)  # collective under FSDP
        barrier(env)  # the file is complete before any rank may read it back
    else:
        state.bad_evals += 1
        if es is not None and state.bad_evals >= es.patience:
            state.stopped_early = True
            loop.reporter.message(f"early stopping: val {metric} has not improved for {es.patience} evaluations")
    return loop.callbacks.fire("on_validation_end", lambda: loop.fit_state(state))
