"""Recall@k, NDCG@k and HitRate@k on hand-computed cases, and against torchmetrics' retrieval metrics."""

from __future__ import annotations

import math

import pytest
import torch
import torchmetrics

from ember.retrieval import ranking_scores
from ember.task_metrics import TopKMetrics


def test_hand_computed_single_relevant() -> None:
    # 5 items; user 0's relevant item ranks 2nd (0-based 1) among unseen, user 1's ranks 4th,
    # user 2's item is beaten by a seen item that must not count.
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.3],
                           [0.5, 0.4, 0.3, 0.2, 0.1],
                           [0.1, 0.9, 0.8, 0.0, 0.0]])
    target = torch.tensor([[0, 1, 0, 0, 0],
                           [0, 0, 0, 1, 0],
                           [0, -1, 1, 0, 0]], dtype=torch.int8)
    out = ranking_scores(scores, target, k=2)
    # user 0: rank 1 -> hit, dcg 1/log2(3); user 1: rank 3 -> miss; user 2: seen item 1 removed, rank 0.
    assert out["hit_rate"].tolist() == [1.0, 0.0, 1.0]
    assert out["recall"].tolist() == [1.0, 0.0, 1.0]
    assert out["ndcg"] == pytest.approx(torch.tensor([1 / math.log2(3), 0.0, 1.0]))


def test_hand_computed_several_relevant() -> None:
    # Relevant items at ranks 0 and 2 of the top 3; 3 relevant in all.
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    target = torch.tensor([[1, 0, 1, 0, 1]], dtype=torch.int8)
    out = ranking_scores(scores, target, k=3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["recall"].item() == pytest.approx(2 / 3)
    assert out["hit_rate"].item() == 1.0
    assert out["ndcg"].item() == pytest.approx(dcg / idcg)


def test_users_without_relevant_items_are_not_counted() -> None:
    scores = torch.rand(2, 4)
    target = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.int8)
    assert len(ranking_scores(scores, target, k=2)["ndcg"]) == 1


def test_matches_torchmetrics_retrieval() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 30, generator=gen)
    target = (torch.rand(6, 30, generator=gen) < 0.15).to(torch.int8)
    target[:, 0] = 1  # every user has a relevant item
    ours = ranking_scores(scores, target, k=10)
    indexes = torch.arange(6)[:, None].expand(-1, 30)
    flat = (scores.flatten(), target.flatten().bool(), indexes.flatten())
    ndcg = torchmetrics.retrieval.RetrievalNormalizedDCG(top_k=10)(*flat)
    recall = torchmetrics.retrieval.RetrievalRecall(top_k=10)(*flat)
    hit = torchmetrics.retrieval.RetrievalHitRate(top_k=10)(*flat)
    assert ours["ndcg"].mean().item() == pytest.approx(ndcg.item(), abs=1e-5)
    assert ours["recall"].mean().item() == pytest.approx(recall.item(), abs=1e-5)
    assert ours["hit_rate"].mean().item() == pytest.approx(hit.item(), abs=1e-5)


def test_metric_accumulates_over_batches() -> None:
    scores = torch.rand(8, 12)
    target = torch.zeros(8, 12, dtype=torch.int8)
    target[torch.arange(8), torch.arange(8)] = 1
    whole = ranking_scores(scores, target, 5)["ndcg"].mean()
    metric = TopKMetrics("ndcg", 5)
    metric.update(scores[:3], target[:3])
    metric.update(scores[3:], target[3:])
    assert metric.compute().item() == pytest.approx(whole.item())
    with pytest.raises(ValueError, match="unknown ranking metric"):
        TopKMetrics("map")
