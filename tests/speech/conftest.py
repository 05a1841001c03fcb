"""Synthetic recordings (tones whose pitch is the class) and a tiny trained audio run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import ember

TONES = {"low": 300.0, "high": 2000.0}


def tone(freq: float, seconds: float = 0.5, rate: int = 16000, phase: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


@pytest.fixture(scope="session")
def audio_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for name, freq in TONES.items():
        (root / name).mkdir()
        for i in range(8):
            wave = tone(freq * (1 + 0.03 * i), seconds=0.3 + 0.02 * i, phase=i)
            fmt = "FLAC" if i % 2 else "WAV"
            sf.write(root / name / f"{i}.{fmt.lower()}", wave, 16000, format=fmt)
    return root


@pytest.fixture(scope="session")
def audio_run(tmp_path_factory: pytest.TempPathFactory, audio_folder: Path) -> Path:
    root = tmp_path_factory.mktemp("audio-runs")
    run = ember.train("spoken-digits-cnn", ["data.name=audio_folder", f"data.path={audio_folder}",
                                            "data.clip_seconds=0.5", "data.batch_size=4", "model.channels=[4,8]",
                                            "model.hidden=[8]", "train.epochs=3", "train.threads=1",
                                            f"log.runs_dir={root}"], verbose=False)
    return run.path
