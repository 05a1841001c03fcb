"""Config sections for every data source. `name` picks the source."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ember.section import Section

__all__ = [
    "AugmentConfig",
    "BaseDataConfig",
    "DigitsConfig",
    "XorConfig",
    "TabularConfig",
    "IdxImagesConfig",
    "Cifar10Config",
    "ImageFolderConfig",
    "CsvConfig",
]


class AugmentConfig(Section):
    """Light image augmentation; every draw comes from (seed, epoch, sample index)."""

    shift: int = Field(0, ge=0, le=8, description="max translation in pixels per axis")
    hflip: bool = False


class BaseDataConfig(Section):
    """Fields every source shares."""

    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    shuffle: bool = True
    drop_last: bool = False
    limit: int | None = Field(None, ge=1, description="keep at most this many training samples")

    @model_validator(mode="after")
    def _fractions(self) -> BaseDataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must be below 0.9")
        return self


class DigitsConfig(BaseDataConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images)."""

    name: Literal["digits"] = "digits"
    augment: AugmentConfig = AugmentConfig()
    classes: list[int] | None = Field(None, min_length=2, description="keep only these digits (0-9), "
                                      "relabelled in this order; e.g. [5, 6, 7, 8, 9] for transfer")
    per_class: int | None = Field(None, ge=1, description="training samples kept per class (few-shot)")

    @model_validator(mode="after")
    def _classes(self) -> DigitsConfig:
        if self.classes is not None and (len(set(self.classes)) != len(self.classes)
                                         or not all(0 <= c <= 9 for c in self.classes)):
            raise ValueError(f"classes must be distinct digits 0-9, got {self.classes}")
        return self


class XorConfig(BaseDataConfig):
    """The 4-row XOR truth table; every split is the whole table."""

    name: Literal["xor"] = "xor"
    batch_size: int = Field(4, ge=1)


class TabularConfig(BaseDataConfig):
    """scikit-learn's bundled tabular classification sets, standardised on the train split."""

    name: Literal["iris", "wine", "breast_cancer"]


class IdxImagesConfig(BaseDataConfig):
    """MNIST or Fashion-MNIST from their IDX files under `root` (downloaded if `download`)."""

    name: Literal["mnist", "fashion_mnist"]
    root: Path = Path("data")
    download: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    augment: AugmentConfig = AugmentConfig()


class Cifar10Config(BaseDataConfig):
    """CIFAR-10 from its binary batches under `root` (downloaded if `download`)."""

    name: Literal["cifar10"] = "cifar10"
    root: Path = Path("data")
    download: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    augment: AugmentConfig = AugmentConfig(shift=4, hflip=True)


class ImageFolderConfig(BaseDataConfig):
    """The user's images: one sub-folder per class under `path`, PNG or JPEG."""

    name: Literal["image_folder"] = "image_folder"
    path: Path
    image_size: tuple[int, int] = (32, 32)
    grayscale: bool = False
    augment: AugmentConfig = AugmentConfig()


class CsvConfig(BaseDataConfig):
    """The user's table: numeric feature columns and one label column."""

    name: Literal["csv"] = "csv"
    path: Path
    label_column: str = "label"
    feature_columns: list[str] | None = None
    task: Literal["auto", "classification", "regression"] = "auto"
