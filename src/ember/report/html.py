"""The self-contained HTML report: every image embedded, no external links or scripts.

A report must open anywhere (an e-mail attachment, an air-gapped machine), so images are
base64 data URIs and the CSS is inline. It must also render for runs that were killed
early: missing metrics, a missing or partial summary.json all give a note, never a crash.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import yaml

from ember import safe_paths
from ember.report import plots
from ember.report.baselines import baselines_section
from ember.runs import Run, atomic_write_text
from ember.yaml_safe import load_yaml

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
img{max-width:100%}.muted{color:#777}
"""

# (summary key, label) for the key-figures table, in display order; absent keys are skipped.
_KEY_FIGURES = [
    ("task", "task"), ("params", "parameters"), ("trainable_params", "trainable parameters"),
    ("frozen_params", "frozen parameters"), ("steps", "steps"), ("epochs", "epochs"),
    ("train_time_s", "train time (s)"), ("wall_time_s", "wall time (s)"),
    ("samples_per_s", "samples/s"), ("device", "device"), ("world_size", "world size"),
    ("strategy", "strategy"), ("stopped_early", "stopped early"),
]
_SPLITS = ("train", "val", "test")


def _muted(text: str) -> str:
    return f'<p class="muted">{html.escape(text)}</p>'


def _img(path: Path | None) -> str:
    """An <img> with the PNG at `path` embedded as a data URI; empty when there is no file."""
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(safe_paths.read_bytes(path)).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _is_scalar(value: Any) -> bool:
    """A number for a table cell (bools are ints in Python, but they are flags, not metrics)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    """Escaped cell text: floats to 4 decimals (4 significant digits when tiny or huge)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # 0.0003 as 0.0003 would hide digits, 1234567.0 as 1234567.0000 adds noise.
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4f}"
        return f"{value:.4g}"
    return html.escape(str(value))


def _key_figures(summary: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{_fmt(summary[key])}</td></tr>"
                   for key, label in _KEY_FIGURES if key in summary)
    return f"<table>{rows}</table>" if rows else _muted("No summary recorded (the run may not have finished).")


def _metrics_table(summary: dict[str, Any]) -> str:
    """One row per split, one column per scalar metric (loss first); '-' where a split lacks one."""
    splits = [s for s in _SPLITS if isinstance(summary.get(s), dict)]
    if not splits:
        return _muted("No split metrics recorded (the run may not have finished).")
    names = sorted({k for s in splits for k, v in summary[s].items() if _is_scalar(v)},
                   key=lambda k: (k != "loss", k))
    if not names:
        return _muted("The summary has splits but no scalar metrics.")
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = ""
    for s in splits:
        values = summary[s]
        cells = "".join(f"<td>{_fmt(values[n]) if _is_scalar(values.get(n)) else '-'}</td>" for n in names)
        body += f"<tr><td>{s}</td>{cells}</tr>"
    return f"<table><tr><th>split</th>{head}</tr>{body}</table>"


def _confusion(summary: dict[str, Any], folder: Path) -> str | None:
    """The test confusion matrix (val when the run has no test split); None when there is none."""
    for split in ("test", "val"):
        values = summary.get(split)
        matrix = values.get("confusion_matrix") if isinstance(values, dict) else None
        if matrix:
            names = summary.get("class_names") or []
            try:
                path = plots.confusion_matrix(matrix, list(names), folder, title=f"Confusion matrix ({split})")
            except ValueError as e:  # a malformed matrix is reported, not fatal
                return _muted(f"Confusion matrix not drawn: {e}")
            return _img(path)
    return None


def _read_config(run: Run) -> tuple[str, dict[str, Any]]:
    """The config text (shown verbatim) and its parsed mapping (for recipe and description)."""
    if not run.config.is_file():
        return "", {}
    text = safe_paths.read_text(run.config, run.path)
    try:
        parsed = load_yaml(text)
    except yaml.YAMLError:  # a report never fails on a config it only displays
        parsed = None
    return text, parsed if isinstance(parsed, dict) else {}


def write_report(run: Run, examples: plots.Examples | None = None,
                 extra_sections: list[tuple[str, str]] | None = None) -> Path:
    """Write plots under `run.plots` and a self-contained `run.report`; returns the report path.

    `extra_sections` are (title, HTML fragment) pairs added by later capabilities
    (generated samples, forecasts, attention, compression, explanations). Titles are
    escaped here; fragments are trusted HTML and must escape their own text.
    """
    notes: list[str] = []
    try:
        summary = run.read_summary()
    except (OSError, ValueError) as e:  # a torn or hand-edited summary.json
        summary = {}
        notes.append(f"summary.json could not be read: {e}")
    if not isinstance(summary, dict):
        summary, notes = {}, [*notes, "summary.json is not a JSON object"]
    rows = run.read_metrics()
    config_text, config = _read_config(run)

    recipe = summary.get("recipe") or config.get("recipe") or run.path.name
    title = f"{recipe} — {run.path.name}"
    description = config.get("description") or ""

    sections: list[tuple[str, str]] = [
        ("Key figures", _key_figures(summary)),
        ("Metrics", _metrics_table(summary)),
    ]
    baselines = baselines_section(summary)  # the model beside majority class, TF-IDF, mean, ...
    if baselines:
        sections.append(baselines)
    curves = _img(plots.loss_curves(rows, run.plots)) + _img(plots.metric_curves(rows, run.plots))
    sections.append(("Curves", curves or _muted("No logged points in metrics.jsonl.")))
    confusion = _confusion(summary, run.plots)
    if confusion:
        sections.append(("Confusion matrix", confusion))
    if examples is not None and len(examples):
        sections.append(("Test images", _img(plots.image_grid(examples, run.plots))))
    sections.extend(extra_sections or [])
    sections.append(("Config", f"<pre>{html.escape(config_text)}</pre>" if config_text
                     else _muted("No config.yaml.")))

    body = "\n".join(f"<h2>{html.escape(t)}</h2>\n{frag}" for t, frag in sections)
    intro = "".join(_muted(n) for n in notes)
    if description:
        intro = f"<p>{html.escape(str(description))}</p>" + intro
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>{intro}\n{body}\n</body></html>\n"
    )
    atomic_write_text(run.report, page)
    return run.report
