"""The loop: accumulation equals a larger batch, non-finite handling, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ember
from ember.config import load
from ember.data import build as build_data
from ember.errors import NonFiniteLossError
from ember.models import build as build_model
from ember.runs import new_run_dir
from ember.tasks import for_info
from ember.training.device import cpu_has_native_bf16
from ember.training.loop import fit


def _fit(tmp_path: Path, overrides: list[str], name: str = "r") -> torch.nn.Module:
    cfg = load("iris-mlp", overrides + [f"log.runs_dir={tmp_path}", "train.threads=1"])
    bundle = build_data(cfg.data, cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    run = new_run_dir(tmp_path, cfg.recipe, tmp_path / name)
    fit(model, bundle, for_info(bundle.info), cfg, run, torch.device("cpu"))
    return model


def test_grad_accumulation_equals_larger_batch(tmp_path: Path) -> None:
    common = ["train.epochs=3", "data.shuffle=true", "optim.name=sgd", "optim.lr=0.1"]
    big = _fit(tmp_path, common + ["data.batch_size=24", "train.grad_accum=1"], "big")
    acc = _fit(tmp_path, common + ["data.batch_size=8", "train.grad_accum=3"], "acc")
    for (n, a), (_, b) in zip(big.state_dict().items(), acc.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_nonfinite_loss_stops_naming_the_step(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"at step \d+"):
        _fit(tmp_path, ["optim.lr=1e30", "optim.name=sgd", "train.epochs=5"])


def test_nonfinite_skip_skips_only_bad_steps(tmp_path: Path) -> None:
    cfg = load("iris-mlp", ["train.epochs=2", "train.nonfinite=skip", f"log.runs_dir={tmp_path}"])
    bundle = build_data(cfg.data, cfg.train.seed)
    model = build_model(cfg.model, bundle.info)
    task = for_info(bundle.info)
    calls = {"n": 0}
    real = task.loss

    def sometimes_nan(out: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
        calls["n"] += 1
        loss = real(out, y, count)
        return loss * float("nan") if calls["n"] in (2, 5) else loss

    task.loss = sometimes_nan  # type: ignore[method-assign]
    before = [p.clone() for p in model.parameters()]
    state = fit(model, bundle, task, cfg, new_run_dir(tmp_path, "r", tmp_path / "r"), torch.device("cpu"))
    assert state.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_checkpoint_refuses_nonfinite_weights(tmp_path: Path) -> None:
    from ember.errors import CheckpointError
    from ember.training.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(tmp_path, 1, model, opt, {}, keep=2)
    assert not (tmp_path / "latest").exists()
    assert not list(tmp_path.glob("step-*"))


def test_early_stopping_and_best(tmp_path: Path) -> None:
    run = ember.train("iris-mlp", ["train.epochs=200", "train.early_stopping.metric=loss",
                                   "train.early_stopping.patience=2", "optim.lr=0.05",
                                   f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["stopped_early"] is True
    assert summary["epochs"] < 200
    assert (run.checkpoints / "best.safetensors").exists()


def test_unknown_early_stopping_metric(tmp_path: Path) -> None:
    from ember.errors import ConfigError

    with pytest.raises(ConfigError, match="valid: accuracy, f1, loss, precision, recall"):
        ember.train("iris-mlp", ["train.early_stopping.metric=acc", f"log.runs_dir={tmp_path}"], verbose=False)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16 (Ember refuses it there)")
def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    run = ember.train("iris-mlp", ["train.epochs=2", "train.precision=bf16", f"log.runs_dir={tmp_path}",
                                   "log.report=false"], verbose=False)
    assert json.loads(run.summary.read_text())["test"]["accuracy"] > 0


def test_fp16_on_cpu_is_a_config_error(tmp_path: Path) -> None:
    from ember.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        ember.train("iris-mlp", ["train.precision=fp16", "train.device=cpu", f"log.runs_dir={tmp_path}"],
                    verbose=False)
