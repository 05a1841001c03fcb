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

__all__ = ["read_inputs", "encode_text", "series_window", "tensor_inputs"]


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


def _as_tensor(value: Any, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        import numpy as np

        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: cannot make a tensor of {type(value).__name__} ({exc})") from None


def _check_shape(x: Tensor, info: DataInfo, where: str) -> Tensor:
    want = tuple(int(d) for d in info.input_shape)
    if tuple(x.shape) == want:  # one example: a batch of one
        x = x[None]
    if tuple(x.shape[1:]) != want and info.input_kind != "tokens":
        raise DataError(f"{where}: examples of shape {tuple(x.shape[1:])}, this model takes {want} "
                        f"(a batch is (N, {', '.join(map(str, want))}))")
    if info.input_kind == "tokens":
        if x.dtype.is_floating_point or x.dim() != 2:
            raise DataError(f"{where}: a text model takes token ids, a (N, T) integer tensor; got "
                            f"{tuple(x.shape)} {x.dtype}")
        return x.long()
    if not x.dtype.is_floating_point:
        x = x.float()
    if not torch.isfinite(x).all():
        raise DataError(f"{where}: holds NaN or infinite values")
    return x.float()


def tensor_inputs(inputs: Any, info: DataInfo, batch_size: int = 256) -> list[tuple[str, Tensor]]:
    """Batches from a tensor, a NumPy array or a Dataset, already in the form the model takes.

    These are model inputs as a training Dataset yields them (no file decoding, no
    normalisation): a batch (N, *input_shape) or one example of `input_shape`; a Dataset's
    items may be `x` or `(x, y, ...)`, of which `x` is used.
    """
    from torch.utils.data import Dataset

    if isinstance(inputs, Dataset):
        try:
            count = len(inputs)  # type: ignore[arg-type]
        except TypeError:
            raise DataError("predict: the Dataset has no len(); pass a map-style Dataset or a tensor") from None
        out: list[tuple[str, Tensor]] = []
        for start in range(0, count, batch_size):
            items = [inputs[i] for i in range(start, min(count, start + batch_size))]
            xs = [_as_tensor(item[0] if isinstance(item, (tuple, list)) else item, f"dataset item {start + k}")
                  for k, item in enumerate(items)]
            try:
                batch = torch.stack(xs)
            except RuntimeError:
                raise DataError(f"predict: the Dataset's items {start}..{start + len(xs) - 1} differ in shape; "
                                "give examples of one shape") from None
            out.append(("dataset", _check_shape(batch, info, "predict: the Dataset")))
        if not out:
            raise DataError("predict: the Dataset is empty")
        return out
    x = _check_shape(_as_tensor(inputs, "predict"), info, "predict")
    return [("tensor", x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
