"""init_from, freezing, unfreezing, per-pattern LRs and LoRA on tiny digits runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ember
from ember import data, models
from ember.errors import ConfigError
from ember.plan import plan
from ember.training.optim import build_optimizer
from ember.weights import load_tensors

TINY = ["model.channels=[4,8]", "model.hidden=[16]", "train.threads=1", "log.report=false", "train.epochs=1",
        "train.max_steps=4", "data.augment.shift=0"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNN trained briefly on the digits 0-4."""
    root = tmp_path_factory.mktemp("source")
    run = ember.train("digits-cnn", [*TINY, "data.classes=[0,1,2,3,4]", f"log.runs_dir={root}"], verbose=False)
    return run.path


def _train(tmp_path: Path, *overrides: str) -> dict:
    run = ember.train("digits-cnn", [*TINY, f"log.runs_dir={tmp_path}", *overrides], verbose=False)
    return json.loads(run.summary.read_text()) | {"path": str(run.path)}


def test_init_from_loads_features_and_reinitialises_the_head_for_other_classes(source: Path, tmp_path: Path) -> None:
    summary = _train(tmp_path, "data.classes=[5,6,7,8,9]", f"model.init_from={source}", "train.freeze=[features]",
                     "train.max_steps=2")
    report = summary["init_from"]
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == []
    assert sorted(report["reinitialised"]) == ["head.5.bias", "head.5.weight"]
    frozen = sum(t.numel() for k, t in load_tensors(source / "model.safetensors").items()
                 if k.startswith("features.") and t.is_floating_point() and "running" not in k)
    assert summary["frozen_params"] == frozen and summary["trainable_params"] > 0
    before = load_tensors(source / "model.safetensors")
    after = load_tensors(Path(summary["path"]) / "model.safetensors")
    assert torch.equal(before["features.0.weight"], after["features.0.weight"])  # frozen: untouched
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])  # trained on


def test_init_from_ten_classes_names_the_shape_mismatch(source: Path, tmp_path: Path) -> None:
    summary = _train(tmp_path, f"model.init_from={source}", "train.max_steps=1")
    mismatched = {m["name"]: m for m in summary["init_from"]["mismatched"]}
    assert mismatched["head.5.weight"]["source"] == [5, 16] and mismatched["head.5.weight"]["model"] == [10, 16]


def test_init_map_renames_and_a_file_source_works(source: Path, tmp_path: Path) -> None:
    renamed = {f"net.{k}": v for k, v in load_tensors(source / "model.safetensors").items()}
    from safetensors.torch import save_file

    save_file(renamed, str(tmp_path / "w.safetensors"))
    summary = _train(tmp_path, "data.classes=[0,1,2,3,4]", f"model.init_from={tmp_path / 'w.safetensors'}",
                     "model.init_map={'net.': ''}", "train.max_steps=1")
    assert summary["init_from"]["unexpected"] == [] and summary["init_from"]["reinitialised"] == []
    assert summary["init_from"]["loaded"] == len(renamed)


def test_unfreeze_at_epoch_trains_the_features_later(source: Path, tmp_path: Path) -> None:
    summary = _train(tmp_path, "data.classes=[5,6,7,8,9]", f"model.init_from={source}", "train.freeze=[features]",
                     "train.unfreeze_at_epoch=1", "train.epochs=2", "train.max_steps=null", "data.limit=64")
    after = load_tensors(Path(summary["path"]) / "model.safetensors")
    assert not torch.equal(load_tensors(source / "model.safetensors")["features.0.weight"], after["features.0.weight"])


def test_param_groups_scale_the_schedule(tmp_path: Path) -> None:
    cfg = ember.load_config("digits-cnn", ["optim.groups=[{params: 'head.*', lr: 0.0001, weight_decay: 0.5}]",
                                           "optim.weight_decay=0.01"])
    model = models.build(cfg.model, data.build(cfg.data, 0).info)
    opt = build_optimizer(model, cfg.optim)
    head = {id(p) for p in model.head.parameters()}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        if ids <= head:
            assert group["lr_scale"] == pytest.approx(0.0001 / cfg.optim.lr)
            assert group["weight_decay"] in (0.5, 0.0)
        else:
            assert not ids & head and group["lr_scale"] == 1.0


def test_lora_trains_adapters_only_and_merges_into_plain_weights(source: Path, tmp_path: Path) -> None:
    summary = _train(tmp_path, "data.classes=[0,1,2,3,4]", f"model.init_from={source}",
                     "model.lora={r: 2, alpha: 4, targets: ['head.2', 'features.0']}", "train.max_steps=2")
    assert 0 < summary["trainable_share"] < 0.5
    run = Path(summary["path"])
    merged = load_tensors(run / "model.safetensors")
    assert set(merged) == set(load_tensors(source / "model.safetensors"))  # the model's own names
    adapter = load_tensors(run / "adapter.safetensors")
    assert any("lora_A" in k for k in adapter) and any("lora_B" in k for k in adapter)
    loaded = ember.load_run(run)  # every tool reads the merged run like any other
    assert loaded.model(torch.zeros(1, 1, 8, 8)).shape == (1, 5)


def test_plan_shows_trainable_share() -> None:
    result = plan("digits-cnn", ["model.lora={r: 2, targets: ['head.2']}"])
    assert result["model"]["trainable_params"] < result["model"]["params"] * 0.1
    assert result["model"]["frozen_params"] + result["model"]["trainable_params"] == result["model"]["params"]


@pytest.mark.parametrize(("override", "message"), [
    (["train.freeze=[nothing.*]"], "train.freeze: 'nothing.\\*' matches no name"),
    (["train.freeze=['*']"], "every parameter is frozen"),
    (["train.unfreeze_at_epoch=2"], "unfreeze_at_epoch needs train.freeze"),
    (["optim.groups=[{params: 'nope'}]"], "optim.groups: 'nope' matches no name"),
    (["model.lora={targets: [features]}"], "is a Sequential; LoRA adapts"),
    (["model.lora={targets: [zzz]}"], "model.lora.targets: 'zzz' matches no name"),
    (["model.init_from=/no/such/run"], "neither a run directory nor a .safetensors file"),
])
def test_mistakes_are_one_line_config_errors(tmp_path: Path, override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _train(tmp_path, *override)


def test_init_from_that_fits_nothing_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"other.weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ConfigError, match="no tensor of .* fits this model"):
        _train(tmp_path, f"model.init_from={tmp_path / 'w.safetensors'}")
