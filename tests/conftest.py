"""Shared fixtures: tiny configs so every test trains in a second or two on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on a 2-core machine: one thread each (and in the processes
    # the tests start), or four threads fight over two cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

# Small, fast CNN on a subset of digits; single-threaded so results are bit-reproducible.
TINY_DIGITS = [
    "train.epochs=2",
    "model.channels=[8,16]",
    "model.hidden=[32]",
    "data.limit=320",
    "train.threads=1",
    "log.report=false",
]


@pytest.fixture
def tiny_digits() -> list[str]:
    return list(TINY_DIGITS)


def run_cli(*args: str | Path, cwd: Path | None = None, check: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m ember ARGS` in a fresh process, capturing output."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "ember", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ember {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


TINY_LM = ["data.max_chars=120000", "data.block_size=48", "model.n_layer=1", "model.n_embd=32",
           "train.max_steps=5", "log.report=false"]


@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char GPT trained 5 steps (48-char context), shared by the serving and chat tests: read it, don't
    write into it (copy it first)."""
    import ember

    root = tmp_path_factory.mktemp("tiny-lm")
    return ember.train("stdlib-char-gpt", [*TINY_LM, f"log.runs_dir={root}"], verbose=False).path
