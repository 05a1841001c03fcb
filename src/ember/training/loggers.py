"""Loggers: callbacks that copy what `metrics.jsonl` records to TensorBoard or MLflow.

`metrics.jsonl` stays the source of truth (resume truncates it; these trackers only
append). Turned on in the config: `log.tensorboard: true` writes event files under
`RUN/tensorboard/`; `log.mlflow: {tracking_uri: ..., experiment: ...}` logs to an MLflow
store (default: a SQLite file `RUN/mlflow.db`). Only rank 0 writes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ember.errors import ConfigError
from ember.training.callbacks import Callback, FitState

__all__ = ["TensorBoardLogger", "MLflowLogger", "flat_params"]


def flat_params(config: Any) -> dict[str, Any]:
    """The config as `{"optim.lr": 0.001, ...}`: scalars only, for hyper-parameter tables."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, (bool, int, float, str)):
            out[prefix] = node
        elif isinstance(node, list) and all(isinstance(v, (int, float, str)) for v in node):
            out[prefix] = str(node)

    walk("", config.model_dump(mode="json"))
    return out


def _scalars(row: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (row or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch")}


class TensorBoardLogger(Callback):
    """Scalars (`train/loss`, `val/accuracy`, ...) and the run's hyper-parameters."""

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None

    def on_fit_start(self, state: FitState) -> None:
        if not state.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard: the tensorboard package is not installed; "
                              "pip install 'ember[track]'") from None
        self.writer = SummaryWriter(str(self.log_dir or state.run_dir / "tensorboard"), purge_step=state.step + 1
                                    if state.step else None)

    def on_step_end(self, state: FitState) -> None:
        if self.writer is not None and state.logged:
            for key, value in _scalars(state.logged).items():
                self.writer.add_scalar(f"train/{key}", value, state.step)

    def on_validation_end(self, state: FitState) -> None:
        if self.writer is not None:
            for key, value in _scalars(state.val).items():
                self.writer.add_scalar(f"val/{key}", value, state.step)
            self.writer.flush()

    def on_fit_end(self, state: FitState) -> None:
        if self.writer is None:
            return
        final = {f"hparam/val_{k}": v for k, v in _scalars(state.val).items()}
        self.writer.add_hparams(flat_params(state.config), final or {"hparam/steps": float(state.step)},
                                run_name=".", global_step=state.step)
        self.writer.close()
        self.writer = None


class MLflowLogger(Callback):
    """Parameters, per-step metrics and the run folder's key files in an MLflow store."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "ember") -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id: str | None = None

    def on_fit_start(self, state: FitState) -> None:
        if not state.is_main:
            return
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("log.mlflow: the mlflow package is not installed; pip install 'ember[track]'") from None
        uri = self.tracking_uri or f"sqlite:///{(state.run_dir / 'mlflow.db').resolve()}"
        with warnings.catch_warnings():
            # mlflow's SQLAlchemy store configures its mappers with the deprecated `noload`
            # strategy on first use: mlflow's to change, nothing an Ember user can act on.
            warnings.filterwarnings("ignore", message=r".*``noload`` loader strategy is deprecated")
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(self.experiment)
        exp_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        # One MLflow run per Ember run: a resumed run continues the one it started.
        existing = self.client.search_runs([exp_id], f"tags.ember_run = '{state.run_dir.resolve()}'")
        if existing:
            self.run_id = existing[0].info.run_id
            return
        run = self.client.create_run(exp_id, run_name=state.run_dir.name,
                                     tags={"ember_run": str(state.run_dir.resolve())})
        self.run_id = run.info.run_id
        for key, value in flat_params(state.config).items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def _log(self, prefix: str, row: Any, step: int) -> None:
        for key, value in _scalars(row).items():
            self.client.log_metric(self.run_id, f"{prefix}_{key}", value, step=step)

    def on_step_end(self, state: FitState) -> None:
        if self.client is not None and state.logged:
            self._log("train", state.logged, state.step)

    def on_validation_end(self, state: FitState) -> None:
        if self.client is not None:
            self._log("val", state.val, state.step)

    def on_fit_end(self, state: FitState) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id)
            self.client = None
