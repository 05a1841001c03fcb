"""Small argument parsers for the CLI (no torch import: `ember --help` stays light)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["unescape"]

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", "'": "'", '"': '"'}
_PATTERN = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|.)", re.DOTALL)


def unescape(text: str) -> str:
    """Interpret backslash escapes the way a user typing `--stop "\\n\\n"` means them.

    `\\n \\t \\r \\0 \\\\ \\' \\"`, `\\xNN` and `\\uNNNN`; any other backslash is kept as typed.
    Unlike `codecs.decode(..., "unicode_escape")`, non-ASCII text passes through unchanged.

    Example:
        >>> unescape(r"\\n\\nclass ") == "\\n\\nclass "
        True
    """
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xu" and len(code) > 1:
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, match.group(0))

    return _PATTERN.sub(one, text)


def _number_in(kind: type, low: float, high: float | None) -> Callable[[str], Any]:
    """An argparse `type` for finite numbers of `kind` in [low, high]; argparse turns its error into exit 2."""
    import argparse
    import math

    noun = "whole number" if kind is int else "number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"got {text}; give a finite number")
        if value < low or (high is not None and value > high):
            valid = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range; valid: {valid}")
        return value

    return parse


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """Whole numbers in [low, high] (an argparse `type`)."""
    return _number_in(int, low, high)


def float_in(low: float, high: float | None = None) -> Callable[[str], float]:
    """Finite numbers in [low, high] (an argparse `type`): nan and inf are refused."""
    return _number_in(float, low, high)
