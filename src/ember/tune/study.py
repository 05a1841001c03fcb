"""The study: its folder and storage, the workers that run trials, and resuming after a kill.

`tune()` checks everything (recipe, space, metric, options) before any trial runs, creates
the study once (several processes creating one SQLite study at once is a known Optuna
race), marks the trials a killed invocation left RUNNING as failed and queues their params
again, then runs the workers: in this process for `workers=1`, else as N child processes
with the CPU threads divided among them. Each worker asks for a trial under a file lock
that also counts the study's trials, so `trials=N` ends with exactly N finished trials,
however many workers ask at once and however often the study was interrupted.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ember import errors
from ember.config import ExperimentConfig, from_dict, load, to_yaml
from ember.errors import ConfigError, EmberError, RunError
from ember.runs import Run, Study, atomic_write_text
from ember.tune.space import Space, check_space, load_space, parse_space

__all__ = ["tune", "StudyResult", "WorkerOptions", "run_worker", "PRUNERS", "SAMPLERS", "parse_duration"]

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random", "grid", "cmaes")
# Metrics where lower is better; any other metric needs --direction unless it is the task's primary.
_LOWER_IS_BETTER = {"loss", "rmse", "mae", "mse", "perplexity", "bits_per_char", "bpc"}
_HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "r2"}
# User attributes the study keeps on trials.
INTERRUPTED, USER_ERROR, SESSION = "ember_interrupted", "ember_user_error", "ember_session"


@dataclass(frozen=True)
class StudyResult:
    """What `tune()` returns: the study folder and its best trial."""

    path: Path
    name: str
    best_value: float | None
    best_params: dict[str, Any]
    best_config: Path | None
    counts: dict[str, int]


@dataclass(frozen=True)
class WorkerOptions:
    """What each worker needs besides the study folder (sent to child processes as JSON)."""

    study_name: str
    storage: str | None
    trials: int
    deadline: float | None
    metric: str
    direction: str
    pruner: str
    sampler: str
    seed: int
    epochs: int
    threads: int | None
    session: str
    quiet: bool = False


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


# ---------------------------------------------------------------- locks and storage

@contextmanager
def file_lock(path: Path, shared: bool = False, wait_s: float | None = None,
              busy: str = "") -> Iterator[None]:
    """An advisory lock on `path` (flock) held for the block; released if the process dies.

    `wait_s`: give up after this long with `RunError(busy)` (None: wait as long as it takes).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if wait_s is None:
            fcntl.flock(fd, mode)
        else:
            end = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= end:
                        raise RunError(busy) from None
                    time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def open_storage(study: Study, url: str | None) -> Any:
    """The study's Optuna storage: a journal file in the study folder, or a SQLAlchemy URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url is None:
        study.path.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(study.journal)))
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many kinds (bad dialect, missing driver, bad path)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage: cannot open {url!r} ({first}); give a SQLAlchemy URL such as "
                          "sqlite:///study.db") from None


def _grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    """Optuna's grid sampler, less its `study.stop()` when the grid is done (see `Grid`)."""
    from optuna.samplers import GridSampler

    class Grid(GridSampler):
        """Optuna's grid sampler without its `study.stop()` at the end of the grid.

        `Study.stop` works only inside `Study.optimize`; the workers ask and tell, and the
        study's budget (at most the grid's size) ends them instead.
        """

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return Grid(search_space, seed=seed)


def make_sampler(name: str, space: Space, seed: int) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)  # constant liar: parallel workers spread out
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _grid_sampler(space.grid(), seed)
    try:
        import cmaes  # noqa: F401 - Optuna's CmaEsSampler needs it
    except ImportError:
        raise ConfigError("--sampler cmaes needs the 'cmaes' package: pip install 'ember[tune]'") from None
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str, epochs: int, trials: int) -> Any:
    import optuna

    if name == "median":
        # Optuna's 5 unpruned trials first, fewer in a small study (4 trials: 1), or it never prunes.
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, trials // 4)), n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------- trial bookkeeping

def _counted(trial: Any) -> bool:
    """Does this trial use up one of the `trials` budget?

    Finished, pruned and running ones do; so does a trial that failed on its own (diverged).
    One failed by an interruption or a user error does not: it is run again.
    """
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and not (trial.user_attrs.get(INTERRUPTED)
                                                    or trial.user_attrs.get(USER_ERROR))


def recover_interrupted(study: Any, folder: Study) -> list[int]:
    """Trials left RUNNING by a killed invocation: mark them failed and queue their params again.

    Call only while no worker of this study is alive (the workers lock held exclusively).
    Returns the numbers of the trials recovered.
    """
    from optuna.trial import TrialState

    storage = study._storage  # Optuna has no public call to fail another process's trial
    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        # The same params again; queued trials are asked for before any new sample.
        study.enqueue_trial(dict(trial.params), user_attrs={"ember_rerun_of": trial.number})
        record = Run(folder.trial_dir(trial.number)).trial
        if record.is_file():
            data = json.loads(record.read_text())
            data.update(state="fail", error="interrupted; its params were queued again", interrupted=True)
            atomic_write_text(record, json.dumps(data, indent=2))
        done.append(trial.number)
    return done


