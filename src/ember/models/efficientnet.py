"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; the Lite variant of the TensorFlow TPU release).

    x = ImageInput(x)                                   # (B, 3, S, S), as the TF Lite release normalised
    h = ReLU6(BN(Conv3x3/2(x)))                         # (B, 32, S/2, S/2), the stem
    for (t, k, s, c, n) in STAGES, n blocks each:       # MBConv blocks, no squeeze-excitation
        e = ReLU6(BN(Conv1x1(h)))                       # expand to t·C_in channels (t > 1)
        e = ReLU6(BN(DepthwiseConv k x k / s(e)))       # one k x k filter per channel
        p = BN(Conv1x1(e))                              # project to c channels: linear
        h = h + p  if s == 1 and C_in == c  else p
    h = ReLU6(BN(Conv1x1(h)))                           # (B, 1280, S/32, S/32)
    logits = W · Dropout(mean over H, W of h) + b       # (B, num_outputs)

Lite differs from EfficientNet-B0 where mobile accelerators struggle: ReLU6 instead of swish,
no squeeze-excitation, stem and head not rescaled. The weights were trained in TensorFlow, so
convolutions pad as TF's "SAME" does (a stride-2 convolution pads more at the bottom/right than
at the top/left), BatchNorm uses eps 1e-3 and pixels are normalised as (p·255 - 127) / 128,
not with ImageNet's statistics. The
packaged state dict (efficientnet_pytorch's names) is renamed by `packaged_key`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ember.models.vision import (
    IMAGENET_CLASSES,
    BackboneSection,
    ImageInput,
    block_taps,
    check_image_data,
    pooled_features,
    prepare_backbone,
)

__all__ = ["EfficientNetLite0Config", "EfficientNetLite0", "MBConv", "SameConvBN", "build_efficientnet_lite0",
           "efficientnet_lite0", "packaged_key", "same_padding", "STAGES", "WEIGHTS", "LITE_NORMALISATION"]

WEIGHTS = "efficientnet_lite0"  # the entry in `ember.pretrained.VISION_WEIGHTS`

# EfficientNet-B0's stages (Table 1 of the paper) at Lite0's scale (width and depth 1.0):
# expansion t, kernel k, first stride s, output channels c, repeats n.
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM, LAST = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's decay 0.99 is PyTorch's momentum 0.01
# The TF Lite release normalises pixels as (p·255 - 127) / 128, the same for R, G and B.
LITE_NORMALISATION = ((127 / 255,) * 3, (128 / 255,) * 3)


