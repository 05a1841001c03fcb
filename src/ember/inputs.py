"""Reading a user's inputs for prediction, checked against what the run was trained on.

Images (PNG/JPEG) for image models, CSV rows for tabular ones, text for token models, and a
CSV column (its last `window` values) for series models.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ember.data.bundle import DataInfo
from ember.data.images import IMAGE_SUFFIXES, read_image
from ember.errors import DataError

__all__ = ["read_inputs", "encode_text", "series_window"]


def encode_text(text: str, info: DataInfo, tokenizer: Any) -> Tensor:
    """(1, T) token ids: padded/truncated to the classifier's length, or the LM's last window."""
    ids = tokenizer.encode(text)
    length = int(info.input_shape[0])
    pad_id = info.extra.get("pad_id")
    if pad_id is None:  # a language model: the most recent `length` tokens
        ids = ids[-length:] or [0]
        return torch.tensor([ids], dtype=torch.long)
    x = torch.full((1, length), int(pad_id), dtype=torch.long)
    ids = ids[:length]
    if ids:
        x[0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return x


def series_window(values: Tensor, info: DataInfo) -> Tensor:
    """The last `window` values, normalised like training: (1, window, 1). Needs enough values."""
    window = int(info.input_shape[0])
    return ((values[-window:].float() - info.mean[0]) / info.std[0]).view(1, window, 1)


def _read_series(path: Path, info: DataInfo) -> Tensor:
    window = int(info.input_shape[0])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"'{path}': needs a header and at least {window} values")
    values = []
    for i, row in enumerate(rows[1:]):
        try:
            values.append(float(row[-1]))
        except (ValueError, IndexError):
            raise DataError(f"'{path}' row {i + 2}: {row!r} does not end in a number") from None
    if len(values) < window:
        raise DataError(f"'{path}': {len(values)} values, this model needs the last {window}")
    return series_window(torch.tensor(values, dtype=torch.float32), info)


def read_inputs(paths: list[Path], info: DataInfo, tokenizer: Any = None,
                texts: list[str] | None = None) -> list[tuple[str, Tensor]]:
    """One (source name, batch tensor) per input: an image or text gives 1 row, a CSV one per row."""
    out: list[tuple[str, Tensor]] = []
    for i, text in enumerate(texts or []):
        if info.input_kind != "tokens" or tokenizer is None:
            raise DataError(f"--text applies to text models; this run takes {info.input_kind} inputs")
        out.append((f"text#{i + 1}", encode_text(text, info, tokenizer)))
    if not paths and not out:
        raise DataError("no inputs given; pass files (images, .csv, .txt) or --text")
    for path in paths:
        if not path.is_file():
            raise DataError(f"input file '{path}' does not exist")
        suffix = path.suffix.lower()
        if info.input_kind == "image":
            if suffix not in IMAGE_SUFFIXES:
                raise DataError(f"'{path}': this model takes images; valid suffixes: {', '.join(IMAGE_SUFFIXES)}")
            out.append((str(path), read_image(path, info)[None]))
        elif info.input_kind == "tabular":
            if suffix != ".csv":
                raise DataError(f"'{path}': this model takes table rows; give a .csv with columns "
                                f"{', '.join(info.feature_names)}")
            from ember.data.user import read_csv_rows

            out.append((str(path), read_csv_rows(path, info)))
        elif info.input_kind == "tokens":
            if suffix in IMAGE_SUFFIXES or suffix == ".csv":
                raise DataError(f"'{path}': this model takes text; give a text file or --text")
            out.append((str(path), encode_text(path.read_text(encoding="utf-8", errors="replace"), info, tokenizer)))
        elif info.input_kind == "series":
            if suffix != ".csv":
                raise DataError(f"'{path}': this model takes a series; give a .csv whose last column holds it")
            out.append((str(path), _read_series(path, info)))
        elif info.input_kind == "audio":
            from ember.data.audio import AUDIO_SUFFIXES, clip_input

            if suffix not in AUDIO_SUFFIXES:
                raise DataError(f"'{path}': this model takes recordings; valid suffixes: {', '.join(AUDIO_SUFFIXES)}")
            out.append((str(path), clip_input(path, info)))
        else:
            raise DataError(f"prediction from files is not supported for input kind '{info.input_kind}'")
    return out
