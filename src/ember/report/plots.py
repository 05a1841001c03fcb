"""Training plots as PNG files (matplotlib, Agg backend, no timestamps in the files).

Every function saves one PNG under `folder` and returns its path (or None when there is
nothing to draw), so the HTML page can embed exactly the files that exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

# Agg before pyplot: reports are rendered on headless machines and inside training processes.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ember.runs import atomic_write  # noqa: E402

__all__ = ["Examples", "loss_curves", "metric_curves", "confusion_matrix", "image_grid",
           "regression_scatter", "save"]

# Keys of a metrics row that are bookkeeping, not metrics worth a curve.
_NOT_METRICS = frozenset({"step", "epoch", "loss", "lr", "samples_per_s", "time_s"})


@dataclass
class Examples:
    """Test images with predicted and true labels; `ordered()` puts mistakes first."""

    images: np.ndarray  # (N, H, W) or (N, H, W, C), values in [0, 1]
    true: list[str]
    pred: list[str]
    wrong: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        n = len(self.true)
        if len(self.pred) != n or len(self.images) != n:
            raise ValueError(f"Examples: {len(self.images)} images, {n} true labels, "
                             f"{len(self.pred)} predicted labels; they must match")
        if n and self.images.ndim not in (3, 4):
            raise ValueError(f"Examples: images must be (N, H, W) or (N, H, W, C), got {self.images.shape}")
        self.wrong = [str(t) != str(p) for t, p in zip(self.true, self.pred)]

    def __len__(self) -> int:
        return len(self.true)

    def ordered(self) -> list[int]:
        """Indices with misclassified examples first, each group in its original order."""
        # Sorting on (correct, index) is stable by construction, whatever order the caller used.
        return sorted(range(len(self.true)), key=lambda i: (not self.wrong[i], i))

    def misclassified_first(self) -> Examples:
        """A copy reordered by `ordered()`."""
        idx = self.ordered()
        return Examples(images=self.images[idx],
                        true=[self.true[i] for i in idx], pred=[self.pred[i] for i in idx])


def save(fig: Figure, path: Path) -> Path:
    """Save `fig` as a PNG without the Software/date metadata (byte-identical re-renders), close it."""
    try:
        with atomic_write(path) as f:  # no link followed, no half-written PNG on a full disk
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)  # figures left open leak memory in long-lived processes
    return path


def _number(value: Any) -> bool:
    """A finite int or float (bools are ints in Python but never metrics)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: list[dict[str, Any]], split: str, key: str) -> list[tuple[float, float]]:
    """(step, value) points of `key` for `split`, sorted by step (stable for repeated steps)."""
    pts = [(r["step"], r[key]) for r in rows
           if r.get("split") == split and _number(r.get("step")) and _number(r.get(key))]
    return sorted(pts, key=lambda p: p[0])


def loss_curves(rows: list[dict[str, Any]], folder: Path) -> Path | None:
    """Train and validation loss against the optimizer step; None when no loss was logged."""
    train = _series(rows, "train", "loss")
    val = _series(rows, "val", "loss")
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for points, label in ((train, "train"), (val, "val")):
        if points:
            xs, ys = zip(*points)
            # Val points are sparse, so markers make single evaluations visible.
            ax.plot(xs, ys, label=label, marker="o" if label == "val" else None, ms=3)
    values = [v for _, v in train + val]
    # Log scale only when it is valid (all positive) and useful (a spread of more than 10x).
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, folder / "loss.png")


def metric_curves(rows: list[dict[str, Any]], folder: Path) -> Path | None:
    """Every validation metric other than the loss against the step; None when there is none."""
    names = sorted({k for r in rows if r.get("split") == "val"
                    for k, v in r.items() if k not in _NOT_METRICS and _number(v)})
    if not names:
        return None
    # One panel per metric: mse and r2 (or counts and ratios) do not share a useful y axis.
    cols = min(len(names), 4)
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        ax.axis("on")
        xs, ys = zip(*_series(rows, "val", name))
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Validation metrics", fontsize=10)
    fig.tight_layout()
    return save(fig, folder / "metrics.png")


def confusion_matrix(matrix: list[list[int]] | np.ndarray, class_names: list[str], folder: Path,
                     title: str = "Confusion matrix (test)") -> Path:
    """Annotated heatmap of counts: rows are true classes, columns predicted ones."""
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square and non-empty, got shape {m.shape}")
    k = m.shape[0]
    # Names that do not match the matrix (a stale summary) would mislabel rows; use indices.
    names = [str(n) for n in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2
    if k <= 30:  # beyond that the numbers are unreadable; the colours still tell the story
        integral = np.issubdtype(m.dtype, np.integer)
        for i in range(k):
            for j in range(k):
                text = str(m[i, j]) if integral else f"{m[i, j]:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > threshold else "black")
    ax.set_title(title)
    return save(fig, folder / "confusion_matrix.png")


def image_grid(examples: Examples, folder: Path) -> Path:
    """Test images titled 'pred / true', misclassified first and in red."""
    order = examples.ordered()
    n = len(order)
    cols = min(8, max(n, 1))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        img = np.clip(np.asarray(examples.images[i], dtype=np.float32), 0, 1)
        if img.ndim == 3 and img.shape[-1] == 1:  # imshow rejects (H, W, 1)
            img = img[..., 0]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(f"{examples.pred[i]} / {examples.true[i]}", fontsize=8,
                     color="red" if examples.wrong[i] else "black")
    fig.suptitle("Test images: predicted / true (mistakes first, in red)", fontsize=9)
    return save(fig, folder / "test_images.png")


def regression_scatter(pred: Any, true: Any, folder: Path) -> Path:
    """Predicted against true values with the y = x line (points on it are perfect)."""
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"regression_scatter: {p.size} predictions for {t.size} targets")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(t, p, s=8, alpha=0.6)
    finite = np.concatenate([p, t])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        ax.plot([lo, hi], [lo, hi], color="red", lw=1, label="y = x")
        ax.legend(fontsize=8)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("Predicted vs true (test)")
    ax.grid(alpha=0.3)
    return save(fig, folder / "regression.png")
