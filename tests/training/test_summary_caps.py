"""summary.json's train metrics: a capped, fixed subset (a whole LM corpus costs more to score than to train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ember
from ember.training import session


def test_a_language_models_train_metrics_are_capped_by_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "TRAIN_EVAL_TOKENS", 96)  # three windows of 32 tokens
    run = ember.train("stdlib-char-gpt", ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1",
                                          "model.n_embd=32", "train.max_steps=1", "train.epochs=1",
                                          f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["train_metrics_on"] == 3 and summary["train"]["loss"] > 0
    assert summary["test"]["loss"] > 0  # the held-out splits are scored whole
