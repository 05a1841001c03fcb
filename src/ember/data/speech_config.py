"""Config sections for the audio sources: synthesised spoken digits and the user's recordings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ember.data.config import BaseDataConfig
from ember.section import Section

__all__ = ["SpecAugmentConfig", "AudioFeatures", "SpokenDigitsConfig", "AudioFolderConfig"]


class SpecAugmentConfig(Section):
    """SpecAugment (Park et al. 2019) masks and a time shift, drawn from (seed, epoch, index)."""

    time_masks: int = Field(2, ge=0, le=8)
    time_width: int = Field(8, ge=0, description="widest time mask, in frames")
    freq_masks: int = Field(2, ge=0, le=8)
    freq_width: int = Field(6, ge=0, description="widest frequency mask, in mel bands")
    shift: int = Field(8, ge=0, description="largest shift in time, in frames (either way)")


class AudioFeatures(BaseDataConfig):
    """Clip length and log-mel features every audio source shares."""

    sample_rate: Literal[16000] = 16000
    clip_seconds: float = Field(1.0, gt=0, le=10, description="clips are trimmed of silence, then padded/cropped")
    n_mels: int = Field(40, ge=8, le=128)
    n_fft: int = Field(400, ge=64, le=4096, description="25 ms windows at 16 kHz")
    hop: int = Field(160, ge=16, description="10 ms hops at 16 kHz")
    augment: SpecAugmentConfig = SpecAugmentConfig()


class SpokenDigitsConfig(AudioFeatures):
    """"zero" .. "nine" spoken by espeak-ng: every English voice x variant, several speeds and pitches.

    Synthesised once (deterministically) into `root/spoken_digits/` as 16 kHz WAVs with a
    manifest of sha256s. Speakers (voice + variant) are split between train/val/test, so the
    test set holds voices the model never heard.
    """

    name: Literal["spoken_digits"] = "spoken_digits"
    root: Path = Path("data")
    voices: list[str] | None = Field(None, description="espeak-ng English voices; None: all installed")
    variants: list[str] | None = Field(None, description="espeak-ng variants; None: all installed")
    speeds: list[int] = Field(default_factory=lambda: [130, 175, 220], min_length=1,
                              description="words per minute")
    pitches: list[int] = Field(default_factory=lambda: [30, 50, 70], min_length=1, description="0..99")
    takes: int = Field(1, ge=1, le=9, description="(speed, pitch) pairs per speaker, drawn from the seed 0 grid")


class AudioFolderConfig(AudioFeatures):
    """The user's recordings: one sub-folder per class under `path`, WAV or FLAC (read by soundfile)."""

    name: Literal["audio_folder"] = "audio_folder"
    path: Path
