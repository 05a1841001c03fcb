"""Small pieces the model files share."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from ember.section import Section

__all__ = ["Activation", "activation", "count_parameters", "LoraSpec", "ModelSection", "Width", "MAX_WIDTH"]

# The widest layer a config may ask for (4x GPT-3's model width, and then some): a larger number is a
# typo that would try to allocate terabytes, and 0 or a negative width is never a layer.
MAX_WIDTH = 1 << 17
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]

Activation = Literal["relu", "tanh", "gelu", "sigmoid", "silu", "leaky_relu"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str) -> nn.Module:
    return _ACTIVATIONS[name]()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class LoraSpec(Section):
    """Low-rank adapters (Hu et al. 2021) on the modules whose names match `targets`.

    The matched layers' weights stay frozen; each gains B·A (rank `r`, scaled by alpha / r).
    """

    r: int = Field(8, ge=1, description="rank of the adapters")
    alpha: float = Field(16.0, gt=0, description="scale numerator: the update is B·A · alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    targets: list[str] = Field(min_length=1, description="module-name patterns (fnmatch), e.g. "
                               "'blocks.*.attn.c_attn' or '*.query'")
    also_train: list[str] = Field(default_factory=list, description="parameter-name patterns trained "
                                  "in full besides the adapters, e.g. a new classification head")


class ModelSection(Section):
    """Fields every model family shares: where its first weights come from, and adapters."""

    init_from: str | None = Field(None, description="a run directory or a .safetensors file whose "
                                  "weights initialise the model (matching names and shapes)")
    init_map: dict[str, str | None] = Field(default_factory=dict, description="source name prefix -> "
                                            "model name prefix (null drops those tensors)")
    lora: LoraSpec | None = None
