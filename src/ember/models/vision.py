"""What the pretrained ImageNet backbones share: their options, input adapter and weight loading.

A backbone (MobileNetV2, ...) takes Ember's image data as it is (any size, 1 or 3 channels,
normalised by the data's own statistics) and turns it into what its ImageNet weights expect
inside the model, so `predict`, `serve` and `export` feed it the same tensors as any CNN:

    p = x · std_data + mean_data                    # back to pixels in [0, 1]
    p = repeat(p, 3 channels)  if grayscale         # (B, 3, H, W)
    p = bilinear_resize(p, input_size)              # (B, 3, S, S)
    x' = (p - mean_weights) / std_weights           # the weights' own normalisation (ImageNet's)

The per-channel affine maps commute with the resize (its weights sum to one), so the
adapter is one resize and one multiply-add.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ember.errors import CheckpointError, ConfigError
from ember.models.common import MAX_WIDTH, ModelSection

__all__ = ["BackboneSection", "ImageInput", "check_image_data", "load_pretrained", "prepare_backbone", "block_taps",
           "pooled_features",
           "IMAGENET_CLASSES", "IMAGENET"]

IMAGENET_CLASSES = 1000
IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)  # torchvision's normalisation: (mean, std) per channel


class BackboneSection(ModelSection):
    """Options every pretrained image backbone takes."""

    pretrained: bool = Field(True, description="start from the ImageNet weights (false: random initialisation)")
    freeze: bool = Field(False, description="train only the head: the backbone's weights and BatchNorm "
                         "statistics stay as loaded")
    num_classes: int | None = Field(None, ge=1, le=MAX_WIDTH, description="classes of the head; null: the "
                                    "data's. Any number other than 1000 gets a new, randomly initialised head")
    input_size: int = Field(224, ge=32, le=1024, description="images are resized to input_size x input_size "
                            "(224 for ImageNet; smaller is faster for 28x28 images)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the head")
    pooled_blocks: list[str] = Field(default_factory=list, description="the head reads these blocks' outputs, "
                                     "average-pooled and concatenated (e.g. [block10, block13, block16]; later "
                                     "blocks are not run); empty: the last layer's 1280 features")
    pool_grid: int = Field(1, ge=1, le=4, description="each block the head reads is average-pooled to a "
                           "pool_grid x pool_grid grid: 1 averages over the whole image; 2 keeps which quarter "
                           "a feature fired in (4x the head's inputs)")


def block_taps(channels: dict[str, int], wanted: Sequence[str], grid: int = 1) -> tuple[tuple[str, ...], int]:
    """The blocks the head reads, in network order, and its number of input features.

    `channels`: each block of `features` in order, with its output channels. Empty `wanted`:
    the last block alone (the paper's head). `grid`: each block pooled to grid x grid cells.

    Raises:
        ConfigError: a name that is not a block.
    """
    names = list(channels)
    unknown = [b for b in wanted if b not in channels]
    if unknown:
        raise ConfigError(f"model.pooled_blocks: unknown block {unknown[0]!r}; valid: {names[0]}, {names[1]} .. "
                          f"{names[-2]}, {names[-1]}")
    taps = tuple(b for b in names if b in wanted) or (names[-1],)  # network order, whatever the given one
    return taps, sum(channels[b] for b in taps) * grid * grid


def pooled_features(features: nn.Sequential, x: Tensor, taps: tuple[str, ...], grid: int = 1) -> Tensor:
    """(B, 3, S, S) -> (B, grid² · sum of the taps' channels): each tapped block's output averaged
    over H, W (grid 1), or over each cell of a grid x grid partition of the image.

    Mid-level blocks transfer better than the last one to images far from ImageNet's photographs
    (28x28 grey garments), and a 2x2 grid keeps where a feature fired, which global averaging
    throws away (docs/transfer.md). The blocks after the last tap are not run.
    """
    h, pooled = x, []
    for name, block in features.named_children():
        h = block(h)  # (B, C_block, H_block, W_block)
        if name in taps:
            pooled.append(F.adaptive_avg_pool2d(h, grid).flatten(1))  # (B, C_block · grid²), channel-major
            if len(pooled) == len(taps):
                break
    return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)


class ImageInput(nn.Module):
    """The data's normalised images (B, C, H, W), C in {1, 3} -> ImageNet input (B, 3, S, S).

    `target` is the (mean, std) the weights were trained with: torchvision's ImageNet
    statistics for most backbones, TensorFlow's (127/255, 128/255) for the Lite EfficientNets.

    Holds no weights: its constants are rebuilt from the data's description, never saved.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 size: int | None = None, target: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET) -> None:
        super().__init__()
        if len(mean) not in (1, 3) or len(std) != len(mean):
            raise ConfigError(f"image backbones take 1 or 3 channels; this data has {len(mean)}")
        # Computed in Python, not on tensors: `ember plan` builds the model on the meta device.
        means, stds = (mean * 3, std * 3) if len(mean) == 1 else (mean, std)  # grayscale: the same for R, G, B
        to_mean, to_std = target  # the normalisation the weights were trained with
        scale = [sd / si for sd, si in zip(stds, to_std, strict=True)]
        shift = [(md - mi) / si for md, mi, si in zip(means, to_mean, to_std, strict=True)]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self.size = size
        # Data already normalised as ImageNet's (imagenet_eval): nothing to do but resize.
        self.identity = all(abs(a - 1) < 1e-6 for a in scale) and all(abs(b) < 1e-6 for b in shift)

    @classmethod
    def for_data(cls, info: DataInfo, size: int | None,
                 target: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET) -> ImageInput:
        """The adapter for `info`'s images (their `mean`/`std`; none recorded means raw [0, 1] pixels)."""
        channels = int(info.input_shape[0])
        mean = tuple(info.mean) if info.mean else (0.0,) * channels
        std = tuple(info.std) if info.std else (1.0,) * channels
        return cls(mean, std, size, target)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, 3, S, S)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W), a view
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            shrink = min(x.shape[-2:]) > self.size  # antialias only when downscaling, as PIL does
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        return x if self.identity else x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"size={self.size}, identity={self.identity}"


