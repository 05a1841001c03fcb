"""Fine-tuning inside a compression step: the ordinary `fit()` on the parent's data and recipe.

A step may train several times (iterative pruning: prune, fine-tune, prune again), all
into the same child run. `PhaseRun` keeps those phases apart: each writes its checkpoints
under `checkpoints/<phase>/` and its metrics rows tagged with the phase and with steps
counted on from the previous phase, so the child's curves read left to right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from ember.config import ExperimentConfig, from_dict
from ember.data.bundle import DataBundle
from ember.runs import Run
from ember.tasks import for_info
from ember.training.loop import LoopState, fit
from ember.training.progress import Reporter

__all__ = ["PhaseRun", "train_config", "finetune", "freeze_zeros", "FINETUNE_LR_SCALE", "STRUCTURED_LR_SCALE"]

# Fine-tuning starts from trained weights: a tenth of the recipe's learning rate (decayed
# by a cosine from there) repairs a sparse or fake-quantized model without undoing it.
# Structured pruning removes whole channels and the rest must re-learn their work: there
# the recipe's own rate recovers more (digits CNN, 50% of channels, 5 epochs: -1.5 points
# at 1x vs -3.3 at 0.1x).
FINETUNE_LR_SCALE = 0.1
STRUCTURED_LR_SCALE = 1.0


@dataclass(frozen=True)
class PhaseRun(Run):
    """A run directory seen by one training phase of a compression step."""

    phase: str = "finetune"
    offset: int = 0  # optimizer steps taken by earlier phases of this step

    @property
    def checkpoints(self) -> Any:
        return self.path / "checkpoints" / self.phase

    def append_metrics(self, row: dict[str, Any]) -> None:
        super().append_metrics({**row, "step": int(row.get("step", 0)) + self.offset, "phase": self.phase})


def train_config(cfg: ExperimentConfig, epochs: int, lr: float | None, max_steps: int | None,
                 fine_tune: bool, device: str | None = None, lr_scale: float = FINETUNE_LR_SCALE) -> ExperimentConfig:
    """The parent's config with the training a step does: `epochs`, `lr`, `max_steps`.

    `fine_tune` (pruning, QAT, finetune steps) also sets a cosine schedule without warm-up
    from `lr` (default: the recipe's times `lr_scale`), no early stopping and no
    torch.compile; otherwise (distillation, a student trained from scratch) the recipe's
    schedule stays. The data section and seed never change: the child's splits are the parent's.
    """
    raw = cfg.model_dump(mode="json")
    train = {**raw["train"], "epochs": epochs, "max_steps": max_steps}
    if fine_tune:
        train.update({"early_stopping": None, "compile": False, "checkpoint_every": 0})
        raw["schedule"] = {"name": "cosine", "warmup_steps": 0}
        raw["optim"] = {**raw["optim"], "lr": lr or cfg.optim.lr * lr_scale}
    elif lr is not None:
        raw["optim"] = {**raw["optim"], "lr": lr}
    if device is not None:
        train["device"] = device
    raw["train"] = train
    return from_dict(raw)


def finetune(model: nn.Module, bundle: DataBundle, cfg: ExperimentConfig, run: PhaseRun, device: torch.device,
             reporter: Reporter) -> LoopState:
    """Train `model` in place with `fit()` into `run`; returns the loop state."""
    model.to(device).train()
    state = fit(model, bundle, for_info(bundle.info), cfg, run, device, reporter=reporter)
    model.eval()
    return state


def freeze_zeros(model: nn.Module, min_share: float = 0.01) -> int:
    """Mask the exact zeros of every weight that has at least `min_share` of them.

    A sparse model (an unstructured-pruned parent) fine-tuned without masks would grow its
    zeros back; with `prune.custom_from_mask` they stay zero until `make_permanent`.

    Returns:
        How many weights are held at zero.
    """
    from ember.compress.prune import PRUNABLE

    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        if isinstance(module, PRUNABLE):
            for name, param in module.named_parameters(recurse=False):
                if name.startswith("weight"):
                    owners.setdefault(id(param), []).append((module, name))
    kept = 0
    for group in owners.values():  # a tied weight (GPT's embedding and head): one mask for all users
        first, name = group[0]
        zeros = getattr(first, name).detach() == 0
        if zeros.float().mean() >= min_share:
            for module, owner_name in group:
                prune.custom_from_mask(module, owner_name, ~zeros)
            kept += int(zeros.sum())
    return kept
