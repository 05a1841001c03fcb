"""The study report: `study.json` (every trial), `best.yaml` (a ready recipe), `study.html`.

`study.html` is self-contained like run reports: CSS inline, Optuna's matplotlib plots
embedded as PNG data URIs (optimisation history, intermediate values, parameter
importances, slice and parallel coordinates). A plot that cannot be drawn yet (too few
finished trials) gives a note, never a failure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ember.config import from_dict, to_yaml  # noqa: E402
from ember.errors import EmberError  # noqa: E402
from ember.runs import Study, atomic_write_text  # noqa: E402
from ember.tune.space import Space, config_with, format_value  # noqa: E402

__all__ = ["write_study_report", "study_record"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}td,th{border:1px solid #ddd;padding:.2rem .5rem;
text-align:right}th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}
img{max-width:100%}.muted{color:#777}.pruned{color:#a60}.fail{color:#b00}
"""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.4g}"
    return html.escape(str(value))


def study_record(folder: Study, study: Any, space: Space) -> dict[str, Any]:
    """`study.json`'s content: settings, counts, best trial, and every trial."""
    settings = json.loads(folder.settings.read_text())
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        rows.append({
            "number": t.number, "state": state, "value": t.value if t.values else None,
            "params": space.values_of(t.params), "epochs": t.user_attrs.get("ember_epochs"),
            "seconds": t.user_attrs.get("ember_seconds"),
            "run": t.user_attrs.get("ember_run") or folder.trial_dir(t.number).name,
            "error": t.user_attrs.get("ember_error") or ("interrupted; re-run" if t.user_attrs.get(
                "ember_interrupted") else None),
            "rerun_of": t.user_attrs.get("ember_rerun_of"),
        })
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    complete = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    best = None
    if complete:
        pick = max if settings["direction"] == "maximize" else min
        top = pick(complete, key=lambda r: r["value"])
        best = {"number": top["number"], "value": top["value"], "params": top["params"], "run": top["run"],
                "config": folder.best.name}
    return {"study": settings["study"], "recipe": settings["base"].get("recipe"), "metric": settings["metric"],
            "direction": settings["direction"], "space": settings["space"], "counts": counts,
            "epochs_run": sum(r["epochs"] or 0 for r in rows), "best": best, "trials": rows}


def _best_yaml(folder: Study, record: dict[str, Any]) -> str | None:
    best = record["best"]
    if best is None:
        return None
    base = from_dict(json.loads(folder.settings.read_text())["base"])
    try:
        cfg = config_with(base, best["params"])
    except EmberError:  # cannot happen for a trial that trained; keep the report going regardless
        return None
    header = (f"# best trial {best['number']} of study '{record['study']}': {record['metric']} = "
              f"{best['value']:.6g}\n# train it: ember train {folder.best}\n")
    return header + to_yaml(cfg)


def _figure(draw: Callable[[], Any]) -> str:
    """Run one Optuna matplotlib plot and return it as an embedded <img>, or a note."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            axes = draw()
    except Exception as exc:  # too few trials, a single value: a note instead of the plot
        plt.close("all")
        return f'<p class="muted">not drawn: {html.escape(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}</p>'
    first = np.asarray(axes, dtype=object).flat[0]
    fig = first.figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plots(study: Any, record: dict[str, Any]) -> list[tuple[str, str]]:
    from optuna.visualization import matplotlib as ov

    finished = record["counts"].get("complete", 0) + record["counts"].get("pruned", 0)
    if finished == 0:
        return [("Plots", '<p class="muted">no finished trial yet</p>')]
    return [
        ("Optimisation history", _figure(lambda: ov.plot_optimization_history(study))),
        ("Validation curves (what pruning saw)", _figure(lambda: ov.plot_intermediate_values(study))),
        ("Parameter importances", _figure(lambda: ov.plot_param_importances(study))),
        ("Slice", _figure(lambda: ov.plot_slice(study))),
        ("Parallel coordinates", _figure(lambda: ov.plot_parallel_coordinate(study))),
    ]


def _html(folder: Study, record: dict[str, Any], best_yaml: str | None, plots: list[tuple[str, str]]) -> str:
    keys = list(record["space"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", "state", record["metric"], "epochs", "s", *keys])
    body = []
    for r in record["trials"]:
        target = r["run"] + ("/report.html" if (folder.path / r["run"] / "report.html").is_file() else "/")
        link = f'<a href="{html.escape(target)}">{r["number"]}</a>'
        cells = [link, f'<span class="{r["state"]}">{r["state"]}</span>', _cell(r["value"]), _cell(r["epochs"]),
                 _cell(r["seconds"]), *(_cell(format_value(r["params"][k]) if k in r["params"] else None)
                                         for k in keys)]
        title = f' title="{html.escape(r["error"])}"' if r["error"] else ""
        body.append(f"<tr{title}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(record["counts"].items()))
    best = record["best"]
    best_html = ('<p class="muted">no completed trial yet</p>' if best is None else
                 f"<p>trial {best['number']} ({html.escape(best['run'])}): {html.escape(record['metric'])} = "
                 f"{_cell(best['value'])}</p><pre>{html.escape(best_yaml or '')}</pre>")
    parts = [f"<h1>Study {html.escape(record['study'])}</h1>",
             f"<p>recipe {html.escape(str(record['recipe']))}; {record['direction']} {html.escape(record['metric'])}; "
             f"trials: {html.escape(counts)}; epochs run: {record['epochs_run']}</p>",
             "<h2>Best trial (best.yaml)</h2>", best_html,
             "<h2>Trials</h2>", f"<table><tr>{head}</tr>{''.join(body)}</table>"]
    parts += [f"<h2>{html.escape(title)}</h2>{content}" for title, content in plots]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {html.escape(record['study'])}"
            f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def write_study_report(folder: Study, study: Any, space: Space) -> dict[str, Any]:
    """Write `study.json`, `best.yaml` (when a trial completed) and `study.html`; returns the record."""
    record = study_record(folder, study, space)
    best_yaml = _best_yaml(folder, record)
    if best_yaml is not None:
        atomic_write_text(folder.best, best_yaml)
    atomic_write_text(folder.record, json.dumps(record, indent=2, default=str))
    with matplotlib.rc_context():  # Optuna's plots switch the global style; later run reports keep theirs
        plots = _plots(study, record)
    atomic_write_text(folder.report, _html(folder, record, best_yaml, plots))
    return record
