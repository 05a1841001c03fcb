"""Kill `ember tune` mid-trial (two worker processes), run the same command: nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from tests.conftest import run_cli
from tests.tune.helpers import tiny, write_space


def _mid_trial(study_dir: Path) -> bool:
    """A trial has written its first checkpoint but no summary yet."""
    return any((t / "checkpoints" / "latest").exists() and not (t / "summary.json").exists()
               for t in study_dir.glob("trial-*"))


def _wait_until_unchanged(path: Path, quiet_s: float = 1.0, limit_s: float = 30.0) -> None:
    """Return once `path` has kept its size and mtime for `quiet_s` (at most `limit_s`)."""
    end, last, since = time.monotonic() + limit_s, None, time.monotonic()
    while time.monotonic() < end:
        stat = path.stat()
        now = (stat.st_size, stat.st_mtime_ns)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_study_resumes_without_losing_or_duplicating_trials(tmp_path: Path) -> None:
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"loguniform": [1e-3, 3e-2]},
                                                  "model.dropout": {"uniform": [0.0, 0.3]}})
    runs = tmp_path / "runs"
    args = ["tune", "digits-mlp", "--space", space, "--trials", "4", "--workers", "2", "--study", "kr",
            "--pruner", "none", "--sampler", "random", *tiny(runs, epochs=8, limit=400)]
    study_dir = runs / "kr"
    proc = subprocess.Popen([sys.executable, "-m", "ember", *map(str, args)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 240
        while not _mid_trial(study_dir):
            assert proc.poll() is None, f"the study ended before it could be killed:\n{proc.stdout.read()}"
            assert time.monotonic() < end, "no trial started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up at all; its workers see their parent gone
    finally:
        proc.wait(timeout=60)
    # Its workers end within their watcher's 0.2 s poll, and one may still tell a trial it was
    # finishing: read the journal once it has stopped changing, not the instant the parent died.
    _wait_until_unchanged(study_dir / "journal.log")
    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    before = optuna.load_study(study_name="kr", storage=storage).get_trials()
    interrupted = [t.number for t in before if t.state.name == "RUNNING"]
    finished = {t.number: t.params for t in before if t.state.name == "COMPLETE"}
    assert interrupted, [t.state.name for t in before]

    again = run_cli(*args, cwd=tmp_path, check=True)
    assert "re-running interrupted trial(s)" in again.stdout

    after = optuna.load_study(study_name="kr", storage=storage).get_trials()
    complete = [t for t in after if t.state.name == "COMPLETE"]
    failed = [t for t in after if t.state.name == "FAIL"]
    assert len(complete) == 4  # the budget exactly: no trial lost, none run twice
    assert sorted(t.number for t in failed) == interrupted
    assert all(t.user_attrs["ember_interrupted"] for t in failed)
    for t in failed:  # each interrupted trial was run again with its params, once
        reruns = [c for c in complete if c.user_attrs.get("ember_rerun_of") == t.number]
        # (a trial killed before its parameters were drawn has none: its re-run draws them)
        assert len(reruns) == 1 and (reruns[0].params == t.params or not t.params)
    for number, params in finished.items():  # trials finished before the kill are kept as they were
        assert after[number].state.name == "COMPLETE" and after[number].params == params
    for t in complete:
        assert (study_dir / f"trial-{t.number:04d}" / "summary.json").is_file()
    assert not [t for t in after if t.state.name in ("RUNNING", "WAITING")]
    assert (study_dir / "study.html").is_file() and (study_dir / "best.yaml").is_file()
