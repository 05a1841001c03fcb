"""The self-contained HTML report: every image embedded, no external links or scripts."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ember.report import plots
from ember.runs import Run, atomic_write_text

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
img{max-width:100%}.muted{color:#777}
"""


def _img(path: Path | None) -> str:
    if path is None or not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _key_figures(summary: dict[str, Any]) -> str:
    keys = ["task", "params", "steps", "epochs", "train_time_s", "wall_time_s", "samples_per_s",
            "device", "world_size", "strategy", "stopped_early"]
    rows = "".join(f"<tr><th>{k}</th><td>{_fmt(summary[k])}</td></tr>" for k in keys if k in summary)
    return f"<table>{rows}</table>"


def _metrics_table(summary: dict[str, Any]) -> str:
    splits = [s for s in ("train", "val", "test") if isinstance(summary.get(s), dict)]
    if not splits:
        return '<p class="muted">No split metrics recorded (the run may not have finished).</p>'
    names = sorted({k for s in splits for k, v in summary[s].items() if isinstance(v, (int, float))},
                   key=lambda k: (k != "loss", k))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = ""
    for s in splits:
        cells = "".join(f"<td>{_fmt(summary[s][n]) if n in summary[s] else '-'}</td>" for n in names)
        body += f"<tr><td>{s}</td>{cells}</tr>"
    return f"<table><tr><th>split</th>{head}</tr>{body}</table>"


def write_report(run: Run, examples: plots.Examples | None = None,
                 extra_sections: list[tuple[str, str]] | None = None) -> Path:
    """Write plots under `plots/` and a self-contained `report.html`; returns its path.

    `extra_sections` are (title, HTML fragment) pairs added by later capabilities
    (generated samples, forecasts, attention, compression, explanations).
    """
    summary = run.read_summary()
    rows = run.read_metrics()
    config = run.config.read_text() if run.config.exists() else ""
    title = f"{summary.get('recipe', run.path.name)} — {run.path.name}"
    sections: list[tuple[str, str]] = [
        ("Key figures", _key_figures(summary)),
        ("Metrics", _metrics_table(summary)),
    ]
    curves = _img(plots.loss_curves(rows, run.plots)) + _img(plots.metric_curves(rows, run.plots))
    sections.append(("Curves", curves or '<p class="muted">No logged points.</p>'))
    matrix = summary.get("test", {}).get("confusion_matrix") if isinstance(summary.get("test"), dict) else None
    if matrix:
        sections.append(("Confusion matrix",
                         _img(plots.confusion_matrix(matrix, summary.get("class_names", []), run.plots))))
    if examples is not None and len(examples.true):
        sections.append(("Test images", _img(plots.image_grid(examples, run.plots))))
    sections.extend(extra_sections or [])
    sections.append(("Config", f"<pre>{html.escape(config)}</pre>"))
    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{frag}" for t, frag in sections)
    description = ""
    try:
        import yaml

        description = (yaml.safe_load(config) or {}).get("description", "") if config else ""
    except Exception:  # noqa: BLE001  (a report never fails on a description)
        description = ""
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(str(description))}</p>{body}"
        f"<p class=\"muted\">summary.json: <code>{html.escape(json.dumps(sorted(summary)))}</code></p>"
        "</body></html>\n"
    )
    atomic_write_text(run.report, page)
    return run.report
