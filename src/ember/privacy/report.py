"""What a private run writes about its budget, and the audit's report section.

`privacy/budget.json` + `privacy/section.html` at the end of training; `audit/audit.json` +
`audit/section.html` from `ember audit`. The report discovers both sections (`runs.TOOL_SECTIONS`).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from ember.runs import Run, atomic_write_text
from ember.safe_paths import read_text

__all__ = ["write_budget", "read_budget", "budget_section", "audit_section"]

BUDGET = "budget.json"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return html.escape(str(value))


def _json_safe(value: Any) -> Any:
    """JSON has no infinity: ε = ∞ (no noise) is written as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "nan"
    return value


def write_budget(run: Run, budget: dict[str, Any]) -> None:
    """`privacy/budget.json` and `privacy/section.html` (an ε-per-step curve from metrics.jsonl)."""
    folder = run.tool_dir("privacy")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / BUDGET, json.dumps({k: _json_safe(v) for k, v in budget.items()}, indent=2))
    atomic_write_text(folder / "section.html", budget_section(run, budget))


def read_budget(run: Run) -> dict[str, Any] | None:
    """The budget a private run spent, as written (ε = "inf" without noise); None without one."""
    path = run.tool_dir("privacy") / BUDGET
    return json.loads(read_text(path)) if path.is_file() else None


def budget_section(run: Run, budget: dict[str, Any]) -> str:
    """A table of the budget and, when the run validated more than once, ε against the step."""
    from ember.report.sections import figure_html, plt

    rows = [("ε spent", budget["epsilon"]), ("δ", budget["delta"]), ("target ε", budget.get("target_epsilon")),
            ("noise multiplier σ", budget["noise_multiplier"]), ("clip (max_grad_norm)", budget["max_grad_norm"]),
            ("sampling rate q", budget["sample_rate"]), ("expected batch", budget["expected_batch"]),
            ("steps", budget["steps"]), ("accountant", budget["accountant"]),
            ("sampling", "Poisson" if budget["poisson"] else "shuffled fixed-size batches (approximate accounting)"),
            ("layers replaced for DP", "; ".join(budget.get("fixed") or []) or "none")]
    table = "<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{_num(v)}</td></tr>" for k, v in rows
                                if v is not None) + "</table>"
    points = [(r["step"], r["epsilon"]) for r in run.read_metrics()
              if r.get("split") == "val" and isinstance(r.get("epsilon"), (int, float))]
    if len(points) < 2 or not all(math.isfinite(e) for _, e in points):
        return table
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel(f"ε spent (δ = {budget['delta']:.2g})")
    ax.set_title("Privacy budget spent")
    return table + figure_html(fig, run, "privacy_epsilon")


def audit_section(run: Run, result: dict[str, Any], curves: dict[str, tuple[Any, Any]]) -> str:
    """The attacks' figures and their ROC curves (log-scaled FPR shows the low-FPR regime)."""
    from ember.report.sections import figure_html, plt

    head = "<tr><th>attack</th><th>AUC</th><th>TPR at 1% FPR</th><th>advantage</th></tr>"
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{a['auc']:.4f}</td><td>{a['tpr_at_1pct_fpr']:.4f}</td>"
                   f"<td>{a['advantage']:.4f}</td></tr>" for name, a in result["attacks"].items())
    eps = result.get("epsilon")
    note = (f"<p>{result['members']} train members vs {result['non_members']} held-out non-members "
            f"({html.escape(result['non_member_split'])} split). "
            + (f"The run was trained with ε = {_num(eps)} at δ = {_num(result.get('delta'))}. " if eps is not None
               else "The run was trained without differential privacy. ")
            + "AUC 0.5 is a coin flip: the closer, the less the model leaks which samples it saw.</p>")
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {result['attacks'][name]['auc']:.3f})")
    ax.plot([1e-3, 1], [1e-3, 1], ls="--", c="grey", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Membership inference ROC")
    ax.legend(fontsize=8)
    return note + f"<table>{head}{body}</table>" + figure_html(fig, run, "audit_roc")
