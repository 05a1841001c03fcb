"""Model families: `build(cfg, info)` returns an `nn.Module`; `name` in the config picks one.

Adding a family: a file with its config class (a `Section` with a `name` literal) and a
`build_*(cfg, info)` function; list both here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field
from torch import nn

from ember.data.bundle import DataInfo
from ember.models.cnn import CNNConfig, build_cnn
from ember.models.common import count_parameters
from ember.models.gpt import GPTConfig, build_gpt
from ember.models.hf_encoder import HFEncoderConfig, build_hf_encoder
from ember.models.mlp import MLPConfig, build_mlp
from ember.models.rnn import RNNConfig, build_rnn
from ember.models.transformer import TransformerConfig, build_transformer

__all__ = ["ModelConfig", "MODELS", "build", "count_parameters"]

ModelConfig = Annotated[
    MLPConfig | CNNConfig | RNNConfig | TransformerConfig | GPTConfig | HFEncoderConfig,
    Field(discriminator="name"),
]

MODELS: dict[str, Callable[[Any, DataInfo], nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "rnn": build_rnn,
    "transformer": build_transformer,
    "gpt": build_gpt,
    "hf_encoder": build_hf_encoder,
}


def build(cfg: Any, info: DataInfo) -> nn.Module:
    """Build the model named by `cfg.name`, sized from `info`."""
    return MODELS[cfg.name](cfg, info)
