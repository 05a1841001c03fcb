"""The contract every model family meets (keras `run_layer_test` style), shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ember.data.bundle import DataInfo
from ember.models import build, count_parameters
from ember.weights import load_weights, save_weights


def check_model_contract(cfg: Any, info: DataInfo, x: torch.Tensor, shape: tuple[int, ...], tmp_path: Path) -> None:
    """Output shape, parameter count, safetensors round trip, train/eval mode behaviour."""
    torch.manual_seed(0)
    model = build(cfg, info)
    assert model(x).shape == shape
    assert count_parameters(model) == sum(p.numel() for p in model.parameters()) > 0
    model.eval()  # the round trip gives identical outputs in eval mode
    expected = model(x)
    save_weights(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    again = build(cfg, info).eval()
    load_weights(again, tmp_path / "m.safetensors")
    torch.testing.assert_close(again(x), expected, rtol=0, atol=0)
    if getattr(cfg, "dropout", 0) > 0:  # dropout makes train mode stochastic
        model.train()
        assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
