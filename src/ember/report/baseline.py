"""Report section: the model's test figures beside the baseline the data source scored."""

from __future__ import annotations

import html

from ember.runs import Run

__all__ = ["baseline_section"]

# Metrics where lower is better; every other one is higher-is-better.
_LOWER = {"rmse", "mae", "mse", "loss"}


def baseline_section(run: Run) -> tuple[str, str] | None:
    """A table of test (and validation) metrics: model, baseline, and the model's relative gain.

    Returns None when the summary records no baseline (most sources have none).
    """
    try:
        summary = run.read_summary()
    except (OSError, ValueError):
        return None
    base = summary.get("baseline") if isinstance(summary, dict) else None
    if not isinstance(base, dict):
        return None
    rows = []
    for split in ("test", "val"):
        theirs, ours = base.get(split), summary.get(split)
        if not isinstance(theirs, dict) or not isinstance(ours, dict):
            continue
        for metric, value in theirs.items():
            mine = ours.get(metric)
            if not isinstance(mine, (int, float)) or not isinstance(value, (int, float)):
                continue
            better = (value - mine) if metric in _LOWER else (mine - value)
            gain = f"{100 * better / abs(value):+.1f}%" if value else "–"
            rows.append(f"<tr><td>{split}</td><td>{html.escape(metric)}</td><td>{mine:.4f}</td>"
                        f"<td>{value:.4f}</td><td>{gain}</td></tr>")
    if not rows:
        return None
    name = html.escape(str(base.get("name", "baseline")))
    about = html.escape(str(base.get("description", "")))
    table = ("<table><tr><th>split</th><th>metric</th><th>model</th>"
             f"<th>{name}</th><th>model better by</th></tr>{''.join(rows)}</table>")
    return f"Against the {name} baseline", f"<p>Baseline: {about}.</p>{table}"
