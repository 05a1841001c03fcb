"""How figures look in tables (terminal and HTML alike). Imports nothing heavy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["format_cell", "format_rate"]


def format_cell(value: Any) -> str:
    """A figure as a table shows it: `-` for none, thousands separators, 4 decimals."""
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def format_rate(per_second: float) -> str:
    """A throughput: whole numbers from 10 up, two significant digits below (a 135M-parameter
    model trains at 0.2 samples/s on two cores, which `:.0f` would print as 0)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


Progress = Callable[[str], None]


def stderr_progress(tool: str) -> Progress:
    """A progress printer for a CLI tool: `[ember] TOOL: message` lines on stderr, flushed."""

    def say(message: str) -> None:
        print(f"[ember] {tool}: {message}", file=sys.stderr, flush=True)

    return say


def silent(_: str) -> None:
    """The default progress printer of the Python API: says nothing."""
