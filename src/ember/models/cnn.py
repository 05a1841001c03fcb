"""Convolutional network: conv blocks (Conv -> [BN] -> act -> [pool]) then an MLP head."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.common import Activation, ModelSection, Width, activation

__all__ = ["CNNConfig", "CNN", "build_cnn"]


class CNNConfig(ModelSection):
    """One conv block per entry of `channels`; `hidden` are the head's hidden widths."""

    name: Literal["cnn"] = "cnn"
    channels: list[Width] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel_size: int = Field(3, ge=1, le=11)
    pool: Literal["max", "avg", "none"] = "max"
    batch_norm: bool = True
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before each head layer")
    hidden: list[Width] = Field(default_factory=lambda: [128])
    global_pool: bool = False


class CNN(nn.Module):
    """`features` (conv blocks) then `head` (flatten + MLP); Grad-CAM hooks the last conv."""

    def __init__(self, cfg: CNNConfig, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        in_ch, h, w = input_shape
        blocks: list[nn.Module] = []
        for out_ch in cfg.channels:
            blocks.append(
                nn.Conv2d(in_ch, out_ch, cfg.kernel_size, padding=cfg.kernel_size // 2,
                          bias=not cfg.batch_norm)
            )
            if cfg.batch_norm:
                blocks.append(nn.BatchNorm2d(out_ch))
            blocks.append(activation(cfg.activation))
            # Pool only while the map is at least 2x2, so deep stacks on 8x8 digits still work.
            if cfg.pool != "none" and min(h, w) >= 2:
                blocks.append(nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = []
        if cfg.global_pool:
            head.append(nn.AdaptiveAvgPool2d(1))
            h = w = 1
        head.append(nn.Flatten())
        width = in_ch * h * w
        for hidden in cfg.hidden:
            if cfg.dropout > 0:
                head.append(nn.Dropout(cfg.dropout))
            head += [nn.Linear(width, hidden), activation(cfg.activation)]
            width = hidden
        if cfg.dropout > 0:
            head.append(nn.Dropout(cfg.dropout))
        head.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, H, W) -> (B, num_outputs)
        return self.head(self.features(x))


def build_cnn(cfg: CNNConfig, info: DataInfo) -> CNN:
    if len(info.input_shape) != 3:
        raise ConfigError(
            f"model.name: 'cnn' needs image inputs (C, H, W), but data '{info.extra.get('source', '?')}' "
            f"gives shape {list(info.input_shape)}; use model.name=mlp"
        )
    return CNN(cfg, info.input_shape, info.num_outputs)


