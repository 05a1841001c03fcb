"""Hyperparameter search with Optuna: `ember tune RECIPE --space space.yaml`, `ember.tune(...)`.

    result = ember.tune("digits-mlp", "space.yaml", trials=30, workers=2)
    result.best_config          # runs/digits-mlp-tune/best.yaml, a ready recipe

Every trial is a normal run in `runs/<study>/trial-NNNN/`. This package's top stays light
(no torch, no optuna) so that `ember --help` does not pay for them: `tune` loads the study
machinery on first call.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

__all__ = ["tune"]

if TYPE_CHECKING:
    from ember.tune.study import StudyResult


def tune(*args: Any, **kwargs: Any) -> StudyResult:
    """Run (or resume) a study; see `ember.tune.study.tune` for the arguments."""
    from ember.tune.study import tune as run_study

    return run_study(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """`ember.tune(...)` calls `tune` (the package took the function's name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> StudyResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
