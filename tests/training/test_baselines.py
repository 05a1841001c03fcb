"""Baselines are fitted once per dataset in a process: the memo is keyed by what they read."""

from __future__ import annotations

import pytest
import torch

from ember.data.bundle import ArrayDataset, DataBundle, DataInfo
from ember.tasks import for_info
from ember.training import baselines


def _bundle(flip: bool = False) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long()
    if flip:
        y = 1 - y
    info = DataInfo(task="classification", input_kind="tabular", input_shape=(4,), num_outputs=2,
                    class_names=("a", "b"))
    split = [ArrayDataset(x[i:i + 40], y[i:i + 40]) for i in (0, 40, 80)]
    return DataBundle(*split, info=info)


def test_same_data_is_fitted_once_and_changed_data_again(monkeypatch: pytest.MonkeyPatch) -> None:
    baselines._MEMO.clear()
    fits: list[int] = []
    real = baselines._compute
    monkeypatch.setattr(baselines, "_compute", lambda b, t: fits.append(1) or real(b, t))
    task = for_info(_bundle().info)
    first = baselines.compute_baselines(_bundle(), task)
    assert first["logreg"]["test"]["accuracy"] > 0.9
    first["logreg"]["test"]["accuracy"] = -1.0  # the caller's copy: the memo keeps its own
    again = baselines.compute_baselines(_bundle(), task)
    assert len(fits) == 1 and again["logreg"]["test"]["accuracy"] > 0.9
    flipped = baselines.compute_baselines(_bundle(flip=True), task)
    assert len(fits) == 2 and flipped["logreg"]["test"]["accuracy"] > 0.9
    assert len(baselines._MEMO) == 2
