"""Reading audio, fitting clips, the mel filter bank, log-mel features and SpecAugment."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from ember.data.audio import fit_clip, log_mel, make_spec_augment, mel_filterbank, read_audio
from ember.data.speech_config import AudioFolderConfig, SpecAugmentConfig
from ember.errors import DataError
from tests.speech.conftest import tone


def test_read_resamples_and_mixes_down(tmp_path: Path) -> None:
    stereo = np.stack([tone(440, 1.0, 8000), tone(440, 1.0, 8000)], axis=1)
    sf.write(tmp_path / "a.flac", stereo, 8000)
    wave = read_audio(tmp_path / "a.flac", 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - 16000) <= 1


@pytest.mark.parametrize("payload", [b"RIFF\x00\x00\x00\x00WAVEjunk", b"", b"not audio at all" * 10])
def test_corrupt_audio_is_a_data_error(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="cannot read audio"):
        read_audio(path)
    with pytest.raises(DataError, match="cannot read audio 'upload'"):
        read_audio(io.BytesIO(payload), name="upload")


def test_fit_clip_trims_silence_then_centres() -> None:
    wave = np.r_[np.zeros(1000), np.ones(100) * 0.5, np.zeros(3000)].astype(np.float32)
    out = fit_clip(wave, 300)
    assert len(out) == 300 and out[100:200].tolist() == [1.0] * 100 and out[:100].sum() == 0
    assert len(fit_clip(np.ones(500, dtype=np.float32), 300)) == 300


def test_mel_filterbank_shape_order_and_area() -> None:
    bank = mel_filterbank(16000, 400, 40)
    assert bank.shape == (40, 201) and (bank >= 0).all()
    peaks = bank.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()  # filters rise with frequency
    hz_per_bin = 8000 / 200
    area = bank.sum(1) * hz_per_bin
    assert torch.allclose(area[5:], torch.ones(35), atol=0.15)  # unit area (coarse near DC)


def test_log_mel_puts_a_tone_in_the_right_band() -> None:
    cfg = AudioFolderConfig(path=Path("."))
    low, high = (torch.from_numpy(tone(f, 1.0))[None] for f in (300.0, 3000.0))
    spec_low, spec_high = log_mel(low, cfg), log_mel(high, cfg)
    assert spec_low.shape == (1, 1, 40, 101)
    assert int(spec_low[0, 0].mean(1).argmax()) < int(spec_high[0, 0].mean(1).argmax())


def test_spec_augment_is_a_function_of_seed_epoch_index() -> None:
    aug = make_spec_augment(SpecAugmentConfig(), seed=7)
    assert aug is not None
    x = torch.randn(6, 1, 40, 101)
    idx = torch.arange(10, 16)
    a, b = aug(x, idx, 3), aug(x, idx, 3)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(a, aug(x, idx, 4))
    alone = aug(x[2:3], idx[2:3], 3)  # the same sample in a batch of one
    assert torch.equal(alone[0], a[2])
    assert make_spec_augment(SpecAugmentConfig(time_masks=0, freq_masks=0, shift=0), 0) is None
