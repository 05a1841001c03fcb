"""The torchmetrics metrics Ember defines, imported only when a split is scored.

`import torchmetrics` costs seconds (it imports scipy.signal and, when installed,
transformers), so `ember.tasks` builds its metrics here, on first use: `predict`, `serve`
and `generate` never pay for it.
"""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import Tensor

from ember.retrieval import RANKING_METRICS, ranking_scores

__all__ = ["LOCAL", "TokenAccuracy", "FlatRegression", "TopKMetrics"]

# Metrics are computed where they are updated: each process of a multi-process job scores a
# whole split itself, so torchmetrics must not wait to gather states from the other ranks.
LOCAL: dict[str, Any] = {"sync_on_compute": False}


class TokenAccuracy(torchmetrics.Metric):
    """Share of scored tokens whose argmax is the target."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__(**LOCAL)
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        mask = target != self.ignore_index
        self.correct += ((preds.argmax(-1) == target) & mask).sum()
        self.total += mask.sum()

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.clamp_min(1)


class FlatRegression(torchmetrics.MetricCollection):
    """Regression metrics over all target columns at once (flattened)."""

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        super().update(preds.float().reshape(-1), target.float().reshape(-1))



class TopKMetrics(torchmetrics.Metric):
    """Running means of Recall@k, NDCG@k and HitRate@k over users (one metric, three values)."""

    full_state_update = False

    def __init__(self, which: str, k: int = 10) -> None:
        super().__init__(sync_on_compute=False)  # each process scores a whole split itself
        if which not in RANKING_METRICS:
            raise ValueError(f"unknown ranking metric '{which}'; valid: {', '.join(RANKING_METRICS)}")
        self.which = which
        self.k = k
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("users", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        values = ranking_scores(preds, target, self.k)[self.which]
        self.total += values.double().sum()
        self.users += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.users.clamp(min=1)).float()
