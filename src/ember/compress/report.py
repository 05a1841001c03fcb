"""Report section "Compression": a run's family of compressed children, as a table and a
Pareto plot of the task metric against batch-1 CPU latency.

Written as `compression/section.html` into the run (the report discovers it; the report
package does not import compress).

The family is the trained (root) run and every child compressed from it, directly or
through a chain, found beside it (see `ember.compress.record.family`). A child's report
shows the family as far as it was known when the child was written; the root's report
gains the section when the user re-renders it (`ember report ROOT`): compressing never
writes into the parent run.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ember.compress.record import family, read_record
from ember.formatting import format_cell
from ember.report.sections import figure_html, plt
from ember.runs import Run, atomic_write_text

__all__ = ["compression_section", "write_section", "family_rows", "pareto_front"]

_COLUMNS = [("params", "params"), ("size_mb", "size (MB)"), ("latency_ms_b1", "latency b1 (ms)"),
            ("throughput_b64", "throughput b64 (samples/s)")]


def _label(record: dict[str, Any]) -> str:
    """A short description of the step, e.g. 'prune structured 0.5' or 'quantize static'."""
    step = record.get("step", {})
    method = record.get("method", "?")
    if method == "prune":
        return f"prune {step.get('kind', '')} {step.get('sparsity', '')}".strip()
    if method == "quantize":
        return f"quantize {step.get('mode', '')}".strip()
    if method == "distill":
        student = record.get("details", {}).get("student", {})
        return f"distill -> {student.get('name', '?')}"
    return method


def family_rows(run_path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(metric {"name", "mode"} or None, rows) for the root and each child; a row is
    `{"run", "label", "parent", "current", <figures>}`, the root first."""
    _, children = family(run_path)
    if not children:
        return None, []
    here = run_path.resolve().name
    metric = children[-1][1].get("metric")
    root_name = children[0][1]["lineage"][0]["name"]
    # The root's figures from the most recent child that measured it (same process as that child).
    root_figures = next((rec["parent"] for _, rec in reversed(children)
                         if rec.get("parent", {}).get("run") == root_name), {})
    rows = [{**root_figures, "run": root_name, "label": "parent (trained)", "parent": "",
             "current": root_name == here}]
    for path, rec in children:
        rows.append({**rec["child"], "run": path.name, "label": _label(rec),
                     "parent": rec.get("lineage", [{}])[-1].get("name", ""), "current": path.name == here})
    return metric, rows


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[int]:
    """Indices of points no other point beats on both latency (lower) and metric."""
    front = []
    for i, (lat, val) in enumerate(points):
        dominated = any(
            (lat2 <= lat and (val2 >= val if maximize else val2 <= val)) and (lat2, val2) != (lat, val)
            for j, (lat2, val2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _fmt(value: Any) -> str:
    return html.escape(format_cell(value))


def _plot(run: Run, rows: list[dict[str, Any]], metric: str, maximize: bool) -> str:
    usable = [r for r in rows if isinstance(r.get("latency_ms_b1"), (int, float)) and metric in r]
    if len(usable) < 2:
        return ""
    points = [(float(r["latency_ms_b1"]), float(r[metric])) for r in usable]
    front = set(pareto_front(points, maximize))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (r, (x, y)) in enumerate(zip(usable, points)):
        marker = "*" if r["label"].startswith("parent") else "o"
        ax.scatter([x], [y], s=140 if marker == "*" else 60, marker=marker,
                   color="tab:red" if i in front else "tab:blue", zorder=3)
        ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    line = sorted(points[i] for i in front)
    ax.plot([p[0] for p in line], [p[1] for p in line], color="tab:red", lw=1, ls="--", label="Pareto front")
    ax.set_xlabel("latency, batch 1, CPU (ms)")
    ax.set_ylabel(f"test {metric} ({'higher' if maximize else 'lower'} is better)")
    ax.set_title("Compression: quality vs latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure_html(fig, run, "compression_pareto")


def compression_section(run: Run) -> tuple[str, str] | None:
    """("Compression", HTML) when the run has compressed children or is one; else None."""
    try:
        metric_info, rows = family_rows(run.path)
    except OSError:
        return None
    if not rows:
        return None
    metric = (metric_info or {}).get("name", "loss")
    maximize = (metric_info or {}).get("mode") == "max"
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["run", "step", "parent",
                                                           *(c[1] for c in _COLUMNS), f"test {metric}"])
    body = ""
    for r in rows:
        name = f"<b>{html.escape(r['run'])}</b>" if r["current"] else html.escape(r["run"])
        cells = "".join(f"<td>{_fmt(r.get(k))}</td>" for k, _ in _COLUMNS)
        body += (f"<tr><td>{name}</td><td>{html.escape(r['label'])}</td><td>{html.escape(r['parent'])}</td>"
                 f"{cells}<td>{_fmt(r.get(metric))}</td></tr>")
    note = ""
    record = read_record(run.path)
    if record is not None:
        change = record.get("change", {})
        parts = [f"{k} {v}" for k, v in change.items() if v is not None]
        note = f"<p>This run: {html.escape(_label(record))} of {html.escape(record.get('parent', {}).get('run', '?'))}" \
               f"; {html.escape(', '.join(parts))}.</p>"
    caption = ('<p class="muted">Latency: median of batch-1 forward passes; throughput: batch 64; CPU, '
               f"{rows[-1].get('threads', 1)} thread, measured when each child was written. Size: "
               "model.safetensors on disk. An int8 model keeps its float model's parameter count.</p>")
    table = f"<table><tr>{head}</tr>{body}</table>"
    return "Compression", note + table + caption + _plot(run, rows, metric, maximize)


def write_section(run: Run) -> bool:
    """Write (or refresh) `compression/section.html` in `run`; False when it has no family."""
    section = compression_section(run)
    if section is None:
        return False
    atomic_write_text(run.tool_dir("compression") / "section.html", section[1])
    return True