def _session_error(study: Any, session: str) -> Any | None:
    """The first trial of this invocation that failed with a user error."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get(USER_ERROR) and trial.user_attrs.get(SESSION) == session:
            return trial
    return None


def _raise_user_error(trial: Any) -> None:
    kind = getattr(errors, str(trial.user_attrs.get("ember_error_type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, EmberError) else ConfigError
    raise cls(f"trial {trial.number}: {trial.user_attrs[USER_ERROR]}")


# ---------------------------------------------------------------- the worker

def _watch_parent() -> None:
    """End this child process when the `ember tune` that started it dies (even by SIGKILL).

    Its running trial then stays RUNNING in the storage, and the next `ember tune` re-runs it.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True, name="ember-tune-parent-watch").start()


def run_worker(folder: Study, opts: WorkerOptions, index: int) -> int:
    """Ask for trials and run them until the budget, the deadline or a user error ends the study.

    Returns the number of trials this worker ran. Raises the `EmberError` of a trial that
    failed by a user mistake (after recording it in the study).
    """
    import optuna
    from optuna.trial import TrialState

    from ember.tune.trial import describe, run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = json.loads(folder.settings.read_text())
    space = parse_space(settings["space"])
    base = from_dict(settings["base"])
    storage = open_storage(folder, opts.storage)
    # Each worker, and each resumed invocation, samples from its own stream: two workers with
    # one seed would propose the same first points.
    existing = len(optuna.load_study(study_name=opts.study_name, storage=storage).get_trials(deepcopy=False))
    seed = (opts.seed * 1_000_003 + index * 7_919 + existing) % (2**31)
    study = optuna.load_study(study_name=opts.study_name, storage=storage,
                              sampler=make_sampler(opts.sampler, space, seed),
                              pruner=make_pruner(opts.pruner, opts.epochs, opts.trials))
    ran = 0
    with file_lock(folder.lock("workers"), shared=True):
        while True:
            with file_lock(folder.lock("ask")):
                trials = study.get_trials(deepcopy=False)
                if (sum(map(_counted, trials)) >= opts.trials or _session_error(study, opts.session)
                        or (opts.deadline is not None and time.time() >= opts.deadline)):
                    break
                trial = study.ask()
                study._storage.set_trial_user_attr(trial._trial_id, SESSION, opts.session)
            outcome = run_trial(folder, opts.study_name, base, space, trial, opts.metric, opts.threads)
            ran += 1
            trial.set_user_attr("ember_epochs", outcome.epochs)
            trial.set_user_attr("ember_seconds", outcome.seconds)
            trial.set_user_attr("ember_run", Path(outcome.run).name)
            if outcome.state == "fail":
                trial.set_user_attr("ember_error", outcome.error)
                if outcome.user_error:
                    trial.set_user_attr(USER_ERROR, outcome.error)
                    trial.set_user_attr("ember_error_type", outcome.error_type)
                study.tell(trial, state=TrialState.FAIL)
            elif outcome.state == "pruned":
                study.tell(trial, state=TrialState.PRUNED)  # Optuna keeps its last reported value
            else:
                study.tell(trial, outcome.value)
            if not opts.quiet:
                print(describe(outcome, opts.metric), flush=True)
            if outcome.user_error:
                _raise_user_error(study.trials[trial.number])
    return ran


def worker_main(argv: list[str]) -> int:
    """`python -m ember.tune.worker STUDY_DIR INDEX OPTIONS_JSON`: one child worker."""
    _watch_parent()
    folder, index, opts = Study(Path(argv[0])), int(argv[1]), WorkerOptions(**json.loads(argv[2]))
    try:
        run_worker(folder, opts, index)
    except EmberError:
        return 2  # recorded in the study; the parent reports it once
    return 0


# ---------------------------------------------------------------- the driver

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
              storage: str | None) -> str | None:
    """Write `tune.json` for a new study, or check that a resumed one means the same objective.

    Returns the storage URL to use (a resumed study keeps the one it was created with).
    """
    wanted = {"study": name, "base": base.model_dump(mode="json"), "space": space.to_dict(),
              "metric": f"val.{metric}", "direction": direction}
    if folder.settings.is_file():
        held = json.loads(folder.settings.read_text())
        for key, label in (("base", "recipe and overrides"), ("space", "space"), ("metric", "--metric"),
                           ("direction", "--direction")):
            if held.get(key) != wanted[key]:
                raise ConfigError(f"--study {name}: '{folder.path}' holds a study with another {label}; "
                                  "run the same command to resume it, or pass --study NEW_NAME")
        if storage is not None and held.get("storage") not in (None, storage):
            raise ConfigError(f"--storage: study '{name}' lives in {held['storage']!r}; pass that URL")
        return held.get("storage") if storage is None else storage
    folder.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder.settings, json.dumps({**wanted, "storage": storage}, indent=2))
    atomic_write_text(folder.base_config, to_yaml(base))
    return storage


def _threads(base: ExperimentConfig, space: Space, workers: int) -> int | None:
    """CPU threads per trial: the cores divided among workers, unless the recipe or space sets them."""
    if base.train.threads is not None or "train.threads" in space.keys:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


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
    import optuna

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
        url = _settings(folder, name, base, parsed, metric_name, direction_name, storage)
        backend = open_storage(folder, url)
        created = optuna.create_study(storage=backend, study_name=name, direction=direction_name,
                                      load_if_exists=True)
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
                failed = _session_error(created, opts.session)
                if failed is not None:
                    _raise_user_error(failed)
        finally:
            with file_lock(folder.lock("workers"), wait_s=30, busy=busy):
                recover_interrupted(created, folder)
            summary = write_study_report(folder, created, parsed)
    best = summary.get("best") or {}
    return StudyResult(path=folder.path, name=name, best_value=best.get("value"),
                       best_params=best.get("params", {}),
                       best_config=folder.best if folder.best.is_file() else None, counts=summary["counts"])
