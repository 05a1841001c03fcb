"""Ember: define, train, evaluate, compress, explain, export, serve and scale out networks.

    >>> import ember
    >>> run = ember.train("digits-cnn", ["train.epochs=1"], quiet=True)
    >>> ember.evaluate(run.path)["accuracy"] > 0.5
    True
"""

from ember.api import evaluate, load_config, load_run, open_run, predict, report, train
from ember.errors import CheckpointError, ConfigError, DataError, EmberError, RunError

__all__ = [
    "load_config",
    "train",
    "evaluate",
    "predict",
    "open_run",
    "load_run",
    "report",
    "explain",
    "EmberError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunError",
]
__version__ = "0.1.0"


def explain(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """`ember.attribution.explain` (imported lazily: captum, shap and lime are optional)."""
    from ember.attribution import explain as _explain

    return _explain(*args, **kwargs)
