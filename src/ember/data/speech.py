"""Speech sources: spoken digits synthesised by espeak-ng, and the user's folder of recordings.

Spoken digits: one espeak-ng call per (speaker, speed, pitch) speaks "zero" .. "nine" with long
breaks between them; the words are cut apart at the silences, resampled to 16 kHz and cached as
WAVs under `root/spoken_digits/<speaker>/` with `manifest.json` (one sha256 per file, checked on
every load). A speaker is an English voice with a variant (`en-us+f3`); speakers, not clips, are
split between train, validation and test.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember.data.audio import AUDIO_SUFFIXES, features_of, make_spec_augment, read_audio
from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.class_folders import class_folders, empty_class_check
from ember.data.speech_config import AudioFeatures, AudioFolderConfig, SpokenDigitsConfig
from ember.data.splits import limit, split_indices
from ember.errors import DataError

__all__ = ["DIGITS", "english_voices", "espeak_variants", "synthesise", "load_spoken_digits", "load_audio_folder"]

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_INSTALL = "install it with: apt-get install espeak-ng (or make speech)"


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(f"data.name=spoken_digits synthesises its clips with espeak-ng, which is not on PATH; {_INSTALL}")
    return exe


def _voice_table(kind: str) -> list[list[str]]:
    out = subprocess.run([_espeak(), f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def english_voices() -> list[str]:
    """espeak-ng's own English voices (MBROLA ones need extra data and are left out)."""
    voices: list[str] = []
    for row in _voice_table("en"):
        if len(row) >= 5 and row[1].startswith("en") and not row[4].startswith("mb/") and row[1] not in voices:
            voices.append(row[1])
    return voices


def espeak_variants() -> list[str]:
    """Every voice variant installed (`!v/adam` -> `adam`)."""
    return sorted({row[4].split("/")[-1] for row in _voice_table("variant") if len(row) >= 5})


def _takes(speaker: str, cfg: SpokenDigitsConfig) -> list[tuple[int, int]]:
    """`takes` (speed, pitch) pairs for a speaker, fixed by its name (the data does not move with the seed)."""
    grid = [(s, p) for s in cfg.speeds for p in cfg.pitches]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(speaker.encode()).digest()[:8], "little"))
    chosen = rng.choice(len(grid), size=min(cfg.takes, len(grid)), replace=False)
    return [grid[i] for i in sorted(chosen)]


def _split_words(wave: np.ndarray, rate: int, count: int) -> list[np.ndarray] | None:
    """Cut at silences of 0.3 s or more; None unless exactly `count` words come out."""
    loud = np.flatnonzero(np.abs(wave) > 1e-3)
    if len(loud) == 0:
        return None
    gaps = np.flatnonzero(np.diff(loud) > 0.3 * rate)
    starts, ends = np.r_[loud[0], loud[gaps + 1]], np.r_[loud[gaps], loud[-1]]
    if len(starts) != count:
        return None
    pad = int(0.02 * rate)
    return [wave[max(0, a - pad) : b + pad] for a, b in zip(starts, ends)]


def _speak(voice: str, speed: int, pitch: int, text: str, ssml: bool) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        args = [_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out)]
        subprocess.run([*args, *(["-m"] if ssml else []), text], check=True, capture_output=True)
        wave, rate = sf.read(out, dtype="float32")
    return wave, rate


