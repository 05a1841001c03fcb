"""Reading a finished run back: its config, data description, task, tokenizer and model.

Every tool (evaluate, predict, generate, explain, export, serve, compress) starts here:
`load_run(path)` rebuilds the model from `config.yaml` + `data_info.json` and loads its
safetensors weights, checked against the sha256 in `summary.json`. Files in a run folder
are untrusted input: each is read as data (YAML safe loader, JSON, safetensors), and any
defect becomes a one-line `EmberError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ember import models
from ember.compress.child import load_compressed
from ember.config import ExperimentConfig, from_dict
from ember.data.bundle import DataInfo
from ember.data.tokenizer import tokenizer_from_json
from ember.errors import CheckpointError, RunError
from ember.privacy.model import private_model
from ember.runs import Run, open_run, read_json_object
from ember.safe_paths import inside, read_text
from ember.tasks import Task, for_info
from ember.weights import load_weights, sha256_file
from ember.yaml_safe import load_yaml

__all__ = ["LoadedRun", "load_run", "read_config", "read_data_info", "load_tokenizer"]


@dataclass
class LoadedRun:
    """A finished run rebuilt from its files: config, data description, task and model."""

    run: Run
    config: ExperimentConfig
    info: DataInfo
    task: Task
    model: nn.Module


def read_config(run: Run) -> ExperimentConfig:
    """The run's `config.yaml`, validated like a recipe (a plug-in it names must be installed)."""
    try:
        raw = load_yaml(read_text(run.config, run.path))
    except yaml.YAMLError as exc:
        raise RunError(f"'{run.config}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise RunError(f"'{run.config}' should hold a mapping of config sections, got {type(raw).__name__}")
    return from_dict(raw)


def read_data_info(run: Run) -> DataInfo:
    """The run's `data_info.json`: what sizing the model and reading inputs needs."""
    if not run.data_info.is_file():
        raise RunError(f"'{run.path}' has no data_info.json; was training interrupted before it began?")
    raw = read_json_object(run.data_info)
    try:
        return DataInfo.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise RunError(f"'{run.data_info}' does not describe the data ({str(exc)[:120]}); the run folder is "
                       "damaged") from None


def load_tokenizer(run_path: Path) -> Any:
    """The tokenizer a text run saved as `tokenizer.json`."""
    path = inside(run_path, "tokenizer.json")
    if not path.is_file():
        raise RunError(f"'{run_path}' has no tokenizer.json; this needs a text run")
    return tokenizer_from_json(read_text(path, run_path))


def load_run(path: str | Path, weights: Path | None = None, model: nn.Module | None = None) -> LoadedRun:
    """Rebuild a run's model from `config.yaml`, `data_info.json` and its safetensors weights.

    Args:
        path: the run folder.
        weights: another weights file to load instead of `model.safetensors` (not sha-checked).
        model: the module to load the weights into, for runs whose model was passed to
            `ember.train` as an object (or whose plug-in is not registered here); it must
            have the architecture the run was trained with.

    Raises:
        RunError: not a run, or a run missing what rebuilding needs.
        CheckpointError: weights that are corrupt, tampered with or do not fit the model.
        ConfigError: a config naming a model or data plug-in that is not installed.
    """
    run = open_run(path)
    cfg = read_config(run)
    info = read_data_info(run)
    if model is None:
        model = private_model(models.build(cfg.model, info), cfg)  # [privacy] the layers DP-SGD trained
    weights_path = weights or run.weights
    if not weights_path.is_file():
        raise RunError(f"'{run.path}' has no {weights_path.name}; resume it with: ember train --resume {run.path}")
    expected = run.read_summary().get("weights_sha256")
    if weights is None and expected and sha256_file(weights_path) != expected:
        raise CheckpointError(f"'{weights_path}' fails its sha256 check against summary.json (corrupt or tampered)")
    if run.compression.is_file():  # a compressed child: rebuild pruned/int8 layers first
        model = load_compressed(run, model, info, weights_path)
    else:
        load_weights(model, weights_path)
    model.eval()
    return LoadedRun(run, cfg, info, for_info(info), model)
