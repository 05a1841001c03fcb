"""Report sections for the sequence families: LM samples, forecast plot, attention heatmap."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ember.runs import Run, atomic_write  # noqa: E402
from ember.safe_paths import inside  # noqa: E402

__all__ = ["lm_samples_section", "forecast_section", "attention_section", "figure_html"]


def figure_html(fig: Any, run: Run, name: str) -> str:
    """Save `fig` as plots/<name>.png and return an <img> with it embedded."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    data = buf.getvalue()
    with atomic_write(inside(run.plots, f"{name}.png")) as f:
        f.write(data)
    return f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def lm_samples_section(run: Run) -> tuple[str, str] | None:
    """Generated text at each evaluation, newest last, from metrics.jsonl."""
    samples = [r for r in run.read_metrics() if r.get("split") == "sample"]
    if not samples:
        return None
    parts = []
    for row in samples:
        parts.append(
            f"<h4>step {row['step']}</h4><pre><b>{html.escape(row.get('prompt', ''))}</b>"
            f"{html.escape(row.get('text', ''))}</pre>"
        )
    return "Generated samples", "\n".join(parts)


def forecast_section(run: Run, predicted: np.ndarray, truth: np.ndarray, mean: float, std: float) -> tuple[str, str]:
    """Forecast vs truth over the test split (first step of each horizon), de-normalised."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(truth[:, 0] * std + mean, label="truth", lw=1.2)
    ax.plot(predicted[:, 0] * std + mean, label="forecast", lw=1.2)
    ax.set_xlabel("test window")
    ax.set_ylabel("value")
    ax.legend()
    ax.set_title("Forecast vs truth (test split, first step of the horizon)")
    return "Forecast", figure_html(fig, run, "forecast")


def attention_section(run: Run, maps: list[np.ndarray], tokens: list[str]) -> tuple[str, str]:
    """Heatmaps of attention weights for one example: one row per layer, heads averaged and each head."""
    layers = len(maps)
    heads = maps[0].shape[0]
    cols = min(heads, 4) + 1
    fig, axes = plt.subplots(layers, cols, figsize=(2.6 * cols, 2.6 * layers), squeeze=False)
    labels = [t if t.strip() else repr(t)[1:-1] for t in tokens]
    for li, layer in enumerate(maps):  # layer: (H, T, T)
        panels = [("mean", layer.mean(0))] + [(f"head {h}", layer[h]) for h in range(cols - 1)]
        for ci, (title, m) in enumerate(panels):
            ax = axes[li][ci]
            ax.imshow(m, cmap="viridis", vmin=0)
            ax.set_title(f"layer {li} {title}", fontsize=8)
            if len(labels) <= 32:
                ax.set_xticks(range(len(labels)), labels, fontsize=5, rotation=90)
                ax.set_yticks(range(len(labels)), labels, fontsize=5)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    return "Attention (one test example)", figure_html(fig, run, "attention")
