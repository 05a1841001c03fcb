"""Live progress (rich) on a terminal; plain log lines otherwise or with --quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ember.formatting import format_rate

__all__ = ["Reporter"]


class Reporter:
    """Shows training progress: a bar with loss, samples/s and ETA, or one line per log point."""

    def __init__(self, quiet: bool = False, enabled: bool = True) -> None:
        self.enabled = enabled
        self.live = enabled and not quiet and sys.stdout.isatty()
        self.console = Console(stderr=False)
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total: int, done: int, label: str) -> None:
        if not self.enabled:
            return
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[sps]} samples/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, completed=done, loss="-", sps="-")
        else:
            print(f"[ember] {label}: {total} steps (starting at {done})", flush=True)
        self._t0 = time.perf_counter()

    def step(self, step: int, total: int, loss: float | None, samples_per_s: float | None, lr: float) -> None:
        """Called every optimizer step (cheap); `loss` is given only at logging points."""
        if not self.enabled:
            return
        if self._progress is not None:
            fields: dict[str, Any] = {}
            if loss is not None:
                fields["loss"] = f"{loss:.4f}"
            if samples_per_s is not None:
                fields["sps"] = format_rate(samples_per_s)
            self._progress.update(self._task, completed=step, **fields)
        elif loss is not None:
            sps = format_rate(samples_per_s) if samples_per_s is not None else "-"
            print(f"[ember] step {step}/{total} loss {loss:.4f} lr {lr:.3g} {sps} samples/s", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(f"[ember] {text}", flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
