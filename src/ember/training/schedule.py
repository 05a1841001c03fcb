"""Learning-rate schedules as pure functions: lr = f(step, total_steps, base_lr, cfg).

Pure functions keep resume exact: the schedule's whole state is the step number.
"""

from __future__ import annotations

import math

from ember.training.config import ScheduleConfig

__all__ = ["lr_at"]


def lr_at(step: int, total_steps: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    - constant: `base_lr` after linear warm-up.
    - step: multiplied by `gamma` every `step_size` steps after warm-up.
    - cosine: linear warm-up, then cosine decay to `min_lr_ratio * base_lr`.
    - onecycle: cosine rise from `base_lr / div_factor` over `pct_start` of training, then
      cosine fall to `min_lr_ratio * base_lr` (or to `base_lr / div_factor / 1e4` if 0).
    """
    total = max(total_steps, 1)
    floor = cfg.min_lr_ratio * base_lr
    if cfg.name == "onecycle":
        start = base_lr / cfg.div_factor
        end = floor if cfg.min_lr_ratio > 0 else start / 1e4
        peak_step = max(int(cfg.pct_start * total), 1)
        if step < peak_step:
            return _cosine(start, base_lr, step / peak_step)
        return _cosine(base_lr, end, min((step - peak_step) / max(total - peak_step, 1), 1.0))
    if step < cfg.warmup_steps:
        return base_lr * (step + 1) / cfg.warmup_steps
    after = step - cfg.warmup_steps
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (after // cfg.step_size)
    progress = min(after / max(total - cfg.warmup_steps, 1), 1.0)
    return _cosine(base_lr, floor, progress)


def _cosine(start: float, end: float, progress: float) -> float:
    """From `start` (progress 0) to `end` (progress 1) along half a cosine."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
