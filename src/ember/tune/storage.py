"""A study's storage and its bookkeeping: locks, the Optuna storage, interrupted trials.

Several processes share one study: the `ember tune` that drives it and its workers. File
locks (flock, released when a process dies however it dies) keep one driver per study,
let the driver wait until the workers of a killed predecessor are gone, and make asking
for a trial and counting the study's trials one step.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ember import errors
from ember.errors import ConfigError, EmberError, RunError
from ember.runs import Run, Study, atomic_write_text

__all__ = ["file_lock", "open_storage", "recover_interrupted", "counted", "session_error", "raise_user_error",
           "INTERRUPTED", "USER_ERROR", "SESSION", "HOST"]

# User attributes the study keeps on trials.
INTERRUPTED, USER_ERROR, SESSION, HOST = "ember_interrupted", "ember_user_error", "ember_session", "ember_host"


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


def check_journal(path: Path) -> None:
    """Refuse a damaged journal before Optuna reads it (it fails there with a bare assertion).

    Every line must be one JSON object with an integer `op_code`, the first one creating the
    study. Nothing is repaired in place: the study's record is the user's to keep or cut.

    Raises:
        ConfigError: naming the first damaged line.
    """
    if not path.is_file():
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"study journal '{path}': cannot read it ({exc.strerror})") from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            record = None
        ok = isinstance(record, dict) and isinstance(record.get("op_code"), int)
        if ok and number == 1 and record["op_code"] != 0:  # type: ignore[index]
            ok = False
        if not ok:
            torn = number == len(lines) and not data.endswith(b"\n")
            why = "ends in the middle of a record (a write cut short)" if torn else "is not a journal record"
            raise ConfigError(f"study journal '{path}': line {number} {why}; remove that line to keep the "
                              "trials before it, or start a new --study")


def open_storage(study: Study, url: str | None) -> Any:
    """The study's Optuna storage: a journal file in the study folder, or a SQLAlchemy URL."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url is None:
        study.path.mkdir(parents=True, exist_ok=True)
        check_journal(study.journal)
        return JournalStorage(JournalFileBackend(str(study.journal)))
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy raises many kinds (bad dialect, missing driver, bad path)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage: cannot open {url!r} ({first}); give a SQLAlchemy URL such as "
                          "sqlite:///study.db") from None


def counted(trial: Any) -> bool:
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

    Call only while no worker of this study on this machine is alive (the workers lock held
    exclusively). A trial another machine is running on a shared database is left alone.
    Returns the numbers of the trials recovered.
    """
    from optuna.trial import TrialState

    storage = study._storage  # Optuna has no public call to fail another process's trial
    here = socket.gethostname()
    done = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(HOST, here) != here:
            continue
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


def session_error(study: Any, session: str) -> Any | None:
    """The first trial of this invocation that failed with a user error."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.user_attrs.get(USER_ERROR) and trial.user_attrs.get(SESSION) == session:
            return trial
    return None


def raise_user_error(trial: Any) -> None:
    kind = getattr(errors, str(trial.user_attrs.get("ember_error_type")), None)
    cls = kind if isinstance(kind, type) and issubclass(kind, EmberError) else ConfigError
    raise cls(f"trial {trial.number}: {trial.user_attrs[USER_ERROR]}")
