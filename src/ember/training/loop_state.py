"""What `fit` carries from step to step: the resumable `LoopState` and the fixed `LoopContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ember.config import ExperimentConfig
from ember.data.bundle import DataBundle
from ember.data.loader import StepLoader
from ember.runs import Run
from ember.tasks import Task
from ember.training.batches import BatchPlan
from ember.training.callbacks import CallbackList, FitState
from ember.training.distributed import DistEnv
from ember.training.progress import Reporter

__all__ = ["LoopState", "LoopContext", "LossFn"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


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


@dataclass
class LoopContext:
    """What stays fixed for the whole of `fit`, plus the running logging totals."""

    model: nn.Module
    data: DataBundle
    task: Task
    cfg: ExperimentConfig
    run: Run
    device: torch.device
    env: DistEnv
    reporter: Reporter
    callbacks: CallbackList
    plan: BatchPlan
    loader: StepLoader
    total_steps: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    forward: Callable[[torch.Tensor], torch.Tensor]
    loss_fn: LossFn | None
    sharded: bool
    best_path: Path
    amp: Callable[[], Any]
    lr: float = 0.0
    loss: float | None = None
    logged: dict[str, Any] | None = None
    loss_acc: float = 0.0  # a plain float: the finite check already read each step's loss
    steps_acc: int = 0
    samples_acc: int = 0
    t_log: float = 0.0
    saved_at: int = -1
    saved_t: float = float("-inf")  # time.monotonic() of the last checkpoint written
    privacy: Any = None  # [privacy] ember.privacy.engine.PrivateTraining when train.privacy is set

    def fit_state(self, state: LoopState, checkpoint: Path | None = None) -> FitState:
        return FitState(step=state.step, epoch=state.epoch, total_steps=self.total_steps, loss=self.loss,
                        lr=self.lr, run_dir=self.run.path, config=self.cfg,
                        val=MappingProxyType(dict(state.last_val)),
                        logged=MappingProxyType(self.logged) if self.logged else None, best=state.best,
                        best_step=state.best_step, checkpoint=checkpoint, rank=self.env.rank,
                        world_size=self.env.world_size)
