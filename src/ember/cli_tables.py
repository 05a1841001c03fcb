"""Tables printed by the CLI (rich)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ember.errors import RunError
from ember.runs import Run

__all__ = ["print_summary", "print_metrics", "print_runs", "scalar_metrics"]


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def print_summary(summary: dict[str, Any], run: Run) -> None:
    """Per-split metrics, then timing and size, after training."""
    console = Console()
    splits = [s for s in ("train", "val", "test") if s in summary]
    names = sorted({k for s in splits for k in scalar_metrics(summary[s])}, key=lambda k: (k != "loss", k))
    table = Table(title=f"{summary['recipe']}: results")
    table.add_column("split")
    for n in names:
        table.add_column(n, justify="right")
    for s in splits:
        m = scalar_metrics(summary[s])
        table.add_row(s, *(f"{m[n]:.4f}" if n in m else "-" for n in names))
    console.print(table)
    console.print(
        f"params {summary['params']:,} | steps {summary['steps']} | train {summary['train_time_s']:.1f}s | "
        f"{summary['samples_per_s']:,.0f} samples/s | wall {summary['wall_time_s']:.1f}s"
    )
    console.print(f"run: {run.path}")


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in scalar_metrics(metrics).items():
        table.add_row(k, f"{v:.4f}")
    Console().print(table)


def _run_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        try:
            s = run.read_summary()
        except RunError:
            rows.append([run.path.name, "-", "(damaged summary.json)", "-", "-", "-", "-", "-"])
            continue
        if not s:
            rows.append([run.path.name, "-", "(unfinished)", "-", "-", "-", "-", "-"])
            continue
        test = scalar_metrics(s.get("test", {}))
        metric = "accuracy" if "accuracy" in test else ("rmse" if "rmse" in test else "loss")
        rows.append([run.path.name, str(s.get("recipe", "-")), str(s.get("task", "-")), f"{s.get('params', 0):,}",
                     str(s.get("steps", "-")), metric, f"{test[metric]:.4f}" if metric in test else "-",
                     f"{s.get('train_time_s', 0):.1f}"])
    return rows


def print_runs(runs: list[Run], file: TextIO | None = None) -> None:
    """A table of runs: boxed on a terminal; piped, one aligned line per run (no wrapping)."""
    out = file or sys.stdout
    header = ["run", "recipe", "task", "params", "steps", "test metric", "value", "train s"]
    rows = _run_rows(runs)
    if not out.isatty():
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
        return
    table = Table(title="runs")
    for col in header:
        table.add_column(col, justify="right" if col in ("params", "steps", "value", "train s") else "left",
                         overflow="fold", no_wrap=col == "run")
    for r in rows:
        table.add_row(*r)
    Console(file=out).print(table)
