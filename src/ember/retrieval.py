"""Top-k ranking metrics over a whole catalogue: Recall@k, NDCG@k and HitRate@k.

A ranking target is a dense matrix with one row per user and one column per candidate item:
`1` marks an item the user went on to interact with (relevant), `-1` an item to leave out of
the ranking (already seen in training), `0` any other item. Scores of left-out items are set
to -inf before the top k are taken, so every metric is computed "over all items not yet seen".

For one user with R relevant items and relevance `rel_i` at rank i (0-based) of the top k:

    HitRate@k = 1 if any rel_i else 0
    Recall@k  = sum(rel_i) / R
    NDCG@k    = sum(rel_i / log2(i + 2)) / sum_{i < min(R, k)} 1 / log2(i + 2)

each averaged over users that have at least one relevant item.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ranking_scores", "mask_seen", "RANKING_METRICS"]

RANKING_METRICS = ("recall", "ndcg", "hit_rate")


def mask_seen(scores: Tensor, target: Tensor) -> Tensor:
    """`scores` with the left-out items (target < 0) set to -inf."""
    return scores.float().masked_fill(target < 0, float("-inf"))


def ranking_scores(scores: Tensor, target: Tensor, k: int = 10) -> dict[str, Tensor]:
    """Per-user Recall@k, NDCG@k and HitRate@k (rows without a relevant item are dropped).

    Args:
        scores: (U, I) a score per user and item, higher is better.
        target: (U, I) 1 relevant, -1 left out of the ranking, 0 otherwise.
        k: the cut-off.

    Returns:
        {"recall": (U',), "ndcg": (U',), "hit_rate": (U',)} for the U' rows with relevant items.
    """
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and target {tuple(target.shape)} differ in shape")
    k = min(k, scores.shape[-1])
    relevant = target > 0
    n_rel = relevant.sum(-1)  # (U,)
    keep = n_rel > 0
    top = mask_seen(scores, target).topk(k, dim=-1).indices  # (U, k)
    rel = relevant.gather(-1, top).float()  # (U, k) 1 where the item at that rank is relevant
    discount = 1.0 / torch.log2(torch.arange(k, device=scores.device, dtype=torch.float32) + 2.0)  # (k,)
    dcg = (rel * discount).sum(-1)
    ideal_hits = n_rel.clamp(max=k)
    idcg = torch.cumsum(discount, 0)[(ideal_hits - 1).clamp(min=0)]
    hits = rel.sum(-1)
    return {
        "recall": (hits / n_rel.clamp(min=1).float())[keep],
        "ndcg": (dcg / idcg)[keep],
        "hit_rate": (hits > 0).float()[keep],
    }
