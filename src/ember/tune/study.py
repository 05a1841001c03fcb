"""The study: checked settings, one creation, workers, and resuming after a kill.

`tune()` checks everything (recipe, space, metric, options) before any trial runs, creates
the study once (several processes creating one SQLite study at once is a known Optuna
race), marks the trials a killed invocation left RUNNING as failed and queues their params
again, then runs the workers: in this process for `workers=1`, else as N child processes
with the CPU threads divided among them. Each worker asks for a trial under a file lock
that also counts the study's trials, so `trials=N` ends with exactly N finished trials,
however many workers ask at once and however often the study was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ember.config import ExperimentConfig, load, to_yaml
from ember.errors import ConfigError
from ember.runs import Study, atomic_write_text
from ember.tune.runner import PRUNERS, SAMPLERS, WorkerOptions, run_worker
from ember.tune.space import Space, check_space, load_space
from ember.tune.storage import (
    file_lock,
    open_storage,
    raise_user_error,
    recover_interrupted,
    session_error,
)

__all__ = ["tune", "StudyResult", "parse_duration"]

# Metrics where lower is better; any other metric needs --direction unless it is the task's primary.
_LOWER_IS_BETTER = {"loss", "rmse", "mae", "mse", "perplexity", "bits_per_char", "bpc"}
_HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "r2"}


@dataclass(frozen=True)
class StudyResult:
    """What `tune()` returns: the study folder and its best trial."""

    path: Path
    name: str
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    counts: dict[str, int]


def parse_duration(text: str | float | int | None) -> float | None:
    """`30m`, `2h`, `90s`, `45` (seconds) -> seconds; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        raw = text.strip().lower()
        scale = units.get(raw[-1:])
        try:
            seconds = float(raw[:-1] if scale else raw) * (scale or 1)
        except ValueError:
            raise ConfigError(f"--timeout: got {text!r}; expected seconds or a number with s/m/h/d, "
                              "e.g. 30m") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--timeout: got {text!r}; must be > 0")
    return seconds


def _resolve_metric(base: ExperimentConfig, metric: str | None, direction: str | None) -> tuple[str, str]:
    """(metric without `val.`, 'maximize'|'minimize'), checked against the task's metrics."""
    from ember import data as data_mod
    from ember.tasks import for_info

    if direction is not None and direction not in ("max", "min", "maximize", "minimize"):
        raise ConfigError(f"--direction: got {direction!r}; valid: max, min")
    task = for_info(data_mod.build(base.data, base.train.seed).info)
    name = task.primary_metric if metric is None else metric
    if name.startswith(("train.", "test.")):
        raise ConfigError(f"--metric: got {metric!r}; a study watches a validation metric, e.g. "
                          f"val.{task.primary_metric}")
    name = name.removeprefix("val.")
    valid = sorted(task.metric_names())
    if name not in valid:
        raise ConfigError(f"--metric: got {metric!r}; valid: {', '.join('val.' + v for v in valid)}")
    if direction is None:
        if name == task.primary_metric:
            direction = task.primary_mode
        elif name in _LOWER_IS_BETTER or name in _HIGHER_IS_BETTER:
            direction = "min" if name in _LOWER_IS_BETTER else "max"
        else:
            raise ConfigError(f"--direction: needed for --metric val.{name} (max or min)")
    return name, "maximize" if direction.startswith("max") else "minimize"


def _settings(folder: Study, name: str, base: ExperimentConfig, space: Space, metric: str, direction: str,
              storage: str | None) -> tuple[dict[str, Any], str | None]:
    """`tune.json`'s content, and the storage URL to use; a resumed study must mean the same objective.

    A resumed study keeps the storage it was created with. Nothing is written here: the
    settings are written once the storage has opened (a bad URL must not stick to the study).
    """
    wanted = {"study": name, "base": base.model_dump(mode="json"), "space": space.to_dict(),
              "metric": f"val.{metric}", "direction": direction, "storage": storage}
    if not folder.settings.is_file():
        return wanted, storage
    held = json.loads(folder.settings.read_text())
    for key, label in (("base", "recipe and overrides"), ("space", "space"), ("metric", "--metric"),
                       ("direction", "--direction")):
        if held.get(key) != wanted[key]:
            raise ConfigError(f"--study {name}: '{folder.path}' holds a study with another {label}; "
                              "run the same command to resume it, or pass --study NEW_NAME")
    if storage is not None and held.get("storage") not in (None, storage):
        raise ConfigError(f"--storage: study '{name}' lives in {held['storage']!r}; pass that URL")
    url = held.get("storage") if storage is None else storage
    return {**wanted, "storage": url}, url


