"""Config sections owned by training: optimizer, LR schedule and the loop itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ember.privacy.config import PrivacyConfig
from ember.section import Section

__all__ = ["OptimConfig", "ParamGroupConfig", "ScheduleConfig", "EarlyStoppingConfig", "TrainConfig"]


class ParamGroupConfig(Section):
    """Parameters whose names match `params` (fnmatch) train with their own LR/weight decay."""

    params: str = Field(min_length=1, description="parameter-name pattern, e.g. 'encoder.*'")
    lr: float | None = Field(None, gt=0, description="this group's peak LR (the schedule scales it)")
    weight_decay: float | None = Field(None, ge=0)


class OptimConfig(Section):
    """Optimizer. `momentum`/`nesterov` apply to SGD, `betas`/`eps` to Adam and AdamW."""

    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    groups: list[ParamGroupConfig] = Field(default_factory=list, description="per-pattern LR / weight "
                                           "decay; the first matching group wins, the rest use lr")

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs name: sgd and momentum > 0")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1), got {list(self.betas)}")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule, a pure function of the step (see `ember.training.schedule`)."""

    name: Literal["constant", "step", "cosine", "onecycle"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(1000, ge=1, description="steps between decays (name: step)")
    gamma: float = Field(0.1, gt=0, le=1, description="decay factor (name: step)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="floor as a fraction of lr")
    pct_start: float = Field(0.3, gt=0, lt=1, description="rising fraction (name: onecycle)")
    div_factor: float = Field(25.0, ge=1, description="lr / initial lr (name: onecycle)")


class EarlyStoppingConfig(Section):
    """Stop when a validation metric has not improved for `patience` evaluations."""

    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = True


class TrainConfig(Section):
    """The training loop."""

    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="0..2^32-1 (NumPy's seed range)")
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0: each epoch")
    checkpoint_min_interval_s: float = Field(
        2.0, ge=0, le=86_400, allow_inf_nan=False,
        description="with checkpoint_every 0, skip an epoch's checkpoint when the last one is younger than "
                    "this (tiny epochs); the final checkpoint is always written; 0: every epoch")
    keep_checkpoints: int = Field(2, ge=1)
    grad_accum: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    eval_every: int = Field(1, ge=1, description="epochs between validation passes")
    early_stopping: EarlyStoppingConfig | None = None
    nonfinite: Literal["stop", "skip"] = "stop"
    log_every: int = Field(10, ge=1, description="optimizer steps between logged points")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads (torch.set_num_threads)")
    strategy: Literal["auto", "single", "ddp", "fsdp"] = Field(
        "auto", description="auto: single for one process, ddp for more (launch with --nproc or torchrun)")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in backward")
    dist_timeout_s: float = Field(600.0, gt=0, description="longest wait on a collective before the job fails")
    privacy: PrivacyConfig | None = Field(None, description="DP-SGD (see docs/privacy.md); null: not private")
    freeze: list[str] = Field(default_factory=list, description="parameter-name patterns (fnmatch) "
                              "kept fixed, e.g. 'features.*'")
    unfreeze_at_epoch: int | None = Field(None, ge=1, description="epoch (counted from 0) from which "
                                          "the frozen parameters train too")

    @model_validator(mode="after")
    def _check_freeze(self) -> TrainConfig:
        if self.unfreeze_at_epoch is not None and not self.freeze:
            raise ValueError("unfreeze_at_epoch needs train.freeze patterns to unfreeze")
        return self
