"""Labelled files from outside a run's own data: a folder of class sub-folders, or an installed set.

`ember evaluate RUN --on DIR` scores a finished run on examples it never saw, decoded exactly
as `predict` decodes them (the run's image size, normalisation, audio features). The class
sub-folders must name classes of the run. Installed sets are named:

    asterisk_digits   one speaker's recorded digits 0-9 (8 kHz WAV), Debian's
                      asterisk-core-sounds-en-wav: a real voice for spoken-digits-cnn
"""

from __future__ import annotations

from pathlib import Path

from ember.data.bundle import DataInfo
from ember.data.class_folders import class_folders
from ember.errors import DataError

__all__ = ["INSTALLED", "labelled_files"]

# The package puts the files under en_US_f_Allison/; the "en" link is made by the separate
# asterisk-core-sounds-en package (update-alternatives), which a --no-install-recommends install lacks.
_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_DIGITS = next((d for d in (_SOUNDS / "en" / "digits", _SOUNDS / "en_US_f_Allison" / "digits") if d.is_dir()),
                       _SOUNDS / "en" / "digits")
INSTALLED: dict[str, tuple[Path, str, str]] = {
    # name -> (folder, input kind, install line)
    "asterisk_digits": (ASTERISK_DIGITS, "audio", "apt-get install asterisk-core-sounds-en-wav"),
}


def _suffixes(kind: str) -> tuple[str, ...]:
    if kind == "image":
        from ember.data.images import IMAGE_SUFFIXES

        return tuple(IMAGE_SUFFIXES)
    if kind == "audio":
        from ember.data.audio import AUDIO_SUFFIXES

        return tuple(AUDIO_SUFFIXES)
    raise DataError(f"--on: labelled folders hold images or recordings; this run takes {kind} inputs")


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _class_index(name: str, info: DataInfo, where: str) -> int:
    names = list(info.class_names or ())
    if name not in names:
        raise DataError(f"--on: {where} is labelled '{name}', not a class of this run; valid: {', '.join(names)}")
    return names.index(name)


def _installed(name: str, info: DataInfo) -> tuple[list[Path], list[int]]:
    folder, kind, install = INSTALLED[name]
    if info.input_kind != kind:
        raise DataError(f"--on {name}: holds {kind} recordings; this run takes {info.input_kind} inputs")
    files = [folder / f"{d}.wav" for d in range(10)]
    if not all(f.is_file() for f in files):
        raise DataError(f"--on {name}: not installed ('{folder}' lacks 0.wav..9.wav); install it with: {install}")
    # A run's digit classes are named "0".."9" or, as spoken-digits' are, "zero".."nine".
    words = set(info.class_names or ()) == set(_DIGIT_WORDS)
    return files, [_class_index(_DIGIT_WORDS[d] if words else str(d), info, f"'{files[d]}'") for d in range(10)]


def labelled_files(spec: str | Path, info: DataInfo) -> tuple[list[Path], list[int]]:
    """The files and their class indices in the run's label order.

    Raises:
        DataError: an unknown name, a missing folder, a class the run does not have, no files.
    """
    if not info.class_names:
        raise DataError("--on: only classification runs are scored on labelled folders")
    if str(spec) in INSTALLED:
        return _installed(str(spec), info)
    root = Path(spec)
    if not root.is_dir():
        raise DataError(f"--on: '{spec}' is neither a folder of class sub-folders nor an installed set "
                        f"({', '.join(INSTALLED)})")
    suffixes = _suffixes(info.input_kind)
    files: list[Path] = []
    labels: list[int] = []
    for name in class_folders(root):
        found = sorted(f for f in (root / name).rglob("*") if f.suffix.lower() in suffixes)
        label = _class_index(name, info, f"sub-folder '{root / name}'")
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"--on: no files ({', '.join(suffixes)}) under '{root}'")
    return files, labels
