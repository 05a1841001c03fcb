"""Tiny epochs are not each checkpointed: a floor in seconds, the final checkpoint always written."""

from __future__ import annotations

from pathlib import Path

import ember


class CountSaves(ember.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_checkpoint(self, state: ember.FitState) -> None:
        self.steps.append(state.step)


def _saves(tmp_path: Path, *overrides: str) -> list[int]:
    counter = CountSaves()
    ember.train("xor-mlp", ["train.epochs=40", "log.report=false", "train.threads=1", *overrides],
                run_dir=tmp_path / "run", callbacks=[counter], quiet=True)
    return counter.steps


def test_epoch_checkpoints_of_a_tiny_run_are_spaced_in_time(tmp_path: Path) -> None:
    spaced = _saves(tmp_path / "a", "train.checkpoint_min_interval_s=3600")
    assert spaced == [1, 40]  # the first epoch, then nothing younger than an hour but the final one
    every = _saves(tmp_path / "b", "train.checkpoint_min_interval_s=0")
    assert every == list(range(1, 41))
