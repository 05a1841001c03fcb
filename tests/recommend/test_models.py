"""mf and two_tower: the three input forms agree, features are optional, the L2 hook is the penalty."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.recommender import MFConfig, TwoTowerConfig, build_mf, build_two_tower


def _info(features: bool = True) -> DataInfo:
    extra = {"num_users": 5, "num_items": 7, "global_mean": 3.5, "source": "test"}
    if features:
        extra["user_features"] = {"names": ["a", "b"], "cardinality": [3, 2],
                                  "values": [[0, 1], [1, 0], [2, 1], [0, 0], [1, 1]]}
        extra["item_features"] = {"genres": ["x", "y", "z"], "masks": [1, 2, 4, 3, 5, 6, 0]}
    return DataInfo("regression", "interactions", (2,), 1, extra=extra)


@pytest.mark.parametrize("model", [
    build_mf(MFConfig(dim=4), _info()),
    build_mf(MFConfig(dim=4, user_features=True, item_features=True), _info()),
    build_two_tower(TwoTowerConfig(dim=4, hidden=[8], out_dim=4), _info()),
    build_two_tower(TwoTowerConfig(dim=4, hidden=[8], out_dim=4, interaction="mlp", user_features=True,
                                   item_features=True), _info()),
])
def test_all_items_equals_candidates(model: torch.nn.Module) -> None:
    model.eval()
    users = torch.tensor([0, 3, 4])
    every = model(users[:, None])  # (3, 7)
    cands = torch.tensor([[1, 6, 2], [0, 0, 5], [3, 4, 1]])
    some = model(torch.cat([users[:, None], cands], 1))  # (3, 3)
    assert every.shape == (3, 7) and some.shape == (3, 3)
    assert torch.allclose(some, every.gather(1, cands), atol=1e-6)
    one = model(torch.stack([users, cands[:, 0]], 1))  # a rating: (3, 1)
    assert one.shape == (3, 1) and torch.allclose(one[:, 0], some[:, 0], atol=1e-6)
    assert torch.allclose(model(torch.stack([users, cands[:, 0]], 1).float()), one)  # plan's float zeros


def test_mf_starts_at_the_global_mean() -> None:
    model = build_mf(MFConfig(dim=4, init_std=1e-6), _info())
    assert model(torch.tensor([[0, 1]])).item() == pytest.approx(3.5, abs=1e-4)
    assert "global_bias" not in model.state_dict()  # rebuilt from data_info, not a weight


def test_features_need_the_data_to_have_them() -> None:
    with pytest.raises(ConfigError, match="model.user_features"):
        build_mf(MFConfig(user_features=True), _info(features=False))
    with pytest.raises(ConfigError, match="needs interactions data"):
        build_mf(MFConfig(), DataInfo("classification", "image", (1, 8, 8), 10))


def test_l2_hook_equals_an_explicit_penalty() -> None:
    torch.manual_seed(0)
    penalised = build_mf(MFConfig(dim=3, l2=0.4), _info(False))
    plain = build_mf(MFConfig(dim=3), _info(False))
    plain.load_state_dict(penalised.state_dict())
    for m in (penalised, plain):
        m.user_bias.weight.data.normal_()
        m.item_bias.weight.data.copy_(penalised.item_bias.weight.data.normal_())
    plain.user_bias.weight.data.copy_(penalised.user_bias.weight.data)
    x = torch.tensor([[0, 1], [2, 3], [0, 4]])
    y = torch.tensor([[4.0], [3.0], [5.0]])
    penalised.train()
    torch.nn.functional.mse_loss(penalised(x), y).backward()
    plain.train()
    out = plain(x)
    reg = sum(t.pow(2).sum() for t in (plain.users(x[:, 0]), plain.items(x[:, 1:]), plain.user_bias(x[:, 0]),
                                       plain.item_bias(x[:, 1:])))
    (torch.nn.functional.mse_loss(out, y) + 0.4 / 2 * reg / len(x)).backward()
    for a, b in zip(penalised.parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    MFConfig(dim=4, dropout=0.5, user_features=True, item_features=True),
    TwoTowerConfig(dim=4, hidden=[8], out_dim=4, dropout=0.5, interaction="mlp", user_features=True,
                   item_features=True),
], ids=["mf", "two_tower"])
def test_model_contract(cfg: MFConfig | TwoTowerConfig, tmp_path: Path) -> None:
    from tests.models.contract import check_model_contract

    x = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [4, 6]])  # (user, item) pairs
    check_model_contract(cfg, _info(), x, (5, 1), tmp_path)
