"""Pictures and HTML for attributions: overlays for images, highlighted tokens for text,
bars for tables, shaded time steps for series."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ember.explain.attribute import Attribution  # noqa: E402
from ember.runs import atomic_write  # noqa: E402

__all__ = ["image_row", "token_html", "bars", "series_plot", "attention_grid"]


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    try:
        with atomic_write(path) as f:  # no link followed, no half-written PNG on a full disk
            fig.savefig(f, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def image_row(image: np.ndarray, attributions: list[Attribution], title: str, path: Path) -> Path:
    """The input, then one heatmap overlay per method. image: (H, W) or (H, W, C) in [0, 1]."""
    cols = 1 + len(attributions)
    fig, axes = plt.subplots(1, cols, figsize=(2.2 * cols, 2.5), squeeze=False)
    gray = image.ndim == 2
    axes[0][0].imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1)
    axes[0][0].set_title(title, fontsize=8)
    for ax, attr in zip(axes[0][1:], attributions):
        v = attr.values
        lim = float(np.abs(v).max()) or 1.0
        ax.imshow(image, cmap="gray" if gray else None, vmin=0, vmax=1, alpha=0.6)
        ax.imshow(v, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.6)
        extra = f"\nΔ={attr.extra['convergence_delta']:.1e}" if "convergence_delta" in attr.extra else ""
        ax.set_title(f"{attr.method}{extra}", fontsize=8)
    for ax in axes[0]:
        ax.axis("off")
    return _save(fig, path)


def token_html(tokens: list[str], scores: np.ndarray) -> str:
    """Tokens as spans shaded red (for the target) or blue (against it)."""
    lim = float(np.abs(scores).max()) or 1.0
    spans = []
    for tok, s in zip(tokens, scores):
        a = min(abs(float(s)) / lim, 1.0) * 0.8
        color = f"rgba(220,40,40,{a:.2f})" if s >= 0 else f"rgba(40,80,220,{a:.2f})"
        spans.append(f'<span title="{float(s):.4f}" style="background:{color}">{html.escape(tok)}</span>')
    return '<pre class="tokens">' + "".join(spans) + "</pre>"


def bars(names: list[str], values: np.ndarray, title: str, path: Path) -> Path:
    order = np.argsort(-np.abs(values))[:20]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1.2))
    ax.barh([names[i] for i in order][::-1], values[order][::-1],
            color=["#c33" if v >= 0 else "#36c" for v in values[order][::-1]])
    ax.set_title(title, fontsize=9)
    ax.axvline(0, color="black", lw=0.5)
    return _save(fig, path)


def summary_bars(names: list[str], matrix: np.ndarray, path: Path) -> Path:
    """Mean |attribution| per feature over the explained examples (a SHAP summary)."""
    return bars(names, np.abs(matrix).mean(0), "mean |SHAP value| over the examples", path)


def series_plot(window: np.ndarray, attributions: list[Attribution], title: str, path: Path) -> Path:
    fig, axes = plt.subplots(1 + len(attributions), 1, figsize=(7, 1.8 * (1 + len(attributions))), sharex=True)
    axes = np.atleast_1d(axes)
    axes[0].plot(window, color="black")
    axes[0].set_title(title, fontsize=9)
    for ax, attr in zip(axes[1:], attributions):
        v = attr.values
        ax.bar(range(len(v)), v, color=["#c33" if x >= 0 else "#36c" for x in v])
        ax.set_ylabel(attr.method, fontsize=7)
    axes[-1].set_xlabel("time step in the input window")
    return _save(fig, path)


def attention_grid(maps: np.ndarray, tokens: list[str], path: Path) -> Path:
    """maps: (L, H, T, T); one row per layer: head mean then each head (up to 4)."""
    layers, heads = maps.shape[:2]
    cols = min(heads, 4) + 1
    fig, axes = plt.subplots(layers, cols, figsize=(2.4 * cols, 2.4 * layers), squeeze=False)
    for li in range(layers):
        panels = [("mean", maps[li].mean(0))] + [(f"head {h}", maps[li, h]) for h in range(cols - 1)]
        for ci, (name, m) in enumerate(panels):
            ax = axes[li][ci]
            ax.imshow(m, cmap="viridis", vmin=0)
            ax.set_title(f"layer {li} {name}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)
