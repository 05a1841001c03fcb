"""One trial: a normal `ember.train` run in `runs/<study>/trial-NNNN/`, pruned from validation.

The pruning callback reads the validation metric the loop already computes at each
evaluation (`on_validation_end`), reports it to the Optuna trial and raises `StopTraining`
when the pruner says so: the run then ends cleanly (final weights, summary, report) and
keeps its folder; its `trial.json` says it was pruned.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from ember.config import ExperimentConfig
from ember.errors import ConfigError, EmberError, NonFiniteLossError
from ember.runs import Run, Study, atomic_write_text
from ember.training.callbacks import Callback, FitState, StopTraining
from ember.tune.space import Space, config_with, format_value

__all__ = ["PruneOnValidation", "TrialOutcome", "run_trial", "write_trial_record"]


class PruneOnValidation(Callback):
    """Reports `val.<metric>` to an Optuna trial after each validation; stops a pruned run.

    Args:
        trial: the `optuna.Trial` being run.
        metric: a validation metric name without the `val.` prefix (e.g. `accuracy`).
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.last: float | None = None
        self.epochs = 0
        self.pruned = False
        self._reported: set[int] = set()

    def on_validation_end(self, state: FitState) -> None:
        if self.metric not in state.val:
            raise ConfigError(f"--metric: got 'val.{self.metric}'; this run's validation metrics are "
                              + ", ".join(f"val.{k}" for k in sorted(state.val)))
        value = float(state.val[self.metric])
        self.last = value
        self.epochs = state.epoch
        if state.epoch in self._reported:  # a second pass in one epoch (a run cut by max_steps)
            return
        self._reported.add(state.epoch)
        self.trial.report(value, step=state.epoch)
        if self.trial.should_prune():
            self.pruned = True
            raise StopTraining(f"pruned at epoch {state.epoch} (val.{self.metric} {value:.4f})")


@dataclass
class TrialOutcome:
    """How a trial ended. `state`: complete, pruned or fail; `user_error`: stop the study."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int
    seconds: float
    run: str
    error: str | None = None
    error_type: str | None = None
    user_error: bool = False


def write_trial_record(run: Run, study_name: str, outcome: TrialOutcome, metric: str) -> None:
    """`trial.json` in the trial's run folder: which study, which params, how it ended."""
    atomic_write_text(run.trial, json.dumps({"study": study_name, "metric": f"val.{metric}",
                                             **asdict(outcome)}, indent=2, default=str))


def run_trial(study: Study, study_name: str, base: ExperimentConfig, space: Space, trial: Any, metric: str,
              threads: int | None) -> TrialOutcome:
    """Train the trial's configuration into `study/trial-NNNN` and say how it ended.

    Never raises for the trial's own failures: a user error (bad data, a refused config)
    comes back with `user_error=True`, a diverging run (`NonFiniteLossError`) as a plain
    failure. Bugs (anything not an `EmberError`) propagate.
    """
    from ember.api import train  # torch: only in the process that trains

    t0 = time.perf_counter()
    run = Run(study.trial_dir(trial.number))
    values: dict[str, Any] = {}
    outcome = TrialOutcome(trial.number, "running", None, values, 0, 0.0, str(run.path))
    prune = PruneOnValidation(trial, metric)
    try:
        values.update(space.suggest(trial))
        if threads is not None:
            values.setdefault("train.threads", threads)
        cfg = config_with(base, values)
        run.path.mkdir(parents=True, exist_ok=True)
        write_trial_record(run, study_name, outcome, metric)
        train(cfg, run_dir=run.path, quiet=True, verbose=False, callbacks=[prune])
        outcome.value = prune.last
        if prune.last is None:
            raise ConfigError("the study needs a validation split: this recipe's data has none "
                              "(set data.val_fraction)")
        outcome.state = "pruned" if prune.pruned else "complete"
        if not math.isfinite(prune.last):
            outcome.state, outcome.error = "fail", f"val.{metric} is {prune.last}"
    except NonFiniteLossError as exc:
        outcome.state, outcome.error, outcome.error_type = "fail", str(exc), type(exc).__name__
    except EmberError as exc:
        outcome.state, outcome.error, outcome.error_type = "fail", str(exc), type(exc).__name__
        outcome.user_error = True
    outcome.epochs = prune.epochs
    outcome.seconds = round(time.perf_counter() - t0, 3)
    if threads is not None and values.get("train.threads") == threads:
        values.pop("train.threads")  # the study's parallelism, not a searched value
    if run.path.is_dir():
        write_trial_record(run, study_name, outcome, metric)
    return outcome


def describe(outcome: TrialOutcome, metric: str) -> str:
    """One line per finished trial, for the console."""
    shown = ", ".join(f"{k}={format_value(v)}" for k, v in outcome.params.items())
    if outcome.state == "fail":
        return f"trial {outcome.number} failed: {outcome.error} ({shown})"
    how = f"pruned at epoch {outcome.epochs}" if outcome.state == "pruned" else f"{outcome.epochs} epochs"
    return f"trial {outcome.number}: val.{metric} {outcome.value:.4f}, {how}, {outcome.seconds:.1f}s ({shown})"
