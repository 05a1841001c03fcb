"""Ember: define, train, evaluate, compress, explain, export, serve and scale out networks.

    >>> import ember
    >>> run = ember.train("digits-cnn", ["train.epochs=1"], quiet=True)
    >>> ember.evaluate(run.path)["accuracy"] > 0.5
    True

The public names load on first use (`ember.train` imports torch; `import ember` and
`ember --help` do not).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ember.errors import CheckpointError, ConfigError, DataError, EmberError, RunError

__version__ = "0.2.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "load_config": "ember.api",
    "train": "ember.api",
    "evaluate": "ember.api",
    "predict": "ember.api",
    "report": "ember.api",
    "generate": "ember.generation",
    "chat": "ember.chat_session",
    "chat_stream": "ember.chat_session",
    "open_run": "ember.runs",
    "load_run": "ember.loading",
    "LoadedRun": "ember.loading",
    "register_model": "ember.models",
    "register_data": "ember.data",
    "register_callback": "ember.training.callbacks",
    "Callback": "ember.training.callbacks",
    "FitState": "ember.training.callbacks",
    "StopTraining": "ember.training.callbacks",
    "CallbackError": "ember.training.callbacks",
    "ModelPlugin": "ember.plugins",
    "DataPlugin": "ember.plugins",
    "Section": "ember.section",
    "DataBundle": "ember.data.bundle",
    "DataInfo": "ember.data.bundle",
    "data_bundle": "ember.data.objects",
    "TensorBoardLogger": "ember.training.loggers",
    "MLflowLogger": "ember.training.loggers",
}

__all__ = [
    "load_config", "train", "evaluate", "predict", "report", "generate", "chat", "chat_stream", "open_run", "load_run", "LoadedRun",
    "register_model", "register_data", "register_callback", "Callback", "FitState", "StopTraining",
    "CallbackError", "ModelPlugin", "DataPlugin", "Section", "DataBundle", "DataInfo", "data_bundle",
    "TensorBoardLogger", "MLflowLogger", "explain", "tune", "EmberError", "ConfigError", "DataError",
    "CheckpointError", "RunError", "__version__",
]


def __getattr__(name: str) -> Any:
    if name in ("explain", "tune"):  # callable packages: ember.explain(run_dir, ...), ember.tune(...)
        return import_module(f"ember.{name}")
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'ember' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from ember.api import evaluate, load_config, predict, report, train
    from ember.chat_session import chat, chat_stream
    from ember.data import register_data
    from ember.data.bundle import DataBundle, DataInfo
    from ember.data.objects import data_bundle
    from ember.generation import generate
    from ember.loading import LoadedRun, load_run
    from ember.models import register_model
    from ember.plugins import DataPlugin, ModelPlugin
    from ember.runs import open_run
    from ember.section import Section
    from ember.training.callbacks import (
        Callback,
        CallbackError,
        FitState,
        StopTraining,
        register_callback,
    )
    from ember.training.loggers import MLflowLogger, TensorBoardLogger
