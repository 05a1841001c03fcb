"""Training plots as PNG files (matplotlib, Agg backend, no timestamps in the files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["Examples", "loss_curves", "metric_curves", "confusion_matrix", "image_grid", "save"]


@dataclass
class Examples:
    """Test images with predicted and true labels; `ordered()` puts mistakes first."""

    images: np.ndarray  # (N, H, W) or (N, H, W, C), values in [0, 1]
    true: list[str]
    pred: list[str]
    wrong: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.wrong = [t != p for t, p in zip(self.true, self.pred)]

    def ordered(self) -> list[int]:
        """Indices with misclassified examples first, each group in its original order."""
        return sorted(range(len(self.true)), key=lambda i: (not self.wrong[i], i))


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def loss_curves(rows: list[dict[str, Any]], folder: Path) -> Path | None:
    """Train and validation loss against the optimizer step."""
    train = [(r["step"], r["loss"]) for r in rows if r.get("split") == "train" and "loss" in r]
    val = [(r["step"], r["loss"]) for r in rows if r.get("split") == "val" and "loss" in r]
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for points, label in ((train, "train"), (val, "val")):
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=label, marker="o" if label == "val" else None, ms=3)
    values = [v for _, v in train + val if v > 0]
    if values and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, folder / "loss.png")


def metric_curves(rows: list[dict[str, Any]], folder: Path) -> Path | None:
    """Every validation metric other than the loss against the step."""
    val = [r for r in rows if r.get("split") == "val"]
    names = sorted({k for r in val for k, v in r.items()
                    if isinstance(v, (int, float)) and k not in ("step", "epoch", "loss")})
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name in names:
        pts = [(r["step"], r[name]) for r in val if name in r]
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=name, marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_title("Validation metrics")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, folder / "metrics.png")


def confusion_matrix(matrix: list[list[int]], class_names: list[str], folder: Path) -> Path:
    """Annotated heatmap: rows are true classes, columns predicted ones."""
    m = np.asarray(matrix)
    k = len(m)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    names = class_names or [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = m.max() / 2 if m.size else 0
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > threshold else "black")
    ax.set_title("Confusion matrix (test)")
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
        img = examples.images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(f"{examples.pred[i]} / {examples.true[i]}", fontsize=8,
                     color="red" if examples.wrong[i] else "black")
    fig.suptitle("Test images: predicted / true (mistakes first, in red)", fontsize=9)
    return save(fig, folder / "test_images.png")
