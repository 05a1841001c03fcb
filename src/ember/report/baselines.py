"""The report's baselines table: the model beside the simple baselines of summary.json."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["baselines_section"]

# Metrics shown per task family, in order (whichever the summary holds).
_SHOWN = ("accuracy", "f1", "rmse", "mae", "r2", "perplexity", "loss")
_ABOUT = {
    "majority_class": "always the most frequent training class",
    "tfidf_logreg": "logistic regression on TF-IDF character 2-4-grams of the raw text",
    "logreg": "logistic regression on the (normalised) inputs",
    "mean": "always the mean training target",
    "persistence": "the window's last value, repeated over the horizon",
    "seasonal_naive": "the value one season earlier",
    "unigram": "unigram token frequencies of the training split (add-one smoothed)",
}


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def baselines_section(summary: dict[str, Any]) -> tuple[str, str] | None:
    """("Baselines", table HTML) on the test split (val without one); None without baselines."""
    baselines = summary.get("baselines")
    if not isinstance(baselines, dict) or not baselines:
        return None
    split = "test" if isinstance(summary.get("test"), dict) else "val"
    model = summary.get(split) if isinstance(summary.get(split), dict) else {}
    rows = [("this model", "", model)] + [
        (name, _ABOUT.get(name, ""), (figures or {}).get(split, {})) for name, figures in baselines.items()
    ]
    names = [m for m in _SHOWN if any(isinstance(r[2].get(m), float) for r in rows)]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        f"<tr><td>{'<b>' + html.escape(n) + '</b>' if not about else html.escape(n)}</td>"
        + "".join(f"<td>{_cell(r.get(m))}</td>" for m in names)
        + f"<td>{html.escape(about)}</td></tr>"
        for n, about, r in rows
    )
    note = f'<p class="muted">{split} split; every baseline is fitted on the training split only.</p>'
    return "Baselines", f"<table><tr><th>model</th>{head}<th>what</th></tr>{body}</table>{note}"