def _synthesise_take(folder: Path, speaker: str, speed: int, pitch: int) -> list[dict[str, Any]]:
    """Ten WAVs (one per digit) for one speaker at one speed and pitch; their manifest rows."""
    import soundfile as sf
    from scipy.signal import resample_poly

    gap = "<break time='800ms'/>"
    wave, rate = _speak(speaker, speed, pitch, f"<speak>{gap.join(DIGITS)}</speak>", ssml=True)
    words = _split_words(wave, rate, len(DIGITS))
    if words is None:  # a voice that does not pause cleanly: one call per word
        words = [_speak(speaker, speed, pitch, w, ssml=False)[0] for w in DIGITS]
    rows = []
    for digit, word in enumerate(words):
        clip = resample_poly(word, 160, rate // 100) if rate != 16000 else word  # -> 16 kHz
        name = f"{speaker}/{digit}_s{speed}_p{pitch}.wav"
        buf = io.BytesIO()
        sf.write(buf, np.clip(clip, -1, 1), 16000, subtype="PCM_16", format="WAV")
        data = buf.getvalue()
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        rows.append({"file": name, "speaker": speaker, "digit": digit, "speed": speed, "pitch": pitch,
                     "sha256": hashlib.sha256(data).hexdigest()})
    return rows


def synthesise(cfg: SpokenDigitsConfig, workers: int = 2) -> tuple[Path, list[dict[str, Any]]]:
    """The clips `cfg` asks for, synthesised where the cache lacks them; (folder, manifest rows)."""
    from ember.runs import atomic_write_text

    voices = cfg.voices or english_voices()
    variants = cfg.variants or espeak_variants()
    speakers = [f"{v}+{w}" for v in voices for w in variants]
    folder = cfg.root / "spoken_digits"
    manifest_path = folder / "manifest.json"
    known: dict[str, dict[str, Any]] = {}
    if manifest_path.is_file():
        try:
            known = {r["file"]: r for r in json.loads(manifest_path.read_text())["clips"]}
        except (json.JSONDecodeError, KeyError, TypeError):
            known = {}  # a torn manifest: resynthesise what it should list
    jobs = [(s, sp, p) for s in speakers for sp, p in _takes(s, cfg)
            if any(f"{s}/{d}_s{sp}_p{p}.wav" not in known or not (folder / f"{s}/{d}_s{sp}_p{p}.wav").is_file()
                   for d in range(len(DIGITS)))]
    if jobs:
        version = subprocess.run([_espeak(), "--version"], capture_output=True, text=True).stdout.strip()

        def save() -> None:
            atomic_write_text(manifest_path, json.dumps({"espeak": version, "sample_rate": 16000,
                                                         "clips": sorted(known.values(), key=lambda r: r["file"])}))

        with ThreadPoolExecutor(workers) as pool:
            for n, rows in enumerate(pool.map(lambda job: _synthesise_take(folder, *job), jobs), 1):
                known.update({r["file"]: r for r in rows})
                if n % 100 == 0:  # an interrupted synthesis keeps what it made
                    save()
        save()
    wanted = {f"{s}/{d}_s{sp}_p{p}.wav" for s in speakers for sp, p in _takes(s, cfg) for d in range(len(DIGITS))}
    return folder, [known[f] for f in sorted(wanted)]


def _read_checked(folder: Path, row: dict[str, Any]) -> np.ndarray:
    data = (folder / row["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise DataError(f"'{folder / row['file']}' fails its sha256 check against manifest.json; delete "
                        f"'{folder}' to synthesise the clips again")
    return read_audio(io.BytesIO(data), 16000, name=str(folder / row["file"]))


def _info(cfg: AudioFeatures, x: torch.Tensor, classes: tuple[str, ...], mean: float, std: float,
          extra: dict[str, Any]) -> DataInfo:
    feats = {"sample_rate": cfg.sample_rate, "clip_seconds": cfg.clip_seconds, "n_mels": cfg.n_mels,
             "n_fft": cfg.n_fft, "hop": cfg.hop}
    return DataInfo(task="classification", input_kind="audio", input_shape=tuple(x.shape[1:]),
                    num_outputs=len(classes), class_names=classes, mean=(mean,), std=(std,),
                    extra={**feats, **extra})


def _bundle(cfg: AudioFeatures, x: torch.Tensor, y: torch.Tensor, tr: torch.Tensor, va: torch.Tensor,
            te: torch.Tensor, classes: tuple[str, ...], seed: int, extra: dict[str, Any]) -> DataBundle:
    tr = limit(tr, cfg)
    mean, std = float(x[tr].mean()), float(x[tr].std().clamp_min(1e-6))
    x = (x - mean) / std
    aug = make_spec_augment(cfg.augment, seed)
    return DataBundle(ArrayDataset(x[tr], y[tr], aug), ArrayDataset(x[va], y[va]), ArrayDataset(x[te], y[te]),
                      _info(cfg, x, classes, mean, std, extra))


def load_spoken_digits(cfg: SpokenDigitsConfig, seed: int) -> DataBundle:
    """Spoken digits, split by speaker: val/test hold `val_fraction`/`test_fraction` of the speakers."""
    folder, rows = synthesise(cfg)
    waves = [_read_checked(folder, r) for r in rows]
    x = features_of(waves, cfg)
    y = torch.tensor([r["digit"] for r in rows], dtype=torch.long)
    speakers = sorted({r["speaker"] for r in rows})
    order = np.random.default_rng(seed).permutation(len(speakers))
    n_test = max(1, round(cfg.test_fraction * len(speakers))) if cfg.test_fraction else 0
    n_val = max(1, round(cfg.val_fraction * len(speakers))) if cfg.val_fraction else 0
    if n_test + n_val >= len(speakers):
        raise DataError(f"{len(speakers)} speakers cannot be split into train/val/test by speaker; "
                        "list more voices or variants")
    part = {speakers[i]: ("test" if k < n_test else "val" if k < n_test + n_val else "train")
            for k, i in enumerate(order)}
    split = np.array([part[r["speaker"]] for r in rows])
    tr, va, te = (torch.from_numpy(np.flatnonzero(split == s)) for s in ("train", "val", "test"))
    held = {s: sorted(k for k, v in part.items() if v == s) for s in ("val", "test")}
    extra = {"source": "espeak-ng spoken digits", "clips": len(rows), "speakers": len(speakers),
             "held_out_speakers": held,
             "manifest_sha256": hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()}
    return _bundle(cfg, x, y, tr, va, te, DIGITS, seed, extra)


def load_audio_folder(cfg: AudioFolderConfig, seed: int) -> DataBundle:
    """Recordings under `path/<class>/` (WAV or FLAC), a stratified split from the seed."""
    root = cfg.path
    if not root.is_dir():
        raise DataError(f"data.path: audio folder '{root}' does not exist")
    classes = class_folders(root)
    waves, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            waves.append(read_audio(f, cfg.sample_rate))
            labels.append(label)
    if not waves:
        raise DataError(f"data.path: no recordings ({', '.join(AUDIO_SUFFIXES)}) under '{root}'")
    empty_class_check(root, classes, labels, AUDIO_SUFFIXES, "recordings")
    x = features_of(waves, cfg)
    y_np = np.asarray(labels, dtype=np.int64)
    stratify = y_np if np.bincount(y_np).min() >= 3 else None
    tr, va, te = split_indices(len(x), cfg, seed, labels=stratify)
    return _bundle(cfg, x, torch.from_numpy(y_np), tr, va, te, classes, seed,
                   {"source": f"audio folder {root}", "clips": len(waves)})
