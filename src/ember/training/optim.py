"""Optimizers from `OptimConfig`. Weight decay skips biases and norm parameters."""

from __future__ import annotations

import torch
from torch import nn

from ember.training.config import OptimConfig
from ember.transfer.freeze import param_groups

__all__ = ["build_optimizer"]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over the model's trainable parameters.

    Parameters with fewer than 2 dimensions (biases, norm scales) get no weight decay, the
    usual practice: decaying them only hurts. `cfg.groups` give parameters matching a name
    pattern their own LR and weight decay (see `ember.transfer.freeze.param_groups`).
    """
    groups = param_groups(model, cfg)  # optim.groups patterns, then the rest; lr_scale per group
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
