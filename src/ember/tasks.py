"""What is being learned: loss, metrics and prediction for each kind of target.

The loop stays generic by asking the task for a *summed* loss and the number of items it
sums over; dividing by the count of the whole optimizer step (all accumulated
micro-batches) is what makes k accumulated batches equal one k-times larger batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ember.data.bundle import DataInfo
from ember.retrieval import mask_seen

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

__all__ = ["Task", "Classification", "Regression", "Forecast", "LanguageModeling", "Ranking", "for_info"]

IGNORE_INDEX = -100  # targets with this value (padding, unscored positions) carry no loss


def _wide(t: Tensor) -> Tensor:
    """Half-precision outputs (bf16/fp16 autocast) in float32 for the loss; float64 kept as is.

    A float64 model (the textbook comparison trains one) keeps its loss and gradients in
    float64: casting them to float32 would round every step's gradient.
    """
    return t if t.dtype == torch.float64 else t.float()


class Task:
    """Base: subclasses define the loss, metrics and how outputs become predictions."""

    name = "task"
    primary_metric = "loss"
    primary_mode = "min"

    def __init__(self, info: DataInfo) -> None:
        self.info = info

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor, count: int) -> Tensor:
        """`loss_sum / count`: the share of one optimizer step's loss this micro-batch carries."""
        return self.loss_sum(output, target) / count

    def count(self, target: Tensor) -> int:
        """Number of items `loss_sum` adds up (samples here; tokens for language models)."""
        return int(target.shape[0])

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        raise NotImplementedError

    def metric_names(self) -> set[str]:
        """Scalar validation metrics (what early stopping may watch)."""
        return {"loss", *(k for k in self.metrics() if k != "confusion_matrix")}

    def finalize(self, result: dict[str, Any]) -> dict[str, Any]:
        """Add metrics derived from the computed ones (e.g. bits per character)."""
        return result


class Classification(Task):
    """Cross-entropy; accuracy, macro precision/recall/F1 and the confusion matrix."""

    name = "classification"
    primary_metric = "accuracy"
    primary_mode = "max"

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(_wide(output), target, reduction="sum")

    def loss(self, output: Tensor, target: Tensor, count: int) -> Tensor:
        if count == target.shape[0]:  # the whole step is this batch: a plain mean, one op fewer
            return F.cross_entropy(_wide(output), target)
        return self.loss_sum(output, target) / count

    def metrics(self) -> MetricCollection:
        import torchmetrics.classification as mc
        from torchmetrics import MetricCollection

        from ember.task_metrics import LOCAL as _LOCAL

        k = self.info.num_outputs
        return MetricCollection(
            {
                "accuracy": mc.MulticlassAccuracy(k, average="micro", **_LOCAL),
                "precision": mc.MulticlassPrecision(k, average="macro", **_LOCAL),
                "recall": mc.MulticlassRecall(k, average="macro", **_LOCAL),
                "f1": mc.MulticlassF1Score(k, average="macro", **_LOCAL),
                "confusion_matrix": mc.MulticlassConfusionMatrix(k, **_LOCAL),
            }
        )

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        probs = torch.softmax(output.float(), dim=-1)
        names = self.info.class_names or tuple(str(i) for i in range(probs.shape[-1]))
        out = []
        for row in probs:
            idx = int(row.argmax())
            out.append(
                {
                    "label": names[idx],
                    "index": idx,
                    "probabilities": {n: round(float(p), 6) for n, p in zip(names, row)},
                }
            )
        return out


class Regression(Task):
    """Mean squared error; MAE, RMSE and R2."""

    name = "regression"
    primary_metric = "rmse"
    primary_mode = "min"

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        # Summed over samples, averaged over target columns, so the count is samples.
        return F.mse_loss(_wide(output), _wide(target), reduction="none").mean(-1).sum()

    def metrics(self) -> MetricCollection:
        import torchmetrics.regression as rg

        from ember.task_metrics import LOCAL as _LOCAL
        from ember.task_metrics import FlatRegression

        return FlatRegression(
            {
                "mse": rg.MeanSquaredError(**_LOCAL),
                "mae": rg.MeanAbsoluteError(**_LOCAL),
                "rmse": rg.MeanSquaredError(squared=False, **_LOCAL),
                "r2": rg.R2Score(**_LOCAL),
            }
        )

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        names = self.info.extra.get("targets") or [f"y{i}" for i in range(output.shape[-1])]
        return [
            {"prediction": {n: float(v) for n, v in zip(names, row)}} for row in output.float()
        ]


