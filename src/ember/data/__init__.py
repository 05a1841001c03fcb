"""Data sources: `build(cfg, seed)` returns a `DataBundle`; `name` in the config picks one.

Adding a source: write its config class (deriving `BaseDataConfig`) and a loader
`load(cfg, seed) -> DataBundle`, then list both in `SOURCES` and the `DataConfig` union.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Annotated, Any

from pydantic import Field

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.data.config import (
    BaseDataConfig,
    Cifar10Config,
    CsvConfig,
    DigitsConfig,
    IdxImagesConfig,
    ImageFolderConfig,
    TabularConfig,
    XorConfig,
)

__all__ = ["DataConfig", "DataBundle", "DataInfo", "ArrayDataset", "SOURCES", "build", "static_info"]

DataConfig = Annotated[
    DigitsConfig
    | XorConfig
    | TabularConfig
    | IdxImagesConfig
    | Cifar10Config
    | ImageFolderConfig
    | CsvConfig,
    Field(discriminator="name"),
]

# name -> "module:function". Imported lazily so a source's dependencies load only when used.
SOURCES: dict[str, str] = {
    "digits": "ember.data.builtin:load_digits",
    "xor": "ember.data.builtin:load_xor",
    "iris": "ember.data.builtin:load_tabular",
    "wine": "ember.data.builtin:load_tabular",
    "breast_cancer": "ember.data.builtin:load_tabular",
    "mnist": "ember.data.idx:load_idx_images",
    "fashion_mnist": "ember.data.idx:load_idx_images",
    "cifar10": "ember.data.cifar:load_cifar10",
    "image_folder": "ember.data.user:load_image_folder",
    "csv": "ember.data.user:load_csv",
}

# What `ember plan` assumes for sources whose files may be absent: (info, train size).
_STATIC: dict[str, tuple[DataInfo, int]] = {
    "mnist": (DataInfo("classification", "image", (1, 28, 28), 10,
                       tuple(str(i) for i in range(10))), 60000),
    "fashion_mnist": (DataInfo("classification", "image", (1, 28, 28), 10), 60000),
    "cifar10": (DataInfo("classification", "image", (3, 32, 32), 10), 50000),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(import_module(module), func)


def build(cfg: BaseDataConfig, seed: int) -> DataBundle:
    """Load the source named by `cfg.name` with splits derived from `seed`."""
    name = cfg.name  # type: ignore[attr-defined]
    return _resolve(SOURCES[name])(cfg, seed)


def static_info(cfg: BaseDataConfig) -> tuple[DataInfo, int] | None:
    """Info and train-split size known without reading files, for sources that have it."""
    name = cfg.name  # type: ignore[attr-defined]
    if name not in _STATIC:
        return None
    info, n = _STATIC[name]
    held = cfg.val_fraction + cfg.test_fraction
    return info, int(n * (1 - (cfg.val_fraction if name in _STATIC else held)))