def check_image_data(cfg: BackboneSection, info: DataInfo) -> int:
    """The number of outputs for `info`, after checking a backbone can take its data.

    Raises:
        ConfigError: not (C, H, W) images with 1 or 3 channels, or `num_classes` disagreeing with the data.
    """
    source = info.extra.get("source", "?")
    if len(info.input_shape) != 3 or int(info.input_shape[0]) not in (1, 3):
        raise ConfigError(f"model.name: '{cfg.name}' needs images with 1 or 3 channels (C, H, W), but data "  # type: ignore[attr-defined]
                          f"'{source}' gives shape {list(info.input_shape)}")
    if info.task not in ("classification", "regression"):
        raise ConfigError(f"model.name: '{cfg.name}' classifies images; this data's task is {info.task}")  # type: ignore[attr-defined]
    if cfg.num_classes is not None and cfg.num_classes != info.num_outputs:
        raise ConfigError(f"model.num_classes: {cfg.num_classes}, but data '{source}' has {info.num_outputs} "
                          "outputs; leave it null to size the head from the data")
    return int(info.num_outputs)


def load_pretrained(model: nn.Module, weights: str, key_map: Callable[[str], str], keep_head: bool) -> None:
    """Copy the ImageNet weights `weights` (see `ember.pretrained.VISION_WEIGHTS`) into `model`.

    Args:
        model: a backbone whose classifier is `head`.
        weights: the `VISION_WEIGHTS` entry.
        key_map: the reference release's tensor name -> the model's name.
        keep_head: load the 1000-class head too; otherwise `head` keeps its fresh initialisation.

    Raises:
        ConfigError: the weights package is not installed.
        CheckpointError: the converted weights do not cover the model exactly.
    """
    from ember.pretrained import converted_weights

    if any(p.is_meta for p in model.parameters()):  # `ember plan` builds on meta: shapes only
        return
    tensors = converted_weights(weights, key_map, "model.pretrained")
    if not keep_head:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors and (keep_head or not k.startswith("head."))]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [k for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"the {weights} weights do not fit the model: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}")
    model.load_state_dict(tensors, strict=False)


def prepare_backbone(model: nn.Module, cfg: BackboneSection, weights: str, key_map: Callable[[str], str]) -> nn.Module:
    """`model` (with `features`, `head` and a `frozen` flag) given its ImageNet weights and frozen as `cfg` says.

    Raises:
        ConfigError: the weights package is not installed.
        CheckpointError: the converted weights do not cover the model exactly.
    """
    if cfg.pretrained:
        imagenet_head = model.head.out_features == IMAGENET_CLASSES and model.taps == ("last",) \
            and model.pool_grid == 1
        load_pretrained(model, weights, key_map, keep_head=imagenet_head)
    if cfg.freeze:
        model.frozen = True  # its train() keeps the features (and their BatchNorm statistics) in eval mode
        model.features.requires_grad_(False)
        model.train(model.training)
    return model
