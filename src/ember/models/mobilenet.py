"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

    x = ImageInput(x)                                   # (B, 3, S, S), ImageNet-normalised
    h = ReLU6(BN(Conv3x3/2(x)))                         # (B, 32, S/2, S/2), the stem
    for (t, c, n, s) in Table 2, n blocks each:         # inverted residual bottlenecks
        e = ReLU6(BN(Conv1x1(h)))                       # expand to t·C_in channels (t > 1)
        e = ReLU6(BN(DepthwiseConv3x3/s(e)))            # one 3x3 filter per channel
        p = BN(Conv1x1(e))                              # project to c channels: linear, no ReLU
        h = h + p  if s == 1 and C_in == c  else p      # residual between the thin bottlenecks
    h = ReLU6(BN(Conv1x1(h)))                           # (B, 1280, S/32, S/32)
    logits = W · Dropout(mean over H, W of h) + b       # (B, num_outputs)

With `pooled_blocks` the head reads mid-level features instead: the average-pooled outputs of
the blocks named, concatenated (for images far from ImageNet's photographs, such as 28x28 grey
garments, mid-level features transfer better than the last layer's; see docs/transfer.md).
`pool_grid: 2` averages each over the four quarters of the image instead of the whole, so the
head also sees where a feature fired (a sleeve beside the body, a heel at the back).

Width multiplier 1.0, ImageNet weights from the PyTorch (torchvision) release, converted once
by `torchvision_key` into this module's names (see `ember.models.vision` for the loading).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Literal

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

__all__ = ["MobileNetV2Config", "MobileNetV2", "InvertedResidual", "ConvBN", "build_mobilenet_v2", "mobilenet_v2",
           "torchvision_key", "SETTINGS", "WEIGHTS"]

WEIGHTS = "mobilenet_v2"  # the entry in `ember.pretrained.VISION_WEIGHTS`

# Table 2 of the paper: expansion t, output channels c, repeats n, first stride s.
SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM, LAST = 32, 1280


class MobileNetV2Config(BackboneSection):
    """MobileNetV2 at width 1.0 (3.5M parameters with the ImageNet head)."""

    name: Literal["mobilenet_v2"] = "mobilenet_v2"


class ConvBN(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, or no activation for the linear bottleneck."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
                 relu6: bool = True) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
        layers["bn"] = nn.BatchNorm2d(c_out)
        if relu6:
            layers["act"] = nn.ReLU6(inplace=True)
        super().__init__(layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3, stride) -> project (1x1, linear); residual when shapes agree."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        # t = 1 (the first block) has nothing to expand: the depthwise conv reads the input directly.
        self.expand = ConvBN(c_in, hidden, 1) if expansion != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBN(hidden, c_out, 1, relu6=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        h = self.expand(x) if self.expand is not None else x  # (B, t·C_in, H, W)
        h = self.project(self.depthwise(h))  # (B, C_out, H/s, W/s)
        return x + h if self.residual else h


class MobileNetV2(nn.Module):
    """Images (B, C, H, W) as the data gives them -> logits (B, num_outputs).

    `inputs` turns the data's images into what the ImageNet weights expect (see `ImageInput`);
    `features` is the backbone (stem, 17 bottlenecks, last 1x1 conv); `head` the classifier.
    """

    def __init__(self, num_outputs: int = 1000, dropout: float = 0.2, inputs: ImageInput | None = None,
                 pooled_blocks: tuple[str, ...] = (), pool_grid: int = 1) -> None:
        super().__init__()
        self.inputs = inputs if inputs is not None else ImageInput()
        blocks: OrderedDict[str, nn.Module] = OrderedDict(stem=ConvBN(3, STEM, 3, stride=2))
        channels = {"stem": STEM}
        c_in = STEM
        for t, c, n, s in SETTINGS:
            for i in range(n):  # only the first block of a group strides
                name = f"block{len(blocks)}"
                blocks[name] = InvertedResidual(c_in, c, s if i == 0 else 1, t)
                channels[name] = c_in = c
        blocks["last"] = ConvBN(c_in, LAST, 1)
        channels["last"] = LAST
        self.features = nn.Sequential(blocks)
        self.taps, width = block_taps(channels, pooled_blocks, pool_grid)  # ("last",) unless `pooled_blocks`
        self.pool_grid = pool_grid
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_outputs)
        self.frozen = False  # set by `freeze_backbone`: the features also stay in eval mode
        self._init_weights()

    def _init_weights(self) -> None:
        # As the reference implementation: He init (fan out) for convs, small normal for the head.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_outputs)
        z = pooled_features(self.features, self.inputs(x), self.taps, self.pool_grid)  # (B, 1280), or the taps' features
        return self.head(self.drop(z))

    def train(self, mode: bool = True) -> MobileNetV2:
        super().train(mode)
        if self.frozen:  # a frozen backbone keeps its BatchNorm statistics too
            self.features.eval()
        return self


_BLOCK = re.compile(r"features\.(\d+)\.conv\.(.+)")
_BLOCK_PARTS = {  # torchvision's `conv` Sequential, by position, for t = 1 and for t > 1
    1: {"0.0": "depthwise.conv", "0.1": "depthwise.bn", "1": "project.conv", "2": "project.bn"},
    6: {"0.0": "expand.conv", "0.1": "expand.bn", "1.0": "depthwise.conv", "1.1": "depthwise.bn",
        "2": "project.conv", "3": "project.bn"},
}


def torchvision_key(key: str) -> str:
    """torchvision's MobileNetV2 state-dict name -> this module's name.

        features.0.{0,1}.*              -> features.stem.{conv,bn}.*
        features.1.conv.0.0.weight      -> features.block1.depthwise.conv.weight   (t = 1)
        features.5.conv.1.1.running_mean -> features.block5.depthwise.bn.running_mean
        features.18.{0,1}.*             -> features.last.{conv,bn}.*
        classifier.1.*                  -> head.*

    Raises:
        KeyError: a name that is not part of torchvision's MobileNetV2.
    """
    last = 1 + sum(n for _, _, n, _ in SETTINGS)  # 18
    parts = key.split(".")
    if parts[0] == "classifier" and parts[1] == "1" and len(parts) == 3:
        return f"head.{parts[2]}"
    if parts[0] == "features" and len(parts) == 4 and parts[1] in ("0", str(last)) and parts[2] in ("0", "1"):
        where = "stem" if parts[1] == "0" else "last"
        return f"features.{where}.{('conv', 'bn')[int(parts[2])]}.{parts[3]}"
    match = _BLOCK.fullmatch(key)
    if match is not None and 1 <= int(match.group(1)) < last:
        index, rest = int(match.group(1)), match.group(2)
        module, _, tensor = rest.rpartition(".")
        table = _BLOCK_PARTS[1 if index == 1 else 6]
        if module in table:
            return f"features.block{index}.{table[module]}.{tensor}"
    raise KeyError(key)


def build_mobilenet_v2(cfg: MobileNetV2Config, info: DataInfo) -> MobileNetV2:
    """MobileNetV2 for this image data: ImageNet weights when `cfg.pretrained`, a new head for its classes.

    Raises:
        ConfigError: not image data, `num_classes` disagreeing with the data, the weights package missing.
    """
    num_outputs = check_image_data(cfg, info)
    model = MobileNetV2(num_outputs, cfg.dropout, ImageInput.for_data(info, cfg.input_size), tuple(cfg.pooled_blocks),
                        cfg.pool_grid)
    return prepare_backbone(model, cfg, WEIGHTS, torchvision_key)  # type: ignore[return-value]


def mobilenet_v2(pretrained: bool = True, num_classes: int = IMAGENET_CLASSES, freeze: bool = False) -> MobileNetV2:
    """MobileNetV2 for ImageNet-normalised images (B, 3, H, W), as `imagenet_eval` makes them.

    With 1000 classes and `pretrained` it is torchvision's ImageNet classifier; any other number
    of classes gets a new head. Images of another size are resized to 224 inside the model.

    Example:
        >>> model = mobilenet_v2().eval()
        >>> model(imagenet_eval("photo.jpg")[None]).argmax(-1)  # an ImageNet class index
    """
    info = DataInfo("classification", "image", (3, 224, 224), num_classes, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return build_mobilenet_v2(MobileNetV2Config(pretrained=pretrained, freeze=freeze), info)