def _cores() -> int:
    """CPUs this process may run on (a container's or `taskset`'s limit, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _threads(base: ExperimentConfig, space: Space, workers: int) -> int | None:
    """CPU threads per trial: the cores divided among workers, unless the recipe or space sets them."""
    if base.train.threads is not None or "train.threads" in space.keys:
        return None
    return max(1, _cores() // workers)


def _check_options(trials: int, workers: int, pruner: str, sampler: str) -> None:
    if trials < 1:
        raise ConfigError(f"--trials: got {trials}; must be >= 1")
    if workers < 1:
        raise ConfigError(f"--workers: got {workers}; must be >= 1")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner: got {pruner!r}; valid: {', '.join(PRUNERS)}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler: got {sampler!r}; valid: {', '.join(SAMPLERS)}")


def _spawn(folder: Study, opts: WorkerOptions, workers: int) -> None:
    """Run `workers` child processes; stop them all at the first user error or bug."""
    # The children import this same Ember, wherever it was found (an install, src/ on sys.path).
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-m", "ember.tune.worker", str(folder.path), str(i),
                               json.dumps(asdict(opts))], env=env) for i in range(workers)]
    failed: int | None = None
    try:
        while any(p.poll() is None for p in procs):
            codes = [p.returncode for p in procs if p.returncode is not None]
            bad = [c for c in codes if c != 0]
            if bad:
                failed = bad[0]
                break
            time.sleep(0.2)
        failed = failed if failed is not None else next((p.returncode for p in procs if p.returncode), None)
    finally:
        for p in procs:  # an error elsewhere, or Ctrl-C here: the running trials are re-run later
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    if failed is not None and failed != 2:
        raise RuntimeError(f"a tune worker exited with {failed}; see its traceback above")


def tune(
    recipe: str | ExperimentConfig,
    space: str | Path | Mapping[str, Any],
    overrides: list[str] | None = None,
    *,
    trials: int = 40,
    workers: int = 1,
    timeout: str | float | None = None,
    metric: str | None = None,
    direction: str | None = None,
    pruner: str = "median",
    sampler: str = "tpe",
    storage: str | None = None,
    study: str | None = None,
    quiet: bool = False,
) -> StudyResult:
    """Search hyperparameters of a recipe with Optuna; every trial is a normal run.

    Args:
        recipe: a recipe name, a YAML file or an `ExperimentConfig` (the study's base).
        space: a YAML file or a mapping: dotted config key -> `{uniform|loguniform|int: [lo, hi]}`
            (with optional `log`, `step`) or `{choice: [...]}`.
        overrides: `key=value` changes to the recipe, fixed for every trial.
        trials: finished trials the study should hold (a resumed study runs only the rest).
        workers: trial processes at once; the CPU threads are divided among them.
        timeout: no new trial starts after this (seconds, or "30m", "2h").
        metric: the validation metric to optimise (default: the task's, e.g. val.accuracy).
        direction: "max" or "min" (default: the metric's natural one).
        pruner: median, hyperband or none. sampler: tpe, random, grid or cmaes.
        storage: a SQLAlchemy URL (default: a journal file in the study folder).
        study: the study name and folder under `log.runs_dir` (default `<recipe>-tune`); the
            same name again resumes it.

    Returns:
        The study folder and its best trial; `study.html`, `study.json` and `best.yaml` are in it.

    Raises:
        ConfigError: before any trial, for a bad space, option or metric; during the study, the
            error of a trial that failed by a user mistake (the study stops).

    Example:
        >>> result = ember.tune("digits-mlp", {"optim.lr": {"loguniform": [1e-4, 1e-1]}},
        ...                     ["train.epochs=3"], trials=4)
        >>> result.best_config.name
        'best.yaml'
    """
    try:
        import optuna
    except ImportError:
        raise ConfigError("ember tune needs Optuna: pip install 'ember[tune]'") from None

    from ember.tune.report import write_study_report

    _check_options(trials, workers, pruner, sampler)
    deadline_s = parse_duration(timeout)
    base = recipe if isinstance(recipe, ExperimentConfig) else load(recipe, overrides)
    if isinstance(recipe, ExperimentConfig) and overrides:
        raise ConfigError("overrides: pass them with a recipe name or file, not with an ExperimentConfig")
    parsed = load_space(space)
    check_space(parsed, base)
    if sampler == "grid":
        trials = min(trials, math.prod(len(v) for v in parsed.grid().values()))
    metric_name, direction_name = _resolve_metric(base, metric, direction)
    name = study or f"{base.recipe}-tune"
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--study: got {name!r}; a folder name without '/'")
    folder = Study(Path(base.log.runs_dir) / name)
    busy = f"--study {name}: another ember tune is running it ('{folder.path}'); wait for it or stop it"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with file_lock(folder.lock("driver"), wait_s=0.5, busy=busy):
        settings, url = _settings(folder, name, base, parsed, metric_name, direction_name, storage)
        backend = open_storage(folder, url)
        created = optuna.create_study(storage=backend, study_name=name, direction=direction_name,
                                      load_if_exists=True)
        if not folder.settings.is_file():
            atomic_write_text(folder.settings, json.dumps(settings, indent=2))
            atomic_write_text(folder.base_config, to_yaml(base))
        opts = WorkerOptions(study_name=name, storage=url, trials=trials,
                             deadline=None if deadline_s is None else time.time() + deadline_s,
                             metric=metric_name, direction=direction_name, pruner=pruner, sampler=sampler,
                             seed=base.train.seed, epochs=base.train.epochs,
                             threads=_threads(base, parsed, workers), session=uuid.uuid4().hex, quiet=quiet)
        try:
            # Children of a killed invocation end within a moment (they watch their parent).
            with file_lock(folder.lock("workers"), wait_s=30, busy=busy):
                again = recover_interrupted(created, folder)
            if again and not quiet:
                print(f"study {name}: re-running interrupted trial(s) {', '.join(map(str, again))}", flush=True)
            if workers == 1:
                run_worker(folder, opts, 0)
            else:
                _spawn(folder, opts, workers)
                failed = session_error(created, opts.session)
                if failed is not None:
                    raise_user_error(failed)
        finally:
            with file_lock(folder.lock("workers"), wait_s=30, busy=busy):
                recover_interrupted(created, folder)
            summary = write_study_report(folder, created, parsed)
    best = summary.get("best") or {}
    return StudyResult(path=folder.path, name=name, best_value=best.get("value"),
                       best_params=best.get("params", {}),
                       best_config=folder.best if folder.best.is_file() else None, counts=summary["counts"])
