"""Update rules: trajectories equal to torch.optim's for 100 steps from the same start."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember.textbook.optim import SGD, Adam, gd_step

STEPS = 100
TRAJECTORY_TOL = 1e-10  # float64 on both sides; only the order of a few roundings differs


def _problem(seed: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Two parameters of different shapes and a smooth, non-quadratic loss over them."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    target, scale = rng.standard_normal(17), rng.uniform(0.5, 2.0, 17)
    return params, target, scale


def _loss_torch(params: list[torch.Tensor], target: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    w = torch.cat([p.reshape(-1) for p in params])
    return (torch.from_numpy(scale) * (w - torch.from_numpy(target)) ** 2).sum() + torch.sin(3 * w).sum()


def _grads_numpy(params: list[np.ndarray], target: np.ndarray, scale: np.ndarray) -> list[np.ndarray]:
    """The same loss's gradient by hand: 2 s (w − t) + 3 cos(3 w)."""
    w = np.concatenate([p.reshape(-1) for p in params])
    g = 2 * scale * (w - target) + 3 * np.cos(3 * w)
    out, at = [], 0
    for p in params:
        out.append(g[at:at + p.size].reshape(p.shape))
        at += p.size
    return out


def _run_both(make_ours, make_torch, seed: int = 0) -> float:  # noqa: ANN001
    """Train with our optimizer and torch's from the same start; the largest parameter gap."""
    params, target, scale = _problem(seed)
    theirs = [torch.tensor(p, requires_grad=True) for p in params]
    ours = make_ours(params)
    opt = make_torch(theirs)
    gap = 0.0
    for _ in range(STEPS):
        ours_step = _grads_numpy(params, target, scale)
        opt.zero_grad()
        _loss_torch(theirs, target, scale).backward()
        opt.step()
        ours(ours_step)
        gap = max(gap, *(float(np.abs(p - t.detach().numpy()).max()) for p, t in zip(params, theirs, strict=True)))
    return gap


@pytest.mark.parametrize("seed", [0, 1])
def test_gradient_descent_is_sgd_without_momentum(seed: int) -> None:
    gap = _run_both(lambda ps: (lambda g: gd_step(ps, g, 0.01)),
                    lambda ts: torch.optim.SGD(ts, lr=0.01), seed)
    assert gap <= TRAJECTORY_TOL


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.9, False, 0.0), (0.5, True, 0.0),
                                                               (0.9, False, 0.01)])
def test_sgd_momentum_trajectory_equals_torch(momentum: float, nesterov: bool, weight_decay: float) -> None:
    kw = {"lr": 0.01, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
    gap = _run_both(lambda ps: SGD(ps, **kw).step, lambda ts: torch.optim.SGD(ts, **kw))
    assert gap <= TRAJECTORY_TOL


@pytest.mark.parametrize("betas, weight_decay", [((0.9, 0.999), 0.0), ((0.8, 0.99), 0.05)])
def test_adam_trajectory_equals_torch(betas: tuple[float, float], weight_decay: float) -> None:
    kw = {"lr": 0.05, "betas": betas, "eps": 1e-8, "weight_decay": weight_decay}
    gap = _run_both(lambda ps: Adam(ps, **kw).step, lambda ts: torch.optim.Adam(ts, **kw))
    assert gap <= TRAJECTORY_TOL


def test_adamw_trajectory_equals_torch() -> None:
    kw = {"lr": 0.05, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    gap = _run_both(lambda ps: Adam(ps, decoupled=True, **kw).step, lambda ts: torch.optim.AdamW(ts, **kw))
    assert gap <= TRAJECTORY_TOL


def test_adam_bias_correction_makes_the_first_step_lr_sized() -> None:
    # With m̂ = g and v̂ = g² at t = 1, the first step is lr · sign(g) (up to ε), whatever |g|.
    p = [np.array([1.0, -2.0, 3.0])]
    Adam(p, lr=0.1, eps=0.0).step([np.array([1e-3, -50.0, 7.0])])
    np.testing.assert_allclose(p[0], [0.9, -1.9, 2.9], atol=1e-12)
