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
    """`{"loss": ..., <metric>: ...}`; matrices (confusion) come as nested lists."""
    if len(dataset) == 0:
        return {}
    outputs, targets = predict_outputs(model, dataset, device, batch_size, precision)
    loss = float(task.loss_sum(outputs, targets) / task.count(targets))
    metrics = task.metrics()
    metrics.update(outputs, targets)
    result: dict[str, Any] = {"loss": loss}
    for name, value in metrics.compute().items():
        result[name] = value.tolist() if value.ndim > 0 else float(value)
    return result
