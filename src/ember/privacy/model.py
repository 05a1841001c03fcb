"""Making a model DP-trainable, and rebuilding it the same way when the run is loaded.

Opacus computes per-sample gradients only for layers that never mix samples: BatchNorm
becomes GroupNorm, LSTM/GRU their DP versions, multi-head attention Opacus's own
(`ModuleValidator.fix`). The changes are recorded in `train.privacy.fixed`; the run's model
is rebuilt by building the config's model and applying the same fix (`private_model`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ember.config import ExperimentConfig, from_dict
from ember.errors import ConfigError

__all__ = ["fix_model", "private_model", "record_fixes"]


def fix_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Opacus-compatible layers (`ModuleValidator.fix`) with in-place activations turned off.

    Returns the fixed model and one line per change (what `train.privacy.fixed` records).
    Deterministic: applying it to the same architecture always makes the same changes, which
    is how a private run's model is rebuilt from its config.
    """
    from opacus.validators import ModuleValidator

    before = {name: type(m).__name__ for name, m in model.named_modules()}
    fixed = ModuleValidator.fix(model)
    changes = [f"{name}: {before[name]} -> {type(m).__name__}" for name, m in fixed.named_modules()
               if name in before and before[name] != type(m).__name__]
    for name, m in fixed.named_modules():
        # Opacus #828: a backward hook on a module whose output is then modified in place fails.
        if getattr(m, "inplace", False) is True:
            m.inplace = False
            changes.append(f"{name or 'model'}: {type(m).__name__}(inplace=True) -> {type(m).__name__}(inplace=False)")
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ConfigError(f"train.privacy: the model has layers DP-SGD cannot train: {errors[0]}")
    return fixed, changes


def private_model(model: nn.Module, cfg: ExperimentConfig) -> nn.Module:
    """`model` as a private run trains it (fixed), or unchanged for a run without `train.privacy`."""
    if cfg.train.privacy is None:
        return model
    return fix_model(model)[0]


def record_fixes(cfg: ExperimentConfig, model: nn.Module | None, info: Any) -> ExperimentConfig:
    """`cfg` with `train.privacy.fixed` listing what `fix_model` changes in its model.

    Builds a throwaway copy of the config's model when `model` (an object) is not given; the
    global RNG is left as it was, so the run's initial weights do not depend on this.
    """
    import torch

    from ember import models

    if cfg.train.privacy is None:
        return cfg
    rng = torch.get_rng_state()
    try:
        probe = model if model is not None else models.build(cfg.model, info)
        _, changes = fix_model(probe)
    finally:
        torch.set_rng_state(rng)
    raw = cfg.model_dump(mode="json")
    raw["train"]["privacy"]["fixed"] = changes
    return from_dict(raw)
