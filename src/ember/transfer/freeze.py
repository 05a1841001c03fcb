"""Freezing by name pattern, unfreezing at an epoch, and optimizer groups with their own LR.

Parameters that will be unfrozen later are tagged (`ember_unfreeze_at`) and put into the
optimizer from the start: while frozen they get no gradient, which every torch optimizer
skips, so the optimizer (and its checkpointed state) has the same groups throughout and
resume stays exact.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ember.training.config import OptimConfig
from ember.transfer.names import check_patterns, clean_name, matches

__all__ = ["apply_freeze", "unfreeze_at", "param_groups", "parameter_counts"]

_TAG = "ember_unfreeze_at"


def apply_freeze(model: nn.Module, patterns: list[str], unfreeze_epoch: int | None = None) -> int:
    """Set `requires_grad=False` on parameters whose names match any pattern.

    Returns:
        The number of parameters frozen (elements).

    Raises:
        ConfigError: a pattern that matches no parameter.
    """
    named = [(clean_name(n), p) for n, p in model.named_parameters()]
    check_patterns(patterns, [n for n, _ in named], "train.freeze")
    frozen = 0
    for name, p in named:
        if any(matches(name, pat) for pat in patterns):
            p.requires_grad_(False)
            if unfreeze_epoch is not None:
                setattr(p, _TAG, unfreeze_epoch)
            frozen += p.numel()
    return frozen


def unfreeze_at(model: nn.Module, epoch: int) -> bool:
    """At the start of `epoch` (from 0), let tagged parameters train; True if any changed."""
    changed = False
    for p in model.parameters():
        at = getattr(p, _TAG, None)
        if at is not None and epoch >= at and not p.requires_grad:
            p.requires_grad_(True)
            changed = True
    return changed


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Optimizer groups: `cfg.groups` patterns first (own LR, weight decay), then the rest.

    Within each, parameters with fewer than 2 dimensions (biases, norm scales) get no weight
    decay. Each group carries `lr_scale` (its LR over `cfg.lr`): the schedule's LR is
    multiplied by it at every step.

    Raises:
        ConfigError: a group pattern that matches no trainable parameter.
    """
    named = [(clean_name(n), p) for n, p in model.named_parameters()
             if p.requires_grad or getattr(p, _TAG, None) is not None]
    check_patterns([g.params for g in cfg.groups], [n for n, _ in named], "optim.groups")
    buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, p in named:
        index = next((i for i, g in enumerate(cfg.groups) if matches(name, g.params)), -1)
        buckets.setdefault((index, p.ndim >= 2), []).append(p)
    groups = []
    for (index, decays), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        spec = cfg.groups[index] if index >= 0 else None
        lr = spec.lr if spec is not None and spec.lr is not None else cfg.lr
        wd = spec.weight_decay if spec is not None and spec.weight_decay is not None else cfg.weight_decay
        groups.append({"params": params, "lr": lr, "lr_scale": lr / cfg.lr,
                       "weight_decay": wd if decays else 0.0})
    return groups


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total, trainable and frozen parameter elements (shared tensors counted once)."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"params": total, "trainable_params": trainable, "frozen_params": total - trainable}
