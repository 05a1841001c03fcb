"""Recommenders over (user, item) indices: biased matrix factorisation and a two-tower / NCF model.

Both take `x` as integer indices and return one score per candidate:

    x (B, 1)      user                   -> (B, items)  every item of the catalogue
    x (B, 1 + C)  user, C candidate items -> (B, C)      e.g. the rating of one item (C = 1), or a
                                                          positive and its sampled negatives

Matrix factorisation (Koren, Bell & Volinsky 2009): score = mu + b_u + b_i + p_u . q_i.
Two-tower: each side maps [its id embedding, its features] through an MLP to a vector; the score
is their dot product ("dot") or, as in neural collaborative filtering (He et al. 2017), an MLP
over both vectors ("mlp"). User features (age band, gender, occupation) and item genres come
from the data description when the source has them (MovieLens does).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.common import MAX_WIDTH, Width
from ember.section import Section

__all__ = ["MFConfig", "TwoTowerConfig", "MatrixFactorization", "TwoTower", "build_mf", "build_two_tower"]


class MFConfig(Section):
    """Biased matrix factorisation; features add their embeddings to the user / item vectors."""

    name: Literal["mf"] = "mf"
    dim: int = Field(32, ge=1, le=4096, description="latent factors per user and item")
    init_std: float = Field(0.05, gt=0, description="std of the initial factors")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the factors while training")
    l2: float = Field(0.0, ge=0, description="L2 penalty on the factors and biases each rating uses")
    user_features: bool = Field(False, description="add age band, gender, occupation embeddings")
    item_features: bool = Field(False, description="add the mean of the item's genre embeddings")


class TwoTowerConfig(Section):
    """A user tower and an item tower (MLPs over id embedding + features), dot or NCF-MLP on top."""

    name: Literal["two_tower"] = "two_tower"
    dim: int = Field(64, ge=1, le=4096, description="id embedding width")
    hidden: list[Width] = Field(default_factory=lambda: [128], description="tower MLP widths")
    out_dim: int = Field(64, ge=1, le=MAX_WIDTH, description="width of each tower's output")
    interaction: Literal["dot", "mlp"] = Field("dot", description="dot: two-tower retrieval; mlp: NCF")
    dropout: float = Field(0.0, ge=0, lt=1)
    user_features: bool = False
    item_features: bool = False


class _Side(nn.Module):
    """Id embeddings of one side (users or items), plus its feature embeddings when asked for."""

    def __init__(self, count: int, dim: int, info: DataInfo, side: str, features: bool, init_std: float) -> None:
        super().__init__()
        self.ids = nn.Embedding(count, dim)
        nn.init.normal_(self.ids.weight, std=init_std)
        self.categorical = nn.ModuleList()
        self.genres: nn.Parameter | None = None
        if not features:
            return
        spec = info.extra.get(f"{side}_features")
        if not spec:
            raise ConfigError(f"model.{side}_features: data '{info.extra.get('source', '?')}' has no {side} "
                              f"features; set model.{side}_features=false")
        if side == "user":
            values = torch.tensor(spec["values"], dtype=torch.long)  # (users, F)
            self.register_buffer("feature_ids", values, persistent=False)  # data, rebuilt from data_info
            for card in spec["cardinality"]:
                emb = nn.Embedding(int(card), dim)
                nn.init.normal_(emb.weight, std=init_std)
                self.categorical.append(emb)
        else:
            masks = torch.tensor(spec["masks"], dtype=torch.long)  # (items,) genre bit masks
            bits = (masks[:, None] >> torch.arange(len(spec["genres"]))) & 1  # (items, G)
            multi_hot = bits.float() / bits.sum(1, keepdim=True).clamp(min=1)
            self.register_buffer("multi_hot", multi_hot, persistent=False)
            self.genres = nn.Parameter(torch.randn(len(spec["genres"]), dim) * init_std)

    def forward(self, idx: Tensor) -> Tensor:  # idx: (...) -> (..., dim)
        out = self.ids(idx)
        for f, emb in enumerate(self.categorical):
            out = out + emb(self.feature_ids[idx, f])
        if self.genres is not None:
            out = out + self.multi_hot[idx] @ self.genres
        return out

    def all(self) -> Tensor:  # (count, dim)
        return self.forward(torch.arange(self.ids.num_embeddings, device=self.ids.weight.device))


def _penalize(t: Tensor, l2: float) -> Tensor:
    """`t` unchanged, with the gradient of `l2 / 2 * ||t||^2 / rows` added in backward.

    This is the per-rating L2 of Koren et al.: each factor is shrunk in proportion to how often
    it is used. The task owns the loss, so the penalty enters as a gradient hook; dividing by the
    batch's rows matches the loss, a mean over the batch.
    """
    if l2 > 0 and t.requires_grad:
        scale = l2 / t.shape[0]
        frozen = t.detach()
        t.register_hook(lambda g: g + scale * frozen)
    return t


def _split(x: Tensor) -> tuple[Tensor, Tensor | None]:
    x = x.long()  # plan and export may hand float zeros
    return x[:, 0], (x[:, 1:] if x.shape[1] > 1 else None)


class MatrixFactorization(nn.Module):
    """score(u, i) = mu + b_u + b_i + p_u . q_i."""

    def __init__(self, cfg: MFConfig, num_users: int, num_items: int, info: DataInfo) -> None:
        super().__init__()
        self.users = _Side(num_users, cfg.dim, info, "user", cfg.user_features, cfg.init_std)
        self.items = _Side(num_items, cfg.dim, info, "item", cfg.item_features, cfg.init_std)
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        # The training mean rating (0 for ranking, where only differences matter), held fixed:
        # weight decay must pull the factors and biases toward it, not the mean toward zero.
        self.register_buffer("global_bias", torch.tensor(float(info.extra.get("global_mean", 0.0))),
                             persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.l2 = cfg.l2

    def forward(self, x: Tensor) -> Tensor:
        users, items = _split(x)
        l2 = self.l2 if self.training else 0.0
        p = _penalize(self.dropout(self.users(users)), l2)  # (B, d)
        base = self.global_bias + _penalize(self.user_bias(users), l2)  # (B, 1)
        if items is None:  # every item
            return base + p @ self.items.all().T + self.item_bias.weight.T  # (B, I)
        q = _penalize(self.dropout(self.items(items)), l2)  # (B, C, d)
        return base + (p[:, None, :] * q).sum(-1) + _penalize(self.item_bias(items), l2)[..., 0]  # (B, C)


def _mlp(width: int, hidden: list[int], out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class TwoTower(nn.Module):
    """Towers map users and items to vectors; the score is their dot product or an NCF MLP over both."""

    def __init__(self, cfg: TwoTowerConfig, num_users: int, num_items: int, info: DataInfo) -> None:
        super().__init__()
        self.users = _Side(num_users, cfg.dim, info, "user", cfg.user_features, 0.1)
        self.items = _Side(num_items, cfg.dim, info, "item", cfg.item_features, 0.1)
        self.user_tower = _mlp(cfg.dim, cfg.hidden, cfg.out_dim, cfg.dropout)
        self.item_tower = _mlp(cfg.dim, cfg.hidden, cfg.out_dim, cfg.dropout)
        self.item_bias = nn.Embedding(num_items, 1)  # popularity, which a dot product cannot hold alone
        nn.init.zeros_(self.item_bias.weight)
        self.register_buffer("global_bias", torch.tensor(float(info.extra.get("global_mean", 0.0))),
                             persistent=False)
        self.interaction = cfg.interaction
        self.scorer = _mlp(2 * cfg.out_dim, [cfg.out_dim], 1, cfg.dropout) if cfg.interaction == "mlp" else None

    def _score(self, u: Tensor, v: Tensor) -> Tensor:  # u: (B, 1, D), v: (B or 1, C, D) -> (B, C)
        if self.scorer is None:
            return (u * v).sum(-1)
        u, v = torch.broadcast_tensors(u, v)
        return self.scorer(torch.cat([u, v], dim=-1))[..., 0]

    def forward(self, x: Tensor) -> Tensor:
        users, items = _split(x)
        u = self.user_tower(self.users(users))[:, None, :]  # (B, 1, D)
        if items is None:
            v = self.item_tower(self.items.all())[None]  # (1, I, D)
            bias = self.item_bias.weight.T  # (1, I)
        elif items.numel() > self.items.ids.num_embeddings:
            # More candidates than items (sampled negatives): run the tower once per item, then gather.
            v = self.item_tower(self.items.all())[items]  # (B, C, D)
            bias = self.item_bias(items)[..., 0]  # (B, C)
        else:
            v = self.item_tower(self.items(items))  # (B, C, D)
            bias = self.item_bias(items)[..., 0]  # (B, C)
        return self.global_bias + self._score(u, v) + bias


def _sizes(info: DataInfo, family: str) -> tuple[int, int]:
    if info.input_kind != "interactions":
        raise ConfigError(f"model.name: '{family}' needs interactions data (data.name=movielens or "
                          f"interactions_csv), but the data gives {info.input_kind} inputs")
    return int(info.extra["num_users"]), int(info.extra["num_items"])


def build_mf(cfg: MFConfig, info: DataInfo) -> MatrixFactorization:
    return MatrixFactorization(cfg, *_sizes(info, "mf"), info)


def build_two_tower(cfg: TwoTowerConfig, info: DataInfo) -> TwoTower:
    return TwoTower(cfg, *_sizes(info, "two_tower"), info)

