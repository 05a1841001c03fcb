"""The privacy budget: sampling rate, the noise a target ε implies, ε spent so far.

Pure functions of the config and the training-set size, shared by training, `ember plan`
and the report, so that all three quote the same figures.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ember.errors import ConfigError
from ember.privacy.config import PrivacyConfig

__all__ = ["sample_rate", "resolve_delta", "noise_multiplier", "make_accountant", "epsilon", "budget_plan"]


@contextmanager
def quiet_accounting() -> Iterator[None]:
    """Opacus's RDP analysis warns when its best order is the largest it tries: not actionable here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def sample_rate(batch_size: int, grad_accum: int, n_train: int) -> float:
    """Chance that a sample joins a step's (logical) batch: expected batch / N."""
    return min(1.0, batch_size * grad_accum / max(n_train, 1))


def resolve_delta(pc: PrivacyConfig, n_train: int) -> float:
    """`delta`, or 1/N by default."""
    return pc.delta if pc.delta is not None else 1.0 / max(n_train, 1)


def noise_multiplier(pc: PrivacyConfig, q: float, steps: int, delta: float) -> float:
    """The fixed `noise_multiplier`, or the one that spends exactly `target_epsilon` in `steps`.

    Raises:
        ConfigError: the target cannot be reached (ε too small for these steps).
    """
    if pc.noise_multiplier is not None:
        return float(pc.noise_multiplier)
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with quiet_accounting():
            return float(get_noise_multiplier(target_epsilon=pc.target_epsilon, target_delta=delta,
                                              sample_rate=q, steps=max(steps, 1), accountant=pc.accountant))
    except ValueError as exc:
        raise ConfigError(f"train.privacy.target_epsilon: {pc.target_epsilon} cannot be reached in {steps} steps "
                          f"at sampling rate {q:.4g} ({exc}); raise it or train fewer steps") from None


def make_accountant(name: str, history: list[Any] | None = None) -> Any:
    """An Opacus accountant (`rdp` or `prv`), optionally with a saved history."""
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=name)
    if history:
        acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return acc


def epsilon(accountant: Any, delta: float) -> float:
    """ε spent so far at `delta` (0 before the first step)."""
    if not accountant.history:
        return 0.0
    with quiet_accounting():
        value = float(accountant.get_epsilon(delta=delta))
    return value if math.isfinite(value) else float("inf")


def budget_plan(pc: PrivacyConfig, batch_size: int, grad_accum: int, n_train: int, steps: int) -> dict[str, Any]:
    """What `ember plan` shows: sampling rate, δ, the noise multiplier and the ε it spends."""
    q = sample_rate(batch_size, grad_accum, n_train)
    delta = resolve_delta(pc, n_train)
    sigma = noise_multiplier(pc, q, steps, delta)
    eps = epsilon(make_accountant(pc.accountant, [(sigma, q, steps)]), delta) if sigma > 0 else float("inf")
    return {"noise_multiplier": sigma, "sample_rate": q, "delta": delta, "steps": steps, "epsilon": eps,
            "target_epsilon": pc.target_epsilon, "max_grad_norm": pc.max_grad_norm, "accountant": pc.accountant,
            "poisson": pc.poisson}
