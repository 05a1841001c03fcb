"""audio_folder and spoken_digits: shapes, split by speaker, the cache and its sha256s, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ember.data import speech
from ember.data.speech import load_audio_folder, load_spoken_digits
from ember.data.speech_config import AudioFolderConfig, SpokenDigitsConfig
from ember.errors import DataError
from tests.conftest import run_cli

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (make speech installs it)")


def test_audio_folder(audio_folder: Path) -> None:
    b = load_audio_folder(AudioFolderConfig(path=audio_folder, clip_seconds=0.5), seed=0)
    assert b.info.input_kind == "audio" and b.info.class_names == ("high", "low")
    assert b.info.input_shape == (1, 40, 51) and sum(b.sizes().values()) == 16
    assert abs(float(b.train.x.mean())) < 1e-4  # normalised with the training split's statistics


def test_audio_folder_bad_inputs(tmp_path: Path, audio_folder: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_audio_folder(AudioFolderConfig(path=tmp_path / "nope"), 0)
    bad = tmp_path / "bad"
    shutil.copytree(audio_folder, bad)
    (bad / "low" / "9.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(DataError, match="cannot read audio '.*9.wav'"):
        load_audio_folder(AudioFolderConfig(path=bad), 0)
    proc = run_cli("train", "spoken-digits-cnn", "data.name=audio_folder", f"data.path={bad}",
                   f"log.runs_dir={tmp_path / 'runs'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot read audio" in lines[0] and "9.wav" in lines[0]


def test_spoken_digits_without_espeak(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        load_spoken_digits(SpokenDigitsConfig(root=tmp_path, voices=["en-us"], variants=["f1"]), 0)


@needs_espeak
def test_spoken_digits_split_by_speaker_cache_and_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SpokenDigitsConfig(root=tmp_path, voices=["en-us", "en-gb"], variants=["f1", "m3"], clip_seconds=0.8)
    b = load_spoken_digits(cfg, seed=0)
    assert sum(b.sizes().values()) == 40 and b.sizes()["test"] == 10 and b.sizes()["val"] == 10
    held = b.info.extra["held_out_speakers"]
    assert len(held["test"]) == 1 and held["test"] != held["val"]
    assert b.info.class_names[7] == "seven" and b.info.input_shape == (1, 40, 81)
    manifest = json.loads((tmp_path / "spoken_digits" / "manifest.json").read_text())
    assert len(manifest["clips"]) == 40 and all(len(r["sha256"]) == 64 for r in manifest["clips"])

    def no_synthesis(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(speech, "_synthesise_take", no_synthesis)
    again = load_spoken_digits(cfg, seed=0)
    assert torch.equal(again.test.x, b.test.x)  # deterministic, and read from the cache
    clip = tmp_path / "spoken_digits" / manifest["clips"][0]["file"]
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the samples
    clip.write_bytes(bytes(data))
    with pytest.raises(DataError, match="fails its sha256 check"):
        load_spoken_digits(cfg, seed=0)
