"""Attribution checks that can fail: known-region models, completeness, model randomisation;
and the command on every family, with its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ember
from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.explain import attribute
from tests.conftest import run_cli

IMG = DataInfo("classification", "image", (1, 8, 8), 2, class_names=("a", "b"), mean=(0.0,), std=(1.0,))


class RegionModel(nn.Module):
    """Class 1's score depends only on the top-left 3x3 pixels; class 0 is constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0)
        mask = torch.zeros(1, 1, 8, 8)
        mask[..., :3, :3] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = (x * self.mask).flatten(1)  # (B, 64), zero outside the region
        score = torch.tanh(region.sum(1, keepdim=True)) + (self.conv(x * self.mask) * self.mask).flatten(1).mean(1, keepdim=True)
        return torch.cat([torch.zeros_like(score), score], dim=1)


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "occlusion", "shap", "lime", "gradcam"])
def test_attributions_concentrate_on_the_region_that_matters(method: str) -> None:
    torch.manual_seed(0)
    model = RegionModel().eval()
    x = torch.rand(1, 1, 8, 8) + 0.5
    background = torch.rand(16, 1, 8, 8)
    attr = attribute(method, model, IMG, x, 1, background=background)
    mass = np.abs(attr.values)
    inside = mass[:3, :3].sum()
    if method in ("gradcam", "occlusion", "lime"):  # patch/superpixel level: the region plus one pixel
        inside = mass[:4, :4].sum()
    assert inside / mass.sum() > 0.9, (method, inside / mass.sum())


def test_integrated_gradients_completeness() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 2)).eval()
    x = torch.randn(1, 1, 8, 8)
    attr = attribute("integrated_gradients", model, IMG, x, 1, steps=200)
    # sum of attributions == f(x) - f(baseline)
    assert attr.extra["sum"] == pytest.approx(attr.extra["output_difference"], abs=1e-3)
    assert attr.extra["convergence_delta"] < 1e-3


def test_model_randomisation_changes_attributions() -> None:
    torch.manual_seed(0)
    trained = RegionModel().eval()
    x = torch.rand(1, 1, 8, 8) + 0.5
    before = attribute("saliency", trained, IMG, x, 1).values
    random = RegionModel()
    nn.init.normal_(random.conv.weight)
    random.mask.fill_(1.0)  # re-initialised: no longer focused on the region
    after = attribute("saliency", random.eval(), IMG, x, 1).values
    corr = np.corrcoef(before.flatten(), after.flatten())[0, 1]
    assert corr < 0.5


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain")
    return ember.train("digits-cnn", ["train.epochs=3", "data.limit=400", f"log.runs_dir={root}",
                                      "log.image_grid=4"], verbose=False).path


def test_explain_images_end_to_end(digits_run: Path) -> None:
    page = ember.explain(digits_run, examples=2)
    assert page.exists() and "data:image/png;base64," in page.read_text()
    data = json.loads((digits_run / "explain" / "explain.json").read_text())
    assert set(data["methods"]) == {"saliency", "integrated_gradients", "gradcam", "occlusion", "shap", "lime"}
    ig = data["examples"][0]["methods"]["integrated_gradients"]
    assert ig["convergence_delta"] < 0.05 and ig["seconds"] > 0
    assert "Explanations" in (digits_run / "report.html").read_text()


def test_explain_cli_bad_inputs(digits_run: Path, tmp_path: Path) -> None:
    bad = run_cli("explain", digits_run, "--method", "integrated_gradient")
    assert bad.returncode == 2 and "did you mean 'integrated_gradients'" in bad.stderr
    na = run_cli("explain", digits_run, "--method", "rollout")
    assert na.returncode == 2 and "applicable: saliency" in na.stderr
    tgt = run_cli("explain", digits_run, "--target", "eleven", "--examples", "1", "--method", "saliency")
    assert tgt.returncode == 2 and "--target" in tgt.stderr
    assert "[ember] explain: 1 example(s), method(s) saliency" in tgt.stderr  # said before the slow part
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    wrong = run_cli("explain", digits_run, txt, "--method", "saliency")
    assert wrong.returncode == 2 and "takes images" in wrong.stderr


def test_explain_tabular_text_series(tmp_path: Path) -> None:
    iris = ember.train("iris-mlp", ["train.epochs=5", f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    ember.explain(iris.path, examples=2)
    assert (iris.path / "explain" / "shap_summary.png").exists()
    text = ember.train("stdlib-modules-transformer", ["train.max_steps=5", "data.per_class=8", "data.max_len=32",
                                                      "model.d_model=16", "model.d_ff=16", f"log.runs_dir={tmp_path}",
                                                      "log.report=false"], verbose=False)
    page = ember.explain(text.path, texts=["import asyncio\nloop = asyncio.get_event_loop()"])
    html = page.read_text()
    assert "integrated gradients" in html and "attention rollout" in html and "LIME words" in html
    series = ember.train("sunspots-lstm", ["train.epochs=1", "model.hidden_size=8", f"log.runs_dir={tmp_path}",
                                           "log.report=false"], verbose=False)
    ember.explain(series.path, examples=1)
    assert (series.path / "explain" / "example_0.png").exists()
    with pytest.raises(ConfigError, match="applicable"):
        ember.explain(series.path, methods=["gradcam"])


def test_explain_gpt_next_token(tmp_path: Path) -> None:
    run = ember.train("stdlib-char-gpt", ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1",
                                          "model.n_embd=32", "train.max_steps=5", f"log.runs_dir={tmp_path}",
                                          "log.report=false"], verbose=False)
    page = ember.explain(run.path, texts=["def main(argv):\n    return "], methods=["integrated_gradients", "rollout"])
    data = json.loads((run.path / "explain" / "explain.json").read_text())
    ig = data["examples"][0]["methods"]["integrated_gradients"]
    assert abs(ig["sum"] - ig["output_difference"]) < 0.05 * max(1.0, abs(ig["output_difference"]))
    assert "attention rollout" in page.read_text()
