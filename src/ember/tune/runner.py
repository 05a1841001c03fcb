"""A worker: asks the study for trials and runs them, in `ember tune` or in a child process.

Each ask happens under a file lock that also counts the study's trials, so N workers never
start more trials than the budget. A worker ends when the budget is used, the deadline has
passed, or a trial of this invocation failed by a user mistake.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.config import from_dict
from ember.errors import ConfigError, EmberError
from ember.runs import Study
from ember.tune.space import Space, parse_space
from ember.tune.storage import (
    HOST,
    SESSION,
    USER_ERROR,
    counted,
    file_lock,
    open_storage,
    raise_user_error,
    session_error,
)

__all__ = ["WorkerOptions", "run_worker", "worker_main", "make_sampler", "make_pruner", "PRUNERS", "SAMPLERS"]

PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random", "grid", "cmaes")


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
        # Optuna's 5 unpruned trials first, fewer in a small study or it never prunes; never
        # fewer than 2: the "median" of one trial is that trial, so every later trial worse than
        # the first at any epoch (a slow starter) would be stopped.
        return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, trials // 4)), n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


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
                if (sum(map(counted, trials)) >= opts.trials or session_error(study, opts.session)
                        or (opts.deadline is not None and time.time() >= opts.deadline)):
                    break
                trial = study.ask()
                trial.set_user_attr(SESSION, opts.session)  # before the lock is let go: others read it
                trial.set_user_attr(HOST, socket.gethostname())
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
                raise_user_error(study.trials[trial.number])
    return ran


def worker_main(argv: list[str]) -> int:
    """`python -m ember.tune.worker STUDY_DIR INDEX OPTIONS_JSON`: one child worker."""
    _watch_parent()
    folder, index, opts = Study(Path(argv[0])), int(argv[1]), WorkerOptions(**json.loads(argv[2]))
    try:
        run_worker(folder, opts, index)
    except EmberError:
        return 2  # recorded in the study; the parent reports it once
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent re-queues the trial
        return 130
    return 0
