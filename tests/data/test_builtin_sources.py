"""Built-in sources: digits, xor, sklearn tables; deterministic splits and augmentation."""

from __future__ import annotations

import torch

from ember.config import load
from ember.data import build
from ember.data.config import AugmentConfig, DigitsConfig, TabularConfig
from ember.data.images import make_augment


def test_digits_splits_are_deterministic_and_disjoint() -> None:
    cfg = DigitsConfig()
    a, b = build(cfg, 0), build(cfg, 0)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert sum(a.sizes().values()) == 1797
    assert a.info.input_shape == (1, 8, 8) and a.info.num_outputs == 10
    c = build(cfg, 1)
    assert not torch.equal(a.train.y, c.train.y)
    # normalised with train statistics
    assert abs(float(a.train.x.mean())) < 1e-4
    assert abs(float(a.train.x.std()) - 1) < 1e-3


def test_xor_table() -> None:
    bundle = build(load("xor-mlp").data, 0)
    assert bundle.train.x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert bundle.train.y.flatten().tolist() == [0, 1, 1, 0]


def test_tabular_sources() -> None:
    for name, (features, classes) in {"iris": (4, 3), "wine": (13, 3), "breast_cancer": (30, 2)}.items():
        bundle = build(TabularConfig(name=name), 0)
        assert bundle.info.input_shape == (features,)
        assert bundle.info.num_outputs == classes
        assert len(bundle.info.feature_names) == features


def test_limit() -> None:
    assert len(build(DigitsConfig(limit=100), 0).train) == 100


def test_augmentation_is_a_function_of_seed_epoch_index() -> None:
    aug = make_augment(AugmentConfig(shift=2, hflip=True), seed=5)
    assert aug is not None
    x = torch.arange(2 * 64, dtype=torch.float32).view(2, 1, 8, 8)
    idx = torch.tensor([10, 11])
    one = aug(x, idx, 3)
    assert torch.equal(one, aug(x, idx, 3))
    # the same sample gets the same transform whatever batch it is in
    alone = aug(x[1:], idx[1:], 3)
    assert torch.equal(one[1:], alone)
    assert not torch.equal(aug(x, idx, 4), one) or not torch.equal(aug(x, idx, 5), one)
    assert one.shape == x.shape
    assert make_augment(AugmentConfig(), seed=0) is None
