"""Small finished runs shared by the reliability tests; a test that alters one works on a copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import ember

# XOR in a handful of steps, with checkpoints to resume from.
TINY_XOR = ["train.epochs=6", "train.checkpoint_every=2", "train.keep_checkpoints=3", "log.report=false",
            "train.threads=1"]
TINY_IRIS = ["train.epochs=2", "log.report=false", "train.threads=1", "train.checkpoint_every=5"]


@pytest.fixture(scope="session")
def xor_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xor")
    return ember.train("xor-mlp", TINY_XOR, run_dir=root / "run", verbose=False).path


@pytest.fixture(scope="session")
def iris_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("iris")
    return ember.train("iris-mlp", TINY_IRIS, run_dir=root / "run", verbose=False).path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    cfg = ["train.epochs=1", "model.channels=[4,8]", "model.hidden=[16]", "data.limit=200", "train.threads=1",
           "log.report=false"]
    return ember.train("digits-cnn", cfg, run_dir=root / "run", verbose=False).path


@pytest.fixture
def copy_run(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a shared run into this test's folder, so the test may damage it."""
    def copy(run: Path) -> Path:
        dest = tmp_path / run.name
        shutil.copytree(run, dest)
        return dest
    return copy
