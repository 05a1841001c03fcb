"""`ember evaluate RUN --on DIR|NAME`: a run scored on labelled files it never saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import ember
from ember.data.bundle import DataInfo
from ember.data.labelled_files import ASTERISK_DIGITS, labelled_files
from ember.errors import DataError
from tests.conftest import run_cli
from tests.speech.conftest import tone

DIGITS = DataInfo(task="classification", input_kind="audio", input_shape=(1, 40, 32), num_outputs=10,
                  class_names=tuple(str(d) for d in range(10)))


def test_a_run_scored_on_a_labelled_folder(audio_run: Path, audio_folder: Path, tmp_path: Path) -> None:
    import soundfile as sf

    fresh = tmp_path / "fresh"
    for name, freq in (("low", 310.0), ("high", 2100.0)):  # new recordings, never trained on
        (fresh / name).mkdir(parents=True)
        for i in range(3):
            sf.write(fresh / name / f"{i}.wav", tone(freq * (1 + 0.02 * i), phase=2 * i), 16000)
    metrics = ember.evaluate(audio_run, on=fresh)
    assert metrics["examples"] == 6 and 0 <= metrics["accuracy"] <= 1
    proc = run_cli("evaluate", audio_run, "--on", fresh, "--json", check=True)
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(metrics["accuracy"])
    wrong = tmp_path / "wrong"
    shutil.copytree(fresh, wrong)
    (wrong / "low").rename(wrong / "middle")
    bad = run_cli("evaluate", audio_run, "--on", wrong)
    assert bad.returncode == 2 and "labelled 'middle', not a class of this run; valid: high, low" in bad.stderr
    missing = run_cli("evaluate", audio_run, "--on", tmp_path / "nowhere")
    assert missing.returncode == 2 and "asterisk_digits" in missing.stderr


def test_asterisk_digits_are_the_ten_recordings_labelled_by_name() -> None:
    if not (ASTERISK_DIGITS / "9.wav").is_file():
        pytest.skip("asterisk-core-sounds-en-wav is not installed (apt-get install asterisk-core-sounds-en-wav)")
    files, labels = labelled_files("asterisk_digits", DIGITS)
    assert [f.name for f in files] == [f"{d}.wav" for d in range(10)] and labels == list(range(10))
    # spoken-digits names its classes in words, in its own order: 3.wav is "three" wherever it sits
    words = ("five", "zero", "one", "two", "three", "four", "six", "seven", "eight", "nine")
    spoken = DataInfo(task="classification", input_kind="audio", input_shape=(1, 40, 32), num_outputs=10,
                      class_names=words)
    assert [words[i] for i in labelled_files("asterisk_digits", spoken)[1]][3] == "three"
    images = DataInfo(task="classification", input_kind="image", input_shape=(1, 8, 8), num_outputs=10,
                      class_names=DIGITS.class_names)
    with pytest.raises(DataError, match="holds audio recordings; this run takes image inputs"):
        labelled_files("asterisk_digits", images)
