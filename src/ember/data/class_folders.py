"""A folder of class sub-folders (`root/<class>/<files>`), as image and audio folders are laid out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ember.errors import DataError

__all__ = ["class_folders", "empty_class_check"]


def class_folders(root: Path) -> tuple[str, ...]:
    """The class names: `root`'s visible sub-folders, sorted (their order is the label order).

    Raises:
        DataError: fewer than two classes.
    """
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(classes) < 2:
        raise DataError(f"data.path: '{root}' needs at least 2 class sub-folders, found {len(classes)}")
    return classes


def empty_class_check(root: Path, classes: Sequence[str], labels: Sequence[int], suffixes: Sequence[str],
                      noun: str) -> None:
    """A class sub-folder with nothing in it is a mistake: its output could never be learned.

    Raises:
        DataError: naming the empty class folders.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [name for name, n in zip(classes, counts, strict=True) if n == 0]
    if empty:
        shown = ", ".join(f"'{root / name}'" for name in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(f"data.path: class folder {shown} holds no {noun} ({', '.join(suffixes)}); add some "
                        "or remove the folder")
