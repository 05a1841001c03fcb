"""Your own nn.Module and Datasets through `ember.train`, callbacks, loggers, and the light CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import ember
from ember.errors import ConfigError, DataError
from tests.conftest import run_cli


class TwoMoons(nn.Module):
    """A user's own model: nothing Ember knows about."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _datasets(n: int = 300, seed: int = 0) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    y = ((x[:, 0] * x[:, 1]) > 0).long()  # XOR of the signs: not linearly separable
    return (TensorDataset(x[:200], y[:200]), TensorDataset(x[200:250], y[200:250]),
            TensorDataset(x[250:], y[250:]))


class Recorder(ember.Callback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.val: list[float] = []

    def on_fit_start(self, state: ember.FitState) -> None:
        self.calls.append(("start", state.step))

    def on_step_end(self, state: ember.FitState) -> None:
        self.calls.append(("step", state.step))

    def on_validation_end(self, state: ember.FitState) -> None:
        self.calls.append(("val", state.step))
        self.val.append(state.val["accuracy"])

    def on_checkpoint(self, state: ember.FitState) -> None:
        assert state.checkpoint is not None and (state.checkpoint / "manifest.json").is_file()
        self.calls.append(("ckpt", state.step))

    def on_fit_end(self, state: ember.FitState) -> None:
        self.calls.append(("end", state.step))


OVERRIDES = ["train.epochs=4", "data.batch_size=50", "optim.lr=0.05", "train.threads=1",
             "train.checkpoint_min_interval_s=0"]  # every epoch checkpointed: the callback order is tested


@pytest.fixture(scope="module")
def object_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorder]:
    torch.manual_seed(0)
    recorder = Recorder()
    run = ember.train(overrides=[*OVERRIDES, "log.tensorboard=true"], model=TwoMoons(), data=_datasets(),
                      run_dir=tmp_path_factory.mktemp("obj") / "run", callbacks=[recorder], verbose=False)
    return run.path, recorder


def test_object_run_is_a_complete_run(object_run: tuple[Path, Recorder]) -> None:
    path, _ = object_run
    for name in ("config.yaml", "data_info.json", "metrics.jsonl", "summary.json", "model.safetensors",
                 "report.html", "checkpoints/latest"):
        assert (path / name).exists(), name
    cfg = ember.load_run(path, model=TwoMoons()).config
    assert cfg.model.name == "object" and cfg.model.class_name.endswith("TwoMoons")
    assert cfg.data.name == "object" and "TensorDataset" in cfg.data.description
    summary = json.loads((path / "summary.json").read_text())
    assert summary["test"]["accuracy"] > 0.6


def test_callbacks_fire_in_order(object_run: tuple[Path, Recorder]) -> None:
    _, rec = object_run
    kinds = [k for k, _ in rec.calls]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("step") == 16 and kinds.count("val") == 4 and kinds.count("ckpt") == 4
    # each epoch: 4 steps, then validation, then the checkpoint
    assert kinds[1:7] == ["step", "step", "step", "step", "val", "ckpt"]
    assert rec.val == sorted(rec.val) or len(rec.val) == 4


def test_reopen_with_model_evaluate_predict(object_run: tuple[Path, Recorder], tmp_path: Path) -> None:
    path, _ = object_run
    summary = json.loads((path / "summary.json").read_text())
    metrics = ember.evaluate(path, model=TwoMoons(), data=_datasets())
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    # The numeric precision has its own key; "precision" stays the metric (a number).
    assert metrics["dtype"] == "fp32" and metrics["precision"] == pytest.approx(summary["test"]["precision"])
    rows = tmp_path / "rows.csv"
    rows.write_text("x0,x1\n0.5,0.5\n-1,1\n")
    preds = ember.predict(path, [rows], model=TwoMoons())
    assert [p["label"] for p in preds] == ["1", "0"]
    with pytest.raises(ConfigError, match="passed to ember.train as an object"):
        ember.load_run(path)
    proc = run_cli("evaluate", path)
    assert proc.returncode == 2 and "load_run(path, model=" in proc.stderr


