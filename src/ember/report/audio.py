"""Report section for audio classifiers: log-mel spectrograms of misclassified test clips."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ember.data.bundle import DataBundle  # noqa: E402
from ember.report.sections import figure_html  # noqa: E402
from ember.runs import Run  # noqa: E402
from ember.training.evaluation import predict_outputs  # noqa: E402

__all__ = ["misclassified_section"]


def misclassified_section(run: Run, model: nn.Module, bundle: DataBundle, device: torch.device,
                          n: int = 12) -> tuple[str, str]:
    """Up to `n` misclassified test clips as spectrograms titled true -> predicted (no audio played)."""
    outputs, targets = predict_outputs(model, bundle.test, device, 512)
    pred = outputs.argmax(-1)
    wrong = (pred != targets).nonzero().flatten()[:n]
    total = int((pred != targets).sum())
    if len(wrong) == 0:
        return "Misclassified clips", f"<p>None: all {len(targets)} test clips were classified correctly.</p>"
    names = bundle.info.class_names
    cols = min(4, len(wrong))
    rows = (len(wrong) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        ax.imshow(bundle.test.x[i, 0].numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"#{i}: {names[int(targets[i])]} -> {names[int(pred[i])]}", fontsize=8)
    fig.suptitle("log-mel spectrograms (time across, mel bands up)", fontsize=9)
    fig.tight_layout()
    note = f"<p>{total} of {len(targets)} test clips misclassified; the first {len(wrong)} are shown.</p>"
    return "Misclassified clips", note + figure_html(fig, run, "misclassified_audio")