class EfficientNetLite0Config(BackboneSection):
    """EfficientNet-Lite0 (4.7M parameters with the ImageNet head)."""

    name: Literal["efficientnet_lite0"] = "efficientnet_lite0"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one spatial side: (before, after), the odd pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConvBN(nn.Module):
    """Conv (no bias, TF "SAME" padding) -> BatchNorm -> ReLU6, or no activation when linear."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 relu6: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if relu6 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        if kernel > 1:
            top, bottom = same_padding(int(x.shape[-2]), kernel, stride)
            left, right = same_padding(int(x.shape[-1]), kernel, stride)
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Expand (1x1) -> depthwise (k x k, stride) -> project (1x1, linear); residual when shapes agree."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = SameConvBN(c_in, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = SameConvBN(hidden, c_out, 1, relu6=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        h = self.expand(x) if self.expand is not None else x  # (B, t·C_in, H, W)
        h = self.project(self.depthwise(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """Images (B, C, H, W) as the data gives them -> logits (B, num_outputs).

    The same layout as Ember's MobileNetV2: `inputs` (the ImageNet adapter), `features`
    (stem, 16 MBConv blocks, last 1x1 conv) and `head`, so freezing, LoRA target names and
    learning-rate groups read the same for both backbones.
    """

    def __init__(self, num_outputs: int = IMAGENET_CLASSES, dropout: float = 0.2,
                 inputs: ImageInput | None = None, pooled_blocks: tuple[str, ...] = (), pool_grid: int = 1) -> None:
        super().__init__()
        self.inputs = inputs if inputs is not None else ImageInput(target=LITE_NORMALISATION)
        blocks: OrderedDict[str, nn.Module] = OrderedDict(stem=SameConvBN(3, STEM, 3, stride=2))
        channels = {"stem": STEM}
        c_in = STEM
        for t, k, s, c, n in STAGES:
            for i in range(n):  # only the first block of a stage strides
                name = f"block{len(blocks)}"
                blocks[name] = MBConv(c_in, c, k, s if i == 0 else 1, t)
                channels[name] = c_in = c
        blocks["last"] = SameConvBN(c_in, LAST, 1)
        channels["last"] = LAST
        self.features = nn.Sequential(blocks)
        self.taps, width = block_taps(channels, pooled_blocks, pool_grid)  # ("last",) unless `pooled_blocks`
        self.pool_grid = pool_grid
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_outputs)
        self.frozen = False  # set by the builder's `freeze`: the features also stay in eval mode
        for m in self.modules():  # as the reference: He init (fan out) for convs
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        bound = 1 / math.sqrt(width)
        nn.init.uniform_(self.head.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_outputs)
        z = pooled_features(self.features, self.inputs(x), self.taps, self.pool_grid)  # (B, 1280), or the taps' features
        return self.head(self.drop(z))

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics too
            self.features.eval()
        return self


_TOP = {"_conv_stem": "features.stem.conv", "_bn0": "features.stem.bn", "_conv_head": "features.last.conv",
        "_bn1": "features.last.bn", "_fc": "head"}
_BLOCK = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
          "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}


def packaged_key(key: str) -> str:
    """The packaged (efficientnet_pytorch-style) tensor name -> this module's name.

        _conv_stem.weight                 -> features.stem.conv.weight
        _blocks.0._depthwise_conv.weight  -> features.block1.depthwise.conv.weight
        _blocks.5._bn0.running_var        -> features.block6.expand.bn.running_var
        _conv_head.weight, _bn1.*         -> features.last.conv.weight, features.last.bn.*
        _fc.*                             -> head.*

    Raises:
        KeyError: a name that is not part of EfficientNet-Lite0.
    """
    parts = key.split(".")
    if len(parts) == 2 and parts[0] in _TOP:
        return f"{_TOP[parts[0]]}.{parts[1]}"
    blocks = sum(n for *_, n in STAGES)  # 16
    if len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit() and int(parts[1]) < blocks \
            and parts[2] in _BLOCK and not (parts[1] == "0" and parts[2] in ("_expand_conv", "_bn0")):
        return f"features.block{int(parts[1]) + 1}.{_BLOCK[parts[2]]}.{parts[3]}"
    raise KeyError(key)


def build_efficientnet_lite0(cfg: EfficientNetLite0Config, info: DataInfo) -> EfficientNetLite0:
    """EfficientNet-Lite0 for this image data: ImageNet weights when `cfg.pretrained`, a new head for its classes.

    Raises:
        ConfigError: not image data, `num_classes` disagreeing with the data, the weights package missing.
    """
    num_outputs = check_image_data(cfg, info)
    model = EfficientNetLite0(num_outputs, cfg.dropout, ImageInput.for_data(info, cfg.input_size, LITE_NORMALISATION),
                              tuple(cfg.pooled_blocks), cfg.pool_grid)
    return prepare_backbone(model, cfg, WEIGHTS, packaged_key)  # type: ignore[return-value]


def efficientnet_lite0(pretrained: bool = True, num_classes: int = IMAGENET_CLASSES,
                       freeze: bool = False) -> EfficientNetLite0:
    """EfficientNet-Lite0 for ImageNet-normalised images (B, 3, H, W), as `imagenet_eval` makes them.

    Example:
        >>> model = efficientnet_lite0().eval()
        >>> model(imagenet_eval("photo.jpg")[None]).argmax(-1)  # an ImageNet class index
    """
    info = DataInfo("classification", "image", (3, 224, 224), num_classes, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return build_efficientnet_lite0(EfficientNetLite0Config(pretrained=pretrained, freeze=freeze), info)
