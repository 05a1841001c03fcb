"""LR schedules (pure functions) and the batch plan (world-size independent order)."""

from __future__ import annotations

import math

import pytest
import torch

from ember.training.batches import BatchPlan
from ember.training.config import ScheduleConfig
from ember.training.schedule import lr_at


def test_constant_with_warmup() -> None:
    cfg = ScheduleConfig(name="constant", warmup_steps=4)
    assert [lr_at(s, 100, 1.0, cfg) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_step_decay() -> None:
    cfg = ScheduleConfig(name="step", step_size=10, gamma=0.5)
    assert lr_at(9, 100, 1.0, cfg) == 1.0
    assert lr_at(10, 100, 1.0, cfg) == 0.5
    assert lr_at(25, 100, 1.0, cfg) == 0.25


def test_cosine_reaches_floor() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(9, 110, 2.0, cfg) == pytest.approx(2.0)
    assert lr_at(60, 110, 2.0, cfg) == pytest.approx(0.2 + 1.8 * 0.5)
    assert lr_at(110, 110, 2.0, cfg) == pytest.approx(0.2)


def test_onecycle_rises_then_falls() -> None:
    cfg = ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=10)
    lrs = [lr_at(s, 100, 1.0, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs.index(max(lrs)) == 25
    assert lrs[-1] < 0.01
    assert all(math.isfinite(v) and v > 0 for v in lrs)


def test_plan_covers_every_sample_once_per_epoch() -> None:
    plan = BatchPlan(103, batch_size=10, grad_accum=2, seed=1)
    order = plan.order(0)
    seen = torch.cat([m for s in range(plan.steps_per_epoch()) for m in plan.micro_batches(order, s)])
    assert sorted(seen.tolist()) == list(range(103))
    assert plan.steps_per_epoch() == 6


def test_order_depends_on_seed_and_epoch_only() -> None:
    a = BatchPlan(50, 8, seed=3)
    b = BatchPlan(50, 16, grad_accum=2, seed=3)
    assert torch.equal(a.order(2), b.order(2))
    assert not torch.equal(a.order(2), a.order(3))


@pytest.mark.parametrize("n,batch,accum", [(64, 8, 1), (103, 10, 2), (9, 4, 1), (50, 6, 3)])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_global_batch_same_for_any_world_size(n: int, batch: int, accum: int, world: int) -> None:
    """The same recipe gives each step the same samples for any number of ranks."""
    one = BatchPlan(n, batch_size=batch, grad_accum=accum, world_size=1, seed=0)
    ranks = [BatchPlan(n, batch_size=batch, grad_accum=accum, world_size=world, rank=r, seed=0)
             for r in range(world)]
    assert all(p.steps_per_epoch() == one.steps_per_epoch() for p in ranks)
    order = one.order(0)
    for step in range(one.steps_per_epoch()):
        together = torch.cat([m for p in ranks for m in p.micro_batches(order, step)])
        assert torch.equal(together, torch.cat(one.micro_batches(order, step)))
        # No rank's micro-batch is larger than the recipe's; a full step has grad_accum of them.
        for p in ranks:
            assert all(len(m) <= -(-batch // world) for m in p.micro_batches(order, step))


def test_drop_last() -> None:
    assert BatchPlan(103, 10, drop_last=True).steps_per_epoch() == 10
