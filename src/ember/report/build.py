"""Assemble what the report needs from a trained model (example images) and write it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ember.data.bundle import DataBundle
from ember.runs import Run
from ember.tasks import Task
from ember.training.evaluation import predict_outputs

__all__ = ["build_report"]


def build_report(run: Run, model: nn.Module, bundle: DataBundle, task: Task, device: torch.device,
                 limit: int | None = None) -> Path:
    """Write `report.html` (and plots) for `run`, with a grid of test images for image data."""
    from ember.report import Examples, write_report

    info = bundle.info
    examples = None
    n = limit if limit is not None else 32
    if info.input_kind == "image" and task.name == "classification" and len(bundle.test) and n > 0:
        outputs, targets = predict_outputs(model, bundle.test, device, 512)
        pred = outputs.argmax(-1)
        wrong = (pred != targets).nonzero().flatten()
        right = (pred == targets).nonzero().flatten()
        chosen = torch.cat([wrong, right])[:n]
        x = bundle.test.x[chosen]
        mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        std = torch.tensor(info.std).view(1, -1, 1, 1)
        images = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
        if images.shape[-1] == 1:
            images = images[..., 0]
        names = info.class_names
        examples = Examples(
            images=np.ascontiguousarray(images),
            true=[names[int(i)] for i in targets[chosen]],
            pred=[names[int(i)] for i in pred[chosen]],
        )
    return write_report(run, examples)
