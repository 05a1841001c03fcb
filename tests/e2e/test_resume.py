"""Exact resume: a run killed with SIGKILL at any moment and resumed ends byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_DIGITS, run_cli

RESUME_CFG = [*TINY_DIGITS, "train.epochs=3", "train.checkpoint_every=4", "train.keep_checkpoints=2"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    run = tmp_path_factory.mktemp("ref") / "run"
    run_cli("train", "digits-cnn", *RESUME_CFG, "--run-dir", run, "--quiet", check=True)
    return (run / "model.safetensors").read_bytes()


def _kill_after_checkpoint(run: Path, delay: float, *extra: str) -> int:
    """Start training, SIGKILL it `delay` s after its first checkpoint exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ember", "train", "digits-cnn", *RESUME_CFG, *extra, "--run-dir", str(run),
         "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_sigkill_then_resume_is_byte_identical(tmp_path: Path, reference: bytes, delay: float) -> None:
    run = tmp_path / "run"
    _kill_after_checkpoint(run, delay)
    proc = run_cli("train", "--resume", run, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.safetensors").read_bytes() == reference


def test_sigkill_with_worker_processes_then_resume(tmp_path: Path, reference: bytes) -> None:
    # Batches built by two worker processes (the reference built them in-process): killed
    # with its workers mid-epoch, resumed, the same bytes.
    run = tmp_path / "run"
    _kill_after_checkpoint(run, 0.05, "data.workers=2")
    proc = run_cli("train", "--resume", run, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (run / "model.safetensors").read_bytes() == reference


# Kills the process from inside the Nth checkpoint's state.json write, after the model and
# optimizer files are written but before the folder is complete: the worst moment.
_KILL_MID_WRITE = """
import os, signal, sys
import ember.training.checkpoint as ck
real = ck.atomic_write_text
calls = {{"n": 0}}
def dying(path, text):
    if path.name == "state.json":
        calls["n"] += 1
        if calls["n"] == {n}:
            with open(path.parent / "state.json.partial", "w") as f:
                f.write(text[: len(text) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, text)
ck.atomic_write_text = dying
from ember.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("nth", [1, 3])
def test_kill_during_checkpoint_write(tmp_path: Path, reference: bytes, nth: int) -> None:
    run = tmp_path / "run"
    args = ["train", "digits-cnn", *RESUME_CFG, "--run-dir", str(run), "--quiet"]
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE.format(n=nth), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    latest = run / "checkpoints" / "latest"
    if nth == 1:
        assert not latest.exists()  # the first checkpoint never completed
    else:
        assert latest.read_text().strip() == f"step-{4 * (nth - 1):08d}"
    resumed = run_cli("train", "--resume", run, "--quiet")
    # With nothing complete to resume from (nth == 1) the run restarts from step 0.
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model.safetensors").read_bytes() == reference
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_resume_twice_and_after_completion(tmp_path: Path, reference: bytes) -> None:
    run = tmp_path / "run"
    _kill_after_checkpoint(run, 0.0)
    _kill_after_checkpoint_resume(run)
    assert run_cli("train", "--resume", run, "--quiet").returncode == 0
    assert (run / "model.safetensors").read_bytes() == reference
    # Resuming a finished run changes nothing.
    assert run_cli("train", "--resume", run, "--quiet").returncode == 0
    assert (run / "model.safetensors").read_bytes() == reference


def _kill_after_checkpoint_resume(run: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "ember", "train", "--resume", str(run), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4.0)  # torch import + some steps
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
