"""Model families: `build(cfg, info)` returns an `nn.Module`; `name` in the config picks one.

Adding a family: a file with its config class (a `Section` with a `name` literal) and a
`build_*(cfg, info)` function; list both here. A user's own model comes in by name through
`register_model` or an `ember.models` entry point (see `ember.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field
from torch import nn

from ember import plugins
from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.cnn import CNNConfig, build_cnn
from ember.models.common import ModelSection, count_parameters
from ember.models.efficientnet import EfficientNetLite0Config, build_efficientnet_lite0
from ember.models.gpt import GPTConfig, build_gpt
from ember.models.hf_encoder import HFEncoderConfig, build_hf_encoder
from ember.models.llama import LlamaConfig, build_llama
from ember.models.mlp import MLPConfig, build_mlp
from ember.models.mobilenet import MobileNetV2Config, build_mobilenet_v2
from ember.models.recommender import MFConfig, TwoTowerConfig, build_mf, build_two_tower
from ember.models.rnn import RNNConfig, build_rnn
from ember.models.transformer import TransformerConfig, build_transformer
from ember.section import Section

__all__ = ["ModelConfig", "MODELS", "build", "count_parameters", "register_model", "ObjectModelConfig"]

class ObjectModelConfig(ModelSection):
    """A model passed to `ember.train(model=...)` as an object: recorded, never rebuilt from here.

    As a `ModelSection` it takes `init_from` and `lora` like the built-in families."""

    name: Literal["object"] = "object"
    class_name: str = Field("", description="the module's class, for the record (never imported)")


ModelConfig = Annotated[
    MLPConfig | CNNConfig | RNNConfig | TransformerConfig | GPTConfig | LlamaConfig | HFEncoderConfig
    | ObjectModelConfig | MFConfig | TwoTowerConfig | MobileNetV2Config | EfficientNetLite0Config,
    Field(discriminator="name"),
]

MODELS: dict[str, Callable[[Any, DataInfo], nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "rnn": build_rnn,
    "transformer": build_transformer,
    "gpt": build_gpt,
    "llama": build_llama,
    "hf_encoder": build_hf_encoder,
    "mf": build_mf,
    "two_tower": build_two_tower,
    "mobilenet_v2": build_mobilenet_v2,
    "efficientnet_lite0": build_efficientnet_lite0,
}


def _build_object(cfg: ObjectModelConfig, info: DataInfo) -> nn.Module:
    raise ConfigError(f"this run's model ({cfg.class_name or 'an nn.Module'}) was passed to ember.train as an "
                      "object; reopen it with ember.load_run(path, model=<the same architecture>)")


MODELS["object"] = _build_object


def register_model(name: str, build_fn: Callable[[Any, DataInfo], nn.Module],
                   config_cls: type[Section] | None = None) -> None:
    """Make `model.name: <name>` in a recipe build `build_fn(cfg, info)` in this process.

    Args:
        name: the name recipes use; built-in names are refused.
        build_fn: `build_fn(cfg, info) -> nn.Module`; `info.input_shape` and
            `info.num_outputs` size it from the data.
        config_cls: an `ember.Section` subclass whose fields the recipe's `model:` section may
            set (a `name` field is added); None when the model has no options.

    Example:
        >>> class TinyConfig(ember.Section):
        ...     width: int = 16
        >>> ember.register_model("tiny", lambda cfg, info: TinyNet(info, cfg.width), TinyConfig)
    """
    plugins.register("model", name, build_fn, config_cls, reserved=MODELS)


def build(cfg: Any, info: DataInfo) -> nn.Module:
    """Build the model named by `cfg.name` (built-in or plug-in), sized from `info`."""
    if cfg.name in MODELS:
        return MODELS[cfg.name](cfg, info)
    plugin = plugins.lookup("model", cfg.name)
    if plugin is None:
        raise ConfigError(plugins.missing_message("model", cfg.name, None))
    return plugin.target(cfg, info)