class Forecast(Regression):
    """Forecasting a horizon of future values from a window: MSE, MAE, RMSE, R2."""

    name = "forecast"

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        # Targets were normalised with the training part's mean/std: report original units.
        mean = self.info.mean[0] if self.info.mean else 0.0
        std = self.info.std[0] if self.info.std else 1.0
        return super().predict(output.float() * std + mean)


class LanguageModeling(Task):
    """Next-token cross-entropy over every scored token; perplexity, bits per token/char.

    The count is the number of scored tokens, so accumulated micro-batches are normalised by
    the tokens of the whole optimizer step, not averaged per micro-batch.
    """

    name = "lm"
    primary_metric = "loss"
    primary_mode = "min"

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        logits = _wide(output).reshape(-1, output.shape[-1])  # (B*T, V)
        return F.cross_entropy(logits, target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")

    def count(self, target: Tensor) -> int:
        return int((target != IGNORE_INDEX).sum())

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        from ember.task_metrics import TokenAccuracy

        return MetricCollection({"accuracy": TokenAccuracy(IGNORE_INDEX)})

    def metric_names(self) -> set[str]:
        extra = {"bits_per_char"} if self.info.extra.get("chars_per_token") else set()
        return {"loss", "accuracy", "perplexity", "bits_per_token", *extra}

    def finalize(self, result: dict[str, Any]) -> dict[str, Any]:
        loss = result["loss"]
        result["perplexity"] = float(math.exp(min(loss, 50.0)))
        result["bits_per_token"] = loss / math.log(2)
        chars_per_token = self.info.extra.get("chars_per_token")
        if chars_per_token:
            result["bits_per_char"] = result["bits_per_token"] / float(chars_per_token)
        return result

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        probs = torch.softmax(output[:, -1].float(), dim=-1)  # next token after each sequence
        top = probs.topk(5, dim=-1)
        return [{"next_token_ids": i.tolist(), "probabilities": [round(float(v), 6) for v in p]}
                for p, i in zip(top.values, top.indices)]


class Ranking(Task):
    """Recommend items: softmax cross-entropy of the relevant item against the other candidates.

    Targets are dense (rows x candidates): 1 the relevant item, -1 a candidate left out (seen
    in training, or the same item drawn as a negative), 0 another candidate. Training rows
    carry the positive and its sampled negatives (a sampled softmax); evaluation rows carry the
    whole catalogue, so the loss is the full softmax and the metrics (Recall@k, NDCG@k,
    HitRate@k, see `ember.retrieval`) rank every item the user has not seen.
    """

    name = "ranking"
    primary_metric = "ndcg_at_10"
    primary_mode = "max"
    k = 10

    def loss_sum(self, output: Tensor, target: Tensor) -> Tensor:
        logp = torch.log_softmax(mask_seen(output, target), dim=-1)  # (B, C)
        return -torch.where(target > 0, logp, torch.zeros_like(logp)).sum()

    def count(self, target: Tensor) -> int:
        return int((target > 0).sum())

    def metrics(self) -> MetricCollection:
        from torchmetrics import MetricCollection

        from ember.task_metrics import TopKMetrics

        return MetricCollection(
            {f"{m}_at_{self.k}": TopKMetrics(m, self.k) for m in ("recall", "ndcg", "hit_rate")}
        )

    def predict(self, output: Tensor) -> list[dict[str, Any]]:
        ids = self.info.extra.get("item_ids") or [str(i) for i in range(output.shape[-1])]
        top = output.float().topk(min(self.k, output.shape[-1]), dim=-1)
        return [{"items": [ids[int(i)] for i in idx], "scores": [round(float(v), 6) for v in val]}
                for val, idx in zip(top.values, top.indices)]


def for_info(info: DataInfo) -> Task:
    """The task matching `info.task`."""
    tasks: dict[str, type[Task]] = {
        "classification": Classification,
        "regression": Regression,
        "forecast": Forecast,
        "lm": LanguageModeling,
        "ranking": Ranking,
    }
    return tasks[info.task](info)