def test_tensorboard_reader_sees_the_scalars(object_run: tuple[Path, Recorder]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, _ = object_run
    acc = EventAccumulator(str(path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "val/accuracy", "val/loss"} <= set(tags)
    assert [e.step for e in acc.Scalars("val/accuracy")] == [4, 8, 12, 16]
    logged = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    val_acc = [r["accuracy"] for r in logged if r.get("split") == "val"]
    assert [e.value for e in acc.Scalars("val/accuracy")] == pytest.approx(val_acc)


def test_object_run_resumes_exactly(tmp_path: Path) -> None:
    """Killed by a callback after step 6 (a checkpoint at 4), resumed: same weights as straight through."""

    class Crash(ember.Callback):
        def on_step_end(self, state: ember.FitState) -> None:
            if state.step == 6:
                raise RuntimeError("simulated crash")

    torch.manual_seed(0)
    ember.train(overrides=OVERRIDES, model=TwoMoons(), data=_datasets(), run_dir=tmp_path / "a", verbose=False)
    torch.manual_seed(0)
    with pytest.raises(ember.CallbackError, match=r"Crash.on_step_end raised RuntimeError: simulated crash"):
        ember.train(overrides=OVERRIDES, model=TwoMoons(), data=_datasets(), run_dir=tmp_path / "b",
                    callbacks=[Crash()], verbose=False)
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    with pytest.raises(ConfigError, match="pass model= and data= again"):
        ember.train(resume=tmp_path / "b", verbose=False)
    ember.train(resume=tmp_path / "b", model=TwoMoons(), data=_datasets(), verbose=False)
    a = json.loads((tmp_path / "a" / "summary.json").read_text())["weights_sha256"]
    b = json.loads((tmp_path / "b" / "summary.json").read_text())["weights_sha256"]
    assert a == b


def test_stop_training_ends_cleanly(tmp_path: Path) -> None:
    class StopAtTwo(ember.Callback):
        def on_validation_end(self, state: ember.FitState) -> None:
            if state.epoch == 2:
                raise ember.StopTraining("enough")

    run = ember.train(overrides=OVERRIDES, model=TwoMoons(), data=_datasets(), run_dir=tmp_path / "r",
                      callbacks=[StopAtTwo()], verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["stopped_early"] and summary["epochs"] == 2 and summary["steps"] == 8


def test_mlflow_logger_sqlite(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run = ember.train("xor-mlp", ["train.epochs=30", "log.mlflow={experiment: xor}", "log.report=false"],
                      run_dir=tmp_path / "r", verbose=False)
    client = MlflowClient(tracking_uri=f"sqlite:///{(run.path / 'mlflow.db').resolve()}")
    [found] = client.search_runs([client.get_experiment_by_name("xor").experiment_id])
    assert found.data.params["optim.name"] == ember.load_config("xor-mlp").optim.name
    assert "val_loss" in found.data.metrics and found.info.status == "FINISHED"


def test_bad_object_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="pass a DataBundle or a"):
        ember.train(model=TwoMoons(), data="data.csv", run_dir=tmp_path / "a", verbose=False)
    with pytest.raises(DataError, match="task: got 'ranking'"):
        ember.train(model=TwoMoons(), data=_datasets(), task="ranking", run_dir=tmp_path / "b", verbose=False)
    with pytest.raises(DataError, match="must be an \\(input, target\\) pair"):
        ember.data_bundle([torch.zeros(2)] * 4)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_overrides_anywhere_and_version(tmp_path: Path) -> None:
    proc = run_cli("train", "xor-mlp", "--quiet", "train.epochs=3", "--run-dir", tmp_path / "r",
                   "log.report=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs"] == 3
    out = subprocess.run([sys.executable, "-m", "ember", "--version"], capture_output=True, text=True)
    assert out.stdout.strip() == f"ember {ember.__version__}"
    from importlib.metadata import version

    assert version("ember") == ember.__version__


def test_predict_takes_tensors_arrays_and_datasets(object_run: tuple[Path, Recorder]) -> None:
    import numpy as np

    path, _ = object_run
    x = torch.tensor([[0.5, 0.5], [-1.0, 1.0], [2.0, 2.0]])
    from_tensor = ember.predict(path, x, model=TwoMoons())
    assert [p["input"] for p in from_tensor] == ["tensor#1", "tensor#2", "tensor#3"]
    labels = [p["label"] for p in from_tensor]
    assert [p["label"] for p in ember.predict(path, x.numpy(), model=TwoMoons())] == labels
    dataset = TensorDataset(x, torch.zeros(3, dtype=torch.long))
    assert [p["label"] for p in ember.predict(path, dataset, model=TwoMoons(), batch_size=2)] == labels
    assert [p["label"] for p in ember.predict(path, x[1], model=TwoMoons())] == labels[1:2]  # one example
    with pytest.raises(DataError, match=r"examples of shape \(3,\), this model takes \(2,\)"):
        ember.predict(path, np.zeros((4, 3)), model=TwoMoons())
    with pytest.raises(DataError, match="NaN"):
        ember.predict(path, torch.tensor([[float("nan"), 0.0]]), model=TwoMoons())


def test_an_own_model_run_is_described_by_its_model_and_data(object_run: tuple[Path, Recorder]) -> None:
    import yaml

    path, _ = object_run
    description = yaml.safe_load((path / "config.yaml").read_text())["description"]
    assert description.startswith("Own model TwoMoons (82 parameters) trained on Datasets: TensorDataset"), description
