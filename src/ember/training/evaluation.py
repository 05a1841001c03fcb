"""One pass over a split without gradients: loss and the task's metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ember.data.bundle import ArrayDataset
from ember.tasks import Task
from ember.training.device import autocast

__all__ = ["evaluate_split", "predict_outputs"]


@torch.no_grad()
def predict_outputs(
    model: nn.Module, dataset: ArrayDataset, device: torch.device, batch_size: int,
    precision: str = "fp32",
) -> tuple[Tensor, Tensor]:
    """Model outputs and targets for a whole split, in order, on the CPU."""
    was_training = model.training
    model.eval()
    outs, targets = [], []
    for idx in torch.arange(len(dataset)).split(batch_size):
        x, y = dataset.batch(idx)
        with autocast(precision, device):
            out = model(x.to(device))
        outs.append(out.float().cpu())
        targets.append(y)
    model.train(was_training)
    if not outs:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(outs), torch.cat(targets)


@torch.no_grad()
def evaluate_split(
    model: nn.Module, dataset: ArrayDataset, task: Task, device: torch.device, batch_size: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """`{"loss": ..., <metric>: ...}`; matrices (confusion) come as nested lists.

    Metrics are updated batch by batch, so a language model's logits for a whole split are
    never held in memory at once.
    """
    if len(dataset) == 0:
        return {}
    was_training = model.training
    model.eval()
    metrics = task.metrics().to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for idx in torch.arange(len(dataset)).split(batch_size):
        x, y = dataset.batch(idx)
        x, y = x.to(device), y.to(device)
        with autocast(precision, device):
            out = model(x)
        out = out.float()
        loss_sum += task.loss_sum(out, y).double()
        count += task.count(y)
        metrics.update(out, y)
    model.train(was_training)
    result: dict[str, Any] = {"loss": float(loss_sum) / max(count, 1)}
    for name, value in metrics.compute().items():
        result[name] = value.tolist() if value.ndim > 0 else float(value)
    return task.finalize(result)
