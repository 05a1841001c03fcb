"""Reading a user's files for prediction: images and CSV rows, checked against the run."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ember.data.bundle import DataInfo
from ember.data.images import IMAGE_SUFFIXES, read_image
from ember.errors import DataError

__all__ = ["read_inputs"]


def read_inputs(paths: list[Path], info: DataInfo) -> list[tuple[str, Tensor]]:
    """One (source name, batch tensor) per file: an image gives 1 row, a CSV one per data row."""
    if not paths:
        raise DataError("no input files given; pass image files (.png/.jpg) or a .csv")
    out: list[tuple[str, Tensor]] = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"input file '{path}' does not exist")
        suffix = path.suffix.lower()
        if info.input_kind == "image":
            if suffix not in IMAGE_SUFFIXES:
                raise DataError(
                    f"'{path}': this model takes images; valid suffixes: {', '.join(IMAGE_SUFFIXES)}"
                )
            out.append((str(path), read_image(path, info)[None]))
        elif info.input_kind == "tabular":
            if suffix != ".csv":
                raise DataError(
                    f"'{path}': this model takes table rows; give a .csv with columns {', '.join(info.feature_names)}"
                )
            from ember.data.user import read_csv_rows

            out.append((str(path), read_csv_rows(path, info)))
        else:
            raise DataError(f"prediction from files is not supported for input kind '{info.input_kind}'")
    return out


