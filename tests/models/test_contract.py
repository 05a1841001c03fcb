"""One contract for every model family: shape, parameter count, save/load, train/eval mode."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ember.data.bundle import DataInfo
from ember.models import build, count_parameters
from ember.models.cnn import CNNConfig
from ember.models.efficientnet import EfficientNetLite0Config
from ember.models.mlp import MLPConfig
from ember.models.mobilenet import MobileNetV2Config
from tests.models.contract import check_model_contract

IMAGE = DataInfo("classification", "image", (1, 8, 8), 10)
TABLE = DataInfo("classification", "tabular", (4,), 3)

CASES = [
    ("mlp", MLPConfig(hidden=[16, 8], dropout=0.5, batch_norm=True), TABLE),
    ("mlp-on-images", MLPConfig(hidden=[16], dropout=0.5), IMAGE),
    ("cnn", CNNConfig(channels=[4, 8], hidden=[16], dropout=0.5), IMAGE),
    ("cnn-deep-small-input", CNNConfig(channels=[4, 4, 4, 4], hidden=[], global_pool=True), IMAGE),
    ("mobilenet_v2", MobileNetV2Config(pretrained=False, input_size=32), IMAGE),
    ("efficientnet_lite0", EfficientNetLite0Config(pretrained=False, input_size=32), IMAGE),
]


@pytest.mark.parametrize(("label", "cfg", "info"), CASES, ids=[c[0] for c in CASES])
def test_model_contract(label: str, cfg, info: DataInfo, tmp_path: Path) -> None:  # noqa: ANN001
    check_model_contract(cfg, info, torch.randn(5, *info.input_shape), (5, info.num_outputs), tmp_path)


def test_mlp_parameter_count_matches_formula() -> None:
    model = build(MLPConfig(hidden=[4], activation="tanh"), DataInfo("regression", "tabular", (2,), 1))
    assert count_parameters(model) == (2 * 4 + 4) + (4 * 1 + 1) == 17


def test_cnn_needs_images() -> None:
    from ember.errors import ConfigError

    with pytest.raises(ConfigError, match="needs image inputs"):
        build(CNNConfig(), TABLE)


def test_cnn_flattened_size() -> None:
    model = build(CNNConfig(channels=[4, 8], hidden=[]), DataInfo("classification", "image", (3, 32, 32), 10))
    assert model.head[-1].in_features == 8 * 8 * 8
    assert math.prod(model.features(torch.zeros(1, 3, 32, 32)).shape) == 512
