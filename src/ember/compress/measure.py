"""The figures `compression.json` compares: size, speed and test metrics of one model.

Speed is measured on the CPU with `MEASURE_THREADS` (1) intra-op threads, under
`torch.no_grad` in eval mode, on real test inputs:

- `latency_ms_b1`: median wall time of one forward pass on a batch of 1, after warm-up
  passes (the median, since a shared machine adds outliers on one side only);
- `throughput_b64`: samples per second over repeated forward passes on a batch of 64.

One thread because that is where int8 kernels and float kernels compare like for like and
the figure does not depend on what else the machine runs on its other cores; a parent and
its child are always measured in the same process, one after the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ember.data.bundle import ArrayDataset, DataInfo
from ember.tasks import Task
from ember.timing import median_ms
from ember.training.evaluation import evaluate_split

__all__ = ["MEASURE_THREADS", "measure", "latency_ms", "throughput", "primary_metric", "example_input",
           "cpu_threads", "scalar_metrics"]

MEASURE_THREADS = 1
# A batch-64 throughput pass longer than this is not timed: a 135M-parameter LM over a
# 1024-token window takes ~5 s per row on one thread, so 64 rows x 5 passes would be half an hour.
THROUGHPUT_PASS_BUDGET_S = 30.0


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the body with `n` intra-op threads, restoring the previous count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def primary_metric(task: Task) -> tuple[str, str]:
    """(metric, "max"|"min") a compressed model is judged by: the task's own, except that a
    language model is judged by perplexity (the issue's unit) rather than its loss."""
    if task.name == "lm":
        return "perplexity", "min"
    return task.primary_metric, task.primary_mode


def example_input(info: DataInfo, batch: int = 1) -> Tensor:
    """A dummy input batch shaped like the data's (tracing, structure rebuilds, int8 reloads).

    Token inputs get a real token id (not padding): an all-padding row can't be packed.
    """
    if info.input_kind == "tokens":
        fill = 1 if info.extra.get("pad_id") == 0 else 0
        return torch.full((batch, *info.input_shape), fill, dtype=torch.long)
    return torch.zeros(batch, *info.input_shape)


def _batch(dataset: ArrayDataset, n: int) -> Tensor:
    """The first `n` inputs of `dataset`, cycling when it holds fewer."""
    idx = torch.arange(n) % len(dataset)
    return dataset.batch(idx)[0]


@torch.no_grad()
def latency_ms(model: nn.Module, x: Tensor, warmup: int = 5, repeats: int = 50, budget_s: float = 5.0) -> float:
    """Median milliseconds of `model(x)` over up to `repeats` passes (fewer past `budget_s`)."""
    return median_ms(lambda: model(x), warmup, repeats, budget_s)


@torch.no_grad()
def throughput(model: nn.Module, x: Tensor, warmup: int = 2, min_time_s: float = 1.0, max_passes: int = 50) -> float:
    """Samples per second of `model(x)` over passes lasting at least `min_time_s` (3 passes minimum)."""
    for _ in range(warmup):
        model(x)
    passes = 0
    start = time.perf_counter()
    while passes < 3 or (time.perf_counter() - start < min_time_s and passes < max_passes):
        model(x)
        passes += 1
    return len(x) * passes / (time.perf_counter() - start)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar entries of an evaluation (no confusion matrix)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def measure(model: nn.Module, test: ArrayDataset, task: Task, weights: Path, params: int,
            eval_batch_size: int = 512, threads: int = MEASURE_THREADS,
            metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Params, size on disk, CPU latency and throughput, and test metrics of `model`.

    Args:
        model: the model as `ember.loading.load_run` rebuilds it (float or int8), on the CPU.
        test: the test split the metrics are computed on (its first inputs time the model).
        weights: the run's `model.safetensors`; `size_mb` is its size in bytes / 1e6.
        params: the parameter count to report (an int8 model keeps its float model's count).
        metrics: this model's fp32 CPU test metrics when already computed (a large test split
            is scored once, not twice); None scores it here.

    Returns:
        `{"params", "size_mb", "latency_ms_b1", "throughput_b64", "threads", <test metrics>}`;
        language models' metrics include `perplexity` (exp of the per-token loss).
    """
    model.eval()
    figures: dict[str, Any] = {"params": int(params), "size_mb": round(weights.stat().st_size / 1e6, 4)}
    if len(test):
        with cpu_threads(threads), torch.no_grad():
            one = _batch(test, 1)
            t0 = time.perf_counter()
            model(one)  # a probe (and the first warm-up): how long one row takes
            probe_s = time.perf_counter() - t0
            figures["latency_ms_b1"] = round(latency_ms(model, one, warmup=5 if probe_s < 0.1 else 1), 4)
            if 64 * probe_s <= THROUGHPUT_PASS_BUDGET_S:
                figures["throughput_b64"] = round(throughput(model, _batch(test, 64)), 1)
            else:  # left out (a '-' in the tables) rather than hours of timing
                figures["throughput_b64_skipped"] = f"a batch of 64 would take about {64 * probe_s:.0f} s"
        figures["threads"] = threads
        if metrics is None:
            metrics = evaluate_split(model, test, task, torch.device("cpu"), eval_batch_size)
        metrics = dict(metrics)
        if task.name == "lm" and "perplexity" not in metrics:
            metrics["perplexity"] = math.exp(min(metrics["loss"], 50.0))
        figures.update({k: round(v, 6) for k, v in scalar_metrics(metrics).items()})
    return figures
