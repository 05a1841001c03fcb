"""Run folders: one writer at a time, names claimed atomically, resume refused when it does
not match, and files that follow the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import ember
from ember.errors import RunError
from ember.runs import lock_run, new_run_dir, unlock_run
from tests.conftest import run_cli
from tests.reliability.conftest import TINY_XOR


def _cut_to_first_checkpoint(run: Path) -> None:
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    (run / "checkpoints" / "latest").write_text(ckpts[0].name + "\n")
    (run / "model.safetensors").unlink()


_TRY_LOCK = "import sys; from pathlib import Path; from ember.runs import lock_run; lock_run(Path(sys.argv[1]))"


def test_second_writer_exits_2_naming_the_holder(xor_run: Path, copy_run) -> None:
    run = copy_run(xor_run)
    _cut_to_first_checkpoint(run)
    lock_run(run)  # this test process is the writer now
    try:
        proc = run_cli("train", "--resume", run, "--quiet")
        assert proc.returncode == 2, proc.stderr
        assert f"in use by another ember process (pid {os.getpid()})" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        unlock_run(run)
    assert run_cli("train", "--resume", run, "--quiet").returncode == 0  # free again


def test_new_run_dirs_are_locked_while_written(tmp_path: Path) -> None:
    run = new_run_dir(tmp_path, "x")
    try:
        other = subprocess.run([sys.executable, "-c", _TRY_LOCK, str(run.path)], capture_output=True, text=True)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    finally:
        unlock_run(run.path)
    assert subprocess.run([sys.executable, "-c", _TRY_LOCK, str(run.path)]).returncode == 0


def test_lock_is_released_when_training_ends(xor_run: Path) -> None:
    lock_run(xor_run)  # the shared run was finished: nobody holds it
    unlock_run(xor_run)


def test_compress_child_is_locked_like_any_run(tmp_path: Path) -> None:
    child = new_run_dir(tmp_path, "parent-prune", tmp_path / "child")  # what compress calls
    try:
        with pytest.raises(RunError, match="already holds a run|in use"):
            (child.path / "config.yaml").write_text("x: 1\n")
            new_run_dir(tmp_path, "parent-prune", child.path)
    finally:
        unlock_run(child.path)


# Loads only ember.runs (and ember.errors), not the package (which imports torch), so that six
# processes start quickly on a small machine and then create their runs at the same moment.
_CREATE = """
import sys, time, types
from pathlib import Path
pkg = types.ModuleType("ember")
pkg.__path__ = [sys.argv[3]]
sys.modules["ember"] = pkg
from ember.runs import new_run_dir, unlock_run
root, start = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
for _ in range(10):
    run = new_run_dir(root, "race")
    unlock_run(run.path)
    print(run.path.name, flush=True)
"""


def test_concurrent_run_creation_never_collides(tmp_path: Path) -> None:
    src = Path(ember.__file__).parent
    start = time.time() + 2  # every process starts first, then all create at once
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(tmp_path), str(start), str(src)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    names: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        names += out.split()
    assert len(names) == 60 and len(set(names)) == 60
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 60


def test_resume_with_another_recipe_exits_2(xor_run: Path) -> None:
    proc = run_cli("train", "iris-mlp", "--resume", xor_run)
    assert proc.returncode == 2
    assert "is a xor-mlp run, not iris-mlp" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ember.errors.ConfigError):
        ember.train("iris-mlp", resume=xor_run, verbose=False)


def test_resume_whose_config_no_longer_fits_exits_2_and_keeps_data_info(xor_run: Path, copy_run) -> None:
    run = copy_run(xor_run)
    _cut_to_first_checkpoint(run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["hidden"] = [5]  # edited after the checkpoint was written
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = (run / "data_info.json").stat()
    proc = run_cli("train", "--resume", run, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "does not fit this run's model" in proc.stderr and "Traceback" not in proc.stderr
    after = (run / "data_info.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten


def test_run_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        run = ember.train("xor-mlp", TINY_XOR, run_dir=tmp_path / "run", verbose=False).path
    finally:
        os.umask(old)
    for name in ("config.yaml", "data_info.json", "summary.json", "metrics.jsonl", "model.safetensors",
                 "checkpoints/latest"):
        mode = stat.S_IMODE((run / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
    assert json.loads((run / "summary.json").read_text())["steps"] > 0
