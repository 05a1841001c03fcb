"""SIGKILL of the `ember train --nproc 2` launcher: both ranks end with it (no orphans holding
the run folder), and the run resumes afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ember.errors import RunError
from ember.runs import lock_run, unlock_run
from tests.conftest import run_cli

FAULTS = Path(__file__).parents[1] / "e2e" / "faults"  # EMBER_TEST_FAULT=hang:0:STEP parks rank 0
XOR_DDP = ["train.strategy=ddp", "train.epochs=8", "train.checkpoint_every=2", "log.report=false",
           "train.threads=1", "train.dist_timeout_s=120"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(condition, seconds: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _lock_free(run: Path) -> bool:
    try:
        lock_run(run)
    except RunError:
        return False
    unlock_run(run)
    return True


def _lock_holders(run: Path) -> list[str]:
    inode = (run / ".lock").stat().st_ino
    return [line for line in Path("/proc/locks").read_text().splitlines() if f":{inode} " in line]


def test_killing_the_launcher_ends_both_ranks_and_frees_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "EMBER_TEST_FAULT": "hang:0:3",
           "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    launcher = subprocess.Popen([sys.executable, "-m", "ember", "train", "xor-mlp", *XOR_DDP, "--nproc", "2",
                                 "--run-dir", str(run), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    try:
        # Rank 0 parks at step 4, after the step-2 checkpoint; rank 1 waits in its all-reduce.
        assert _wait(lambda: (run / "checkpoints" / "latest").is_file() or launcher.poll() is not None, 120)
        assert launcher.poll() is None, launcher.stderr.read().decode() if launcher.stderr else ""
        ranks = _children(launcher.pid)
        assert len(ranks) == 2, ranks
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        assert _wait(lambda: not any(_alive(p) for p in ranks), 20), [p for p in ranks if _alive(p)]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert _wait(lambda: _lock_free(run), 20), _lock_holders(run)  # died with its holder: nothing stale
    proc = run_cli("train", "--resume", run, "--quiet", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.safetensors").is_file()
