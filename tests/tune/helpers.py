"""Tiny digits-mlp settings for tune tests: a trial trains in about a second on one thread."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny(runs: Path, epochs: int = 2, limit: int = 240) -> list[str]:
    """Overrides for a fast, single-threaded, reportless digits-mlp trial writing under `runs`."""
    return [f"train.epochs={epochs}", f"data.limit={limit}", "model.hidden=[16]", "train.threads=1",
            "log.report=false", f"log.runs_dir={runs}"]


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path
