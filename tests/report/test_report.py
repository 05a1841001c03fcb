"""The HTML report and its plots, from fake run directories (no training, a few seconds)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from ember.report import Examples, plots, write_report
from ember.runs import Run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DESCRIPTION = 'Digits <script>alert("x")</script> & "friends"'


def _config(recipe: str, description: str = DESCRIPTION) -> dict[str, Any]:
    return {"recipe": recipe, "description": description, "data": {"source": "digits"},
            "model": {"family": "cnn"}, "optim": {"name": "adamw", "lr": 1e-3},
            "schedule": {"name": "cosine"}, "train": {"epochs": 2}, "log": {"report": True}}


def _train_rows(steps: int) -> list[dict[str, Any]]:
    # Loss falls 100x so the loss plot takes the log-scale branch.
    return [{"split": "train", "step": s, "epoch": s // 5, "loss": 2.0 / (1 + s * 10), "lr": 1e-3,
             "samples_per_s": 1000.0, "time_s": 0.1 * s} for s in range(1, steps + 1)]


def _make_run(root: Path, name: str, config: dict[str, Any], rows: list[dict[str, Any]],
              summary: dict[str, Any] | None) -> Run:
    path = root / name
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return Run(path)


@pytest.fixture
def classification_run(tmp_path: Path) -> Run:
    cls = {"accuracy": 0.9123456, "precision": 0.9, "recall": 0.88, "f1": 0.89}
    rows = _train_rows(10) + [{"split": "val", "step": s, "epoch": s // 5, "loss": 0.5 / s, **cls}
                              for s in (5, 10)]
    matrix = [[5, 1, 0], [0, 6, 1], [1, 0, 7]]
    summary = {"recipe": "digits-cnn", "task": "classification", "params": 12345,
               "wall_time_s": 3.5, "train_time_s": 3.0, "samples_per_s": 1234.5, "steps": 10,
               "epochs": 2.0, "device": "cpu", "world_size": 1, "strategy": "single",
               "class_names": ["zero", "one", "<two>"],
               "train": {"loss": 0.1, **cls},
               "val": {"loss": 0.2, **cls, "confusion_matrix": matrix},
               "test": {"loss": 0.3, "accuracy": 0.9375, "precision": 0.93, "recall": 0.92,
                        "f1": 0.925, "confusion_matrix": matrix}}
    return _make_run(tmp_path, "digits-cnn-20240101-000000", _config("digits-cnn"), rows, summary)


@pytest.fixture
def regression_run(tmp_path: Path) -> Run:
    reg = {"mse": 120.5, "mae": 8.25, "rmse": 10.977, "r2": 0.6125}
    rows = _train_rows(6) + [{"split": "val", "step": 6, "epoch": 1, "loss": 120.5, **reg}]
    summary = {"recipe": "housing-mlp", "task": "regression", "params": 801, "wall_time_s": 1.25,
               "train_time_s": 1.0, "samples_per_s": 5000.0, "steps": 6, "epochs": 1.0,
               "device": "cpu", "world_size": 1, "strategy": "single",
               **{s: {"loss": 120.5, **reg} for s in ("train", "val", "test")}}
    return _make_run(tmp_path, "housing-mlp-20240101-000000", _config("housing-mlp", "houses"), rows, summary)


def _examples() -> Examples:
    rng = np.random.default_rng(0)
    true = ["a", "b", "c", "a", "b", "c"]
    pred = ["a", "c", "c", "b", "b", "a"]  # wrong at 1, 3, 5
    return Examples(images=rng.random((6, 8, 8)), true=true, pred=pred)


def _embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def _assert_self_contained(page: str) -> None:
    for bad in ("http://", "https://", "<script src", "<link"):
        assert bad not in page, bad


def test_classification_report(classification_run: Run) -> None:
    path = write_report(classification_run, _examples(), [("Extra <stuff>", "<p id='frag'>kept</p>")])
    assert path == classification_run.report and path.is_file()
    page = path.read_text()
    _assert_self_contained(page)
    images = _embedded_pngs(page)
    assert len(images) == 4 and all(b.startswith(PNG_SIGNATURE) for b in images)
    for name in ("loss", "metrics", "confusion_matrix", "test_images"):
        png = classification_run.plots / f"{name}.png"
        assert png.read_bytes().startswith(PNG_SIGNATURE), name
        assert png.read_bytes() in images, name  # the page embeds exactly the saved files
    assert "<h1>digits-cnn — digits-cnn-20240101-000000</h1>" in page
    metrics = page.split("<h2>Metrics</h2>")[1].split("<h2>")[0]
    assert "<td>test</td>" in metrics and "<td>0.9375</td>" in metrics  # test accuracy
    assert "<td>0.9123</td>" in metrics  # 4 decimals
    assert "confusion_matrix" not in metrics  # lists are not table columns
    assert "12,345" in page and "Confusion matrix" in page and "Test images" in page
    assert "<h2>Extra &lt;stuff&gt;</h2>" in page and "<p id='frag'>kept</p>" in page
    assert page.index("<h2>Config</h2>") > page.index("Extra &lt;stuff&gt;")


def test_text_is_escaped(classification_run: Run) -> None:
    page = write_report(classification_run).read_text()
    assert "<script>" not in page
    assert "Digits &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;friends&quot;" in page


def test_regression_report(regression_run: Run) -> None:
    page = write_report(regression_run).read_text()
    _assert_self_contained(page)
    assert all(b.startswith(PNG_SIGNATURE) for b in _embedded_pngs(page))
    assert (regression_run.plots / "loss.png").is_file() and (regression_run.plots / "metrics.png").is_file()
    assert not (regression_run.plots / "confusion_matrix.png").exists()
    assert "<th>r2</th>" in page and "<td>0.6125</td>" in page and "<td>120.5000</td>" in page
    assert "Confusion matrix" not in page and "Test images" not in page


def test_empty_metrics_and_no_splits(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "killed-run", _config("digits-cnn"), [], {"recipe": "digits-cnn", "params": 10})
    page = write_report(run).read_text()
    assert "No split metrics recorded" in page and "No logged points" in page
    assert not list(run.plots.glob("*.png"))  # nothing to draw, so no stale-looking empty plots
    _assert_self_contained(page)


def test_train_only_metrics_and_no_summary(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "early", _config("digits-cnn"), _train_rows(3), None)
    page = write_report(run).read_text()
    assert (run.plots / "loss.png").is_file() and not (run.plots / "metrics.png").exists()
    assert "No summary recorded" in page and "No split metrics recorded" in page
    assert "<h1>digits-cnn — early</h1>" in page  # recipe falls back to the config


def test_examples_misclassified_first() -> None:
    ex = _examples()
    assert ex.wrong == [False, True, False, True, False, True]
    assert ex.ordered() == [1, 3, 5, 0, 2, 4]  # mistakes first, original order kept within groups
    reordered = ex.misclassified_first()
    assert reordered.true == ["b", "a", "c", "a", "c", "b"]
    assert np.array_equal(reordered.images, ex.images[[1, 3, 5, 0, 2, 4]])
    with pytest.raises(ValueError):
        Examples(images=np.zeros((2, 4, 4)), true=["a"], pred=["a", "b"])


def test_plots_are_deterministic_and_handle_odd_inputs(tmp_path: Path) -> None:
    rows = _train_rows(5) + [{"split": "val", "step": 5, "loss": float("nan"), "accuracy": 0.5}]
    a = plots.loss_curves(rows, tmp_path / "a")
    b = plots.loss_curves(rows, tmp_path / "b")
    assert a is not None and b is not None and a.read_bytes() == b.read_bytes()
    assert plots.metric_curves(_train_rows(3), tmp_path) is None  # no val rows
    assert plots.loss_curves([], tmp_path) is None
    rgb = Examples(images=np.random.default_rng(1).random((3, 6, 6, 1)), true=["x"] * 3, pred=["x", "y", "x"])
    assert plots.image_grid(rgb, tmp_path).read_bytes().startswith(PNG_SIGNATURE)
    scatter = plots.regression_scatter([1.0, 2.1, 2.9], [1.0, 2.0, 3.0], tmp_path)
    assert scatter.name == "regression.png" and scatter.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError):
        plots.confusion_matrix([[1, 2, 3]], [], tmp_path)
