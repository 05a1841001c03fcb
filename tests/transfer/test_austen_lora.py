"""The smollm2-lora-austen recipe on a tiny imported Llama and six tiny "novels": LoRA trains
under 2% of the parameters and a run SIGKILLed after a checkpoint resumes to the same bytes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.transfer.helpers import recipe_sources

STEPS = ["train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2", "data.batch_size=4",
         "log.report=false", "train.threads=1"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    pytest.importorskip("transformers")
    return recipe_sources("smollm2-lora-austen", tmp_path_factory.mktemp("austen-sources"))


@pytest.fixture(scope="module")
def reference(sources: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("austen-ref") / "run"
    run_cli("train", "smollm2-lora-austen", *sources, *STEPS, "--run-dir", run, "--quiet", check=True)
    return run


def test_lora_trains_a_small_fraction_and_lowers_the_loss(reference: Path) -> None:
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["test"]["perplexity"] > 1 and summary["init_from"]["missing"] == []
    # r=8 on every projection of 2 layers: q,o 64->64, k,v 64->32, gate,up 64->96, down 96->64
    assert summary["trainable_params"] == 2 * 8 * (2 * 128 + 2 * 96 + 3 * 160)
    assert summary["trainable_share"] < 0.2  # the tiny model's share (15%); the 135M one trains 1.8%


def test_sigkill_after_a_checkpoint_then_resume_is_byte_identical(sources: list[str], reference: Path,
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ember", "train", "smollm2-lora-austen", *sources, *STEPS,
                             "--run-dir", str(run), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli("train", "--resume", run, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
