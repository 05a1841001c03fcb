"""Assemble what the report needs from a trained model and write it.

Image classifiers get a grid of test images; language models their generated samples;
forecasters a forecast-vs-truth plot; attention models a heatmap for one test example.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ember import data as data_mod
from ember.data.bundle import DataBundle
from ember.loading import load_run
from ember.models.attention import has_attention, record_attention
from ember.report.audio import misclassified_section
from ember.report.baseline import baseline_section
from ember.report.html import write_report
from ember.report.plots import Examples
from ember.report.sanitize import clean_section
from ember.report.sections import attention_section, forecast_section, lm_samples_section
from ember.runs import Run
from ember.tasks import Task
from ember.training.evaluation import predict_outputs

__all__ = ["build_report", "render_run"]


def _examples(model: nn.Module, bundle: DataBundle, device: torch.device, n: int):  # noqa: ANN202
    info = bundle.info
    outputs, targets = predict_outputs(model, bundle.test, device, 512)
    pred = outputs.argmax(-1)
    chosen = torch.cat([(pred != targets).nonzero().flatten(), (pred == targets).nonzero().flatten()])[:n]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    images = (bundle.test.x[chosen] * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    if images.shape[-1] == 1:
        images = images[..., 0]
    names = info.class_names
    return Examples(images=np.ascontiguousarray(images), true=[names[int(i)] for i in targets[chosen]],
                    pred=[names[int(i)] for i in pred[chosen]])


def _tokens(bundle: DataBundle, ids: list[int]) -> list[str]:
    tok = bundle.tokenizer
    if tok is None:
        return [str(i) for i in ids]
    return [tok.decode([i]) if i < tok.vocab_size else "·" for i in ids]


def build_report(run: Run, model: nn.Module, bundle: DataBundle, task: Task, device: torch.device,
                 limit: int | None = None) -> Path:
    """Write `report.html` (and plots) for `run`."""
    info = bundle.info
    examples = None
    sections: list[tuple[str, str]] = []
    n = limit if limit is not None else 32
    has_test = len(bundle.test) > 0
    if info.input_kind == "image" and task.name == "classification" and has_test and n > 0:
        examples = _examples(model, bundle, device, n)
    if info.input_kind == "audio" and task.name == "classification" and has_test:
        sections.append(misclassified_section(run, model, bundle, device))
    samples = lm_samples_section(run)
    if samples:
        sections.append(samples)
    if task.name == "forecast" and has_test:
        outputs, targets = predict_outputs(model, bundle.test, device, 512)
        sections.append(forecast_section(run, outputs.numpy(), targets.numpy(), info.mean[0], info.std[0]))
    if info.input_kind == "tokens" and has_test and has_attention(model):
        x = bundle.test.x[:1, :48].to(device)  # first 48 tokens keep the heatmap readable
        if info.extra.get("pad_id") is not None:
            real = int((x[0] != info.extra["pad_id"]).sum())
            x = x[:, : max(real, 1)]
        maps = [m[0].numpy() for m in record_attention(model, x)]  # (H, T, T) per layer
        if maps:
            sections.append(attention_section(run, maps, _tokens(bundle, x[0].tolist())))
    baseline = baseline_section(run)  # e.g. popularity beside a recommender
    if baseline:
        sections.append(baseline)
    # What explain, compress, ... wrote into the run: untrusted files, so cleaned to an allow-list.
    sections.extend((title, clean_section(fragment)) for title, fragment in run.tool_sections())
    return write_report(run, examples, sections)


def render_run(run_dir: str | Path) -> Path:
    """Re-render a finished run's report from its files (model rebuilt, data rebuilt)."""
    loaded = load_run(run_dir)
    bundle = data_mod.build(loaded.config.data, loaded.config.train.seed)
    return build_report(loaded.run, loaded.model, bundle, loaded.task, torch.device("cpu"),
                        limit=loaded.config.log.image_grid)
