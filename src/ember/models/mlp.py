"""Multi-layer perceptron: Linear -> [BatchNorm] -> activation -> [Dropout], repeated."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.models.common import Activation, ModelSection, Width, activation

__all__ = ["MLPConfig", "MLP"]


class MLPConfig(ModelSection):
    """Hidden sizes and regularisation; input and output sizes come from the data."""

    name: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [64], description="hidden layer widths")
    activation: Activation = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False


class MLP(nn.Module):
    """Flattens its input, so it accepts tabular rows and images alike."""

    def __init__(self, cfg: MLPConfig, in_features: int, out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in cfg.hidden:
            layers.append(nn.Linear(width, h))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(cfg.activation))
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, *input_shape) -> (B, out_features)
        return self.net(x)


def build_mlp(cfg: MLPConfig, info: DataInfo) -> MLP:
    return MLP(cfg, math.prod(info.input_shape), info.num_outputs)


