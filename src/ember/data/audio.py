"""Audio as model input: reading WAV/FLAC, fixed-length clips, log-mel spectrograms, SpecAugment.

The mel filter bank is written here (HTK mel scale, triangular filters normalised to unit area
like Slaney's) rather than taken from librosa, which drags in numba; torchaudio is not needed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ember.data.bundle import Augment
from ember.data.randomness import uniform
from ember.data.speech_config import AudioFeatures, SpecAugmentConfig
from ember.errors import DataError

__all__ = ["AUDIO_SUFFIXES", "read_audio", "fit_clip", "mel_filterbank", "log_mel", "make_spec_augment",
           "features_of", "clip_input"]

AUDIO_SUFFIXES = (".wav", ".flac")
_SILENCE = 0.02  # peak-relative amplitude below which leading/trailing samples are trimmed


def read_audio(source: Path | io.BytesIO, sample_rate: int = 16000, name: str | None = None) -> np.ndarray:
    """Mono float32 samples at `sample_rate` (resampled if needed) from a WAV or FLAC file.

    Raises:
        DataError: unreadable, empty or not audio.
    """
    import soundfile as sf

    where = name or str(source)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(f"cannot read audio '{where}': {str(exc).splitlines()[0]}; expected WAV or FLAC") from None
    if data.size == 0:
        raise DataError(f"audio '{where}' holds no samples")
    wave = data.mean(axis=1)
    if not np.isfinite(wave).all():
        raise DataError(f"audio '{where}' holds non-finite samples")
    if rate != sample_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(rate), sample_rate)
        wave = resample_poly(wave, sample_rate // g, int(rate) // g).astype(np.float32)
    return wave


def fit_clip(wave: np.ndarray, length: int) -> np.ndarray:
    """Trim leading/trailing silence, then centre-pad or centre-crop to `length` samples."""
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0:
        loud = np.flatnonzero(np.abs(wave) > _SILENCE * peak)
        wave = wave[loud[0] : loud[-1] + 1] / peak  # and peak-normalised: loudness is not the digit
    if len(wave) >= length:
        start = (len(wave) - length) // 2
        return wave[start : start + length].astype(np.float32)
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(wave)) // 2
    out[start : start + len(wave)] = wave
    return out


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 20.0,
                   f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the mel scale, unit area."""
    f_max = f_max or sample_rate / 2
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= 2.0 / (upper - lower)  # equal area: wide high bands do not dominate
    return torch.from_numpy(bank.astype(np.float32))


def log_mel(waves: Tensor, cfg: AudioFeatures) -> Tensor:
    """(N, samples) -> (N, 1, n_mels, frames) log(1e-6 + mel power)."""
    window = torch.hann_window(cfg.n_fft)
    spec = torch.stft(waves, cfg.n_fft, cfg.hop, window=window, return_complex=True)  # (N, F, T)
    power = spec.abs().pow(2)
    mel = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ power  # (N, M, T)
    return torch.log(mel + 1e-6)[:, None]


def features_of(waves: list[np.ndarray], cfg: AudioFeatures) -> Tensor:
    """Clips fitted to `clip_seconds` and turned into log-mel spectrograms, in chunks."""
    length = int(cfg.clip_seconds * cfg.sample_rate)
    out = []
    for start in range(0, len(waves), 512):
        batch = torch.from_numpy(np.stack([fit_clip(w, length) for w in waves[start : start + 512]]))
        out.append(log_mel(batch, cfg))
    return torch.cat(out)


def make_spec_augment(cfg: SpecAugmentConfig, seed: int) -> Augment | None:
    """Time/frequency masks and a time shift for a batch (B, 1, M, T), a pure function of (seed, epoch, index)."""
    if not (cfg.time_masks or cfg.freq_masks or cfg.shift):
        return None

    def augment(x: Tensor, indices: Tensor, epoch: int) -> Tensor:
        x = x.clone()
        b, _, m, t = x.shape
        fill = x.amin(dim=(1, 2, 3), keepdim=True)  # silence, in log-mel terms
        salt = 0xA0D10
        if cfg.shift:
            shifts = (uniform(seed, epoch, indices, salt) * (2 * cfg.shift + 1)).long() - cfg.shift  # (B,)
            frames = torch.arange(t)
            src = frames[None] - shifts[:, None]  # (B, T) where each output frame comes from
            valid = (src >= 0) & (src < t)
            x = torch.where(valid[:, None, None], x.gather(3, src.clamp(0, t - 1)[:, None, None].expand(b, 1, m, t)),
                            fill)
        for axis, count, width, size in ((3, cfg.time_masks, cfg.time_width, t), (2, cfg.freq_masks, cfg.freq_width, m)):
            for j in range(count):
                w = (uniform(seed, epoch, indices, salt + 2 * j + axis * 16) * (width + 1)).long()  # (B,)
                start = (uniform(seed, epoch, indices, salt + 2 * j + 1 + axis * 16) * (size - w + 1)).long()
                pos = torch.arange(size)[None]
                mask = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
                shape: Any = (b, 1, 1, size) if axis == 3 else (b, 1, size, 1)
                x = torch.where(mask.view(shape), fill, x)
        return x

    return augment


def clip_input(source: Path | io.BytesIO, info: Any, name: str | None = None) -> Tensor:
    """One recording -> (1, 1, n_mels, frames), featurised and normalised as the run's training data."""
    from ember.data.speech_config import AudioFolderConfig

    e = info.extra
    cfg = AudioFolderConfig(path=Path("."), clip_seconds=e["clip_seconds"], n_mels=e["n_mels"], n_fft=e["n_fft"],
                            hop=e["hop"])
    x = features_of([read_audio(source, int(e["sample_rate"]), name=name)], cfg)
    return (x - info.mean[0]) / info.std[0]
