"""`train.privacy`: differentially private training (DP-SGD through Opacus)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ember.section import Section

__all__ = ["PrivacyConfig"]


class PrivacyConfig(Section):
    """DP-SGD: per-sample gradients clipped to `max_grad_norm`, Gaussian noise added each step.

    Give either `target_epsilon` (the noise multiplier that spends exactly this budget over
    the run is computed) or a fixed `noise_multiplier`. `delta` defaults to 1/N_train.
    `fixed` is written by Ember: the layers Opacus's `ModuleValidator.fix` replaced (e.g.
    BatchNorm -> GroupNorm), so that the run's model can be rebuilt from its config.
    """

    target_epsilon: float | None = Field(None, ge=0.01, le=1000, description="the budget the run spends in total, 0.01..1000 (below 0.01 no noise level reaches it in float arithmetic)")
    noise_multiplier: float | None = Field(None, ge=0, description="fixed noise std / max_grad_norm")
    delta: float | None = Field(None, gt=0, lt=1, description="default: 1 / number of training samples")
    max_grad_norm: float = Field(1.0, gt=0, description="per-sample gradient clipping bound")
    accountant: Literal["rdp", "prv"] = "prv"
    poisson: bool = Field(True, description="Poisson sampling (what the accountant assumes); false: shuffled "
                                            "fixed-size batches, with approximate accounting")
    fixed: list[str] = Field(default_factory=list, description="written by Ember: layers replaced by fix()")

    @model_validator(mode="after")
    def _check(self) -> PrivacyConfig:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError("give exactly one of target_epsilon and noise_multiplier")
        return self
