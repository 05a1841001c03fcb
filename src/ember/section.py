"""The base every config section derives from: strict, immutable, typed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A config section: unknown keys are errors and values can't change after validation."""

    # allow_inf_nan=False: `optim.lr=.inf` or `nan` is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)
