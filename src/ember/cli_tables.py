"""Tables printed by the CLI (rich)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ember.errors import RunError
from ember.formatting import format_cell, format_rate
from ember.runs import Run, Study, read_json_object

__all__ = ["print_summary", "print_metrics", "print_runs", "print_studies", "scalar_metrics",
           "print_compression"]


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
        f"{format_rate(summary['samples_per_s'])} samples/s | wall {summary['wall_time_s']:.1f}s"
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


def ratio_words(value: Any, better: str, worse: str) -> str:
    """A parent/child ratio in words that never say "0.56x faster": below 1 it is inverted ("1.79x slower")."""
    if not isinstance(value, (int, float)) or value <= 0:
        return "-"
    if value >= 1 or better == worse:
        return f"{value:.2f}{better}"
    return f"{1 / value:.2f}{worse}"


def print_compression(record: dict[str, Any], run_path: Path | None = None) -> None:
    """Parent vs child figures of one `compression.json` as a table."""
    parent, child, change = record.get("parent", {}), record.get("child", {}), record.get("change", {})
    metric = record.get("metric", {}).get("name", "loss")
    rows = [("params", "params_ratio", ("x fewer", "x more")), ("size_mb", "size_ratio", ("x smaller", "x larger")),
            ("latency_ms_b1", "speedup_b1", ("x faster", "x slower")),
            ("throughput_b64", "throughput_ratio", ("x the throughput", "x the throughput"))]
    table = Table(title=f"{record.get('method', '?')}: {parent.get('run', '?')} -> {child.get('run', '?')}")
    for col in ("", "parent", "child", "change"):
        table.add_column(col, justify="left" if not col else "right")
    for key, ratio, unit in rows:
        value = change.get(ratio)
        table.add_row(key, format_cell(parent.get(key)), format_cell(child.get(key)), ratio_words(value, *unit))
    names = [metric] + sorted(k for k in child if k not in {metric, "run", "threads"} | {r[0] for r in rows})
    for name in names:
        if name in child or name in parent:
            delta = change.get(f"{name}_delta")
            table.add_row(name, format_cell(parent.get(name)), format_cell(child.get(name)),
                          f"{delta:+.4f}" if isinstance(delta, (int, float)) else "")
    Console().print(table)
    details = record.get("details", {})
    if details:
        shown = ", ".join(f"{k} {v}" for k, v in details.items() if isinstance(v, (int, float, str)))
        Console().print(f"{record.get('method')}: {shown}")
    where = run_path or child.get("run")
    if where:
        Console().print(f"run: {where} (parent {record.get('parent_run', '?')}); speed measured on the CPU, "
                        f"{child.get('threads', 1)} thread")


def _json_or_none(path: Path) -> dict[str, Any] | None:
    """A study file's JSON object; None when it is missing or damaged (`ember runs` lists on)."""
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except RunError:
        return None


def print_studies(studies: list[Study]) -> None:
    """One table per `ember tune` study: its trials, their state and the watched metric.

    A damaged study file (tune.json, study.json, a trial's record) is named in a line and
    shown as unknown; it never stops the listing.
    """
    for study in studies:
        settings = _json_or_none(study.settings)
        damaged = [p.name for p in (study.settings, study.record) if p.is_file() and _json_or_none(p) is None]
        settings = settings or {}
        metric = str(settings.get("metric", "val"))
        table = Table(title=f"study {study.path.name}: {settings.get('direction', '')} {metric}")
        for col in ("trial", "state", metric, "epochs", "params"):
            table.add_column(col, justify="right" if col in (metric, "epochs") else "left", overflow="fold")
        counts: dict[str, int] = {}
        for run in study.trials():
            record = _json_or_none(run.trial)
            if record is None and run.trial.is_file():
                damaged.append(f"{run.path.name}/{run.trial.name}")
            record = record or {}
            state = str(record.get("state", "unknown"))
            counts[state] = counts.get(state, 0) + 1
            value = record.get("value")
            given = record.get("params")
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in (given.items() if isinstance(given, dict) else ()))
            table.add_row(run.path.name, state, f"{value:.4f}" if isinstance(value, (int, float)) else "-",
                          str(record.get("epochs", "-")), params)
        Console().print(table)
        best = (_json_or_none(study.record) or {}).get("best")
        best = best if isinstance(best, dict) and isinstance(best.get("value"), (int, float)) else None
        shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        Console().print(f"{study.path}: {shown}" + (f"; best {best.get('run')} ({best['value']:.4f}), "
                                                     f"config {study.best}" if best else ""))
        if damaged:
            Console().print(f"[yellow]{study.path}: damaged, shown as unknown: {', '.join(damaged)}[/yellow]")
