"""Exceptions users can cause. The CLI turns every `EmberError` into one line and exit 2."""

from __future__ import annotations

import difflib
import sys
import warnings
from collections.abc import Iterable

__all__ = [
    "EmberError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunError",
    "NonFiniteLossError",
    "did_you_mean",
    "EmberWarning",
    "show_ember_warnings",
]


class EmberError(Exception):
    """A mistake in what the user asked for (bad config, missing file, corrupt checkpoint)."""


class ConfigError(EmberError):
    """An invalid recipe, config file or command-line override."""


class DataError(EmberError):
    """Missing, malformed or unreadable data."""


class CheckpointError(EmberError):
    """A checkpoint or weights file that is missing, corrupt, tampered with or not safetensors."""


class RunError(EmberError):
    """A run directory that does not exist or is not a run."""


class NonFiniteLossError(EmberError):
    """Training produced a NaN or infinite loss."""


class EmberWarning(UserWarning):
    """Something the user should know that did not stop the command (a skipped bad checkpoint)."""


def show_ember_warnings() -> None:
    """Print `EmberWarning`s as Ember's own `warning: ...` line (no file:line prefix).

    The CLI calls this once; library users keep Python's usual warning handling.
    """
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        if issubclass(category, EmberWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)  # type: ignore[arg-type]

    warnings.showwarning = show


def did_you_mean(value: str, valid: Iterable[str]) -> str:
    """Return `"valid: a, b, c"` plus a close-match suggestion when there is one."""
    options = sorted(valid)
    text = f"valid: {', '.join(options)}"
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text
