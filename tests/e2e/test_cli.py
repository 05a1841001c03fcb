"""The CLI end to end: train, evaluate, predict, runs, recipes, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_DIGITS, run_cli


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    proc = run_cli("train", "train.epochs=8", "data.limit=320", "train.threads=1", "log.image_grid=16",
                   "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    runs = list((root / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("digits-cnn-")
    return runs[0]


def test_run_directory_layout(digits_run: Path) -> None:
    for name in ("config.yaml", "data_info.json", "metrics.jsonl", "summary.json", "model.safetensors",
                 "report.html", "checkpoints/latest"):
        assert (digits_run / name).exists(), name
    assert list((digits_run / "plots").glob("*.png"))
    summary = json.loads((digits_run / "summary.json").read_text())
    for key in ("params", "wall_time_s", "samples_per_s", "train_time_s"):
        assert summary[key] > 0
    assert 0.5 < summary["test"]["accuracy"] <= 1
    assert len(summary["test"]["confusion_matrix"]) == 10
    rows = [json.loads(line) for line in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "val"}
    html = (digits_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "https://" not in html


def test_evaluate(digits_run: Path) -> None:
    proc = run_cli("evaluate", digits_run, "--json", check=True)
    metrics = json.loads(proc.stdout)
    summary = json.loads((digits_run / "summary.json").read_text())
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert "accuracy" in run_cli("evaluate", digits_run, "--split", "val", check=True).stdout


def test_predict_image(digits_run: Path, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for i in range(3):
        img = (digits.images[i] / 16 * 255).astype(np.uint8)
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(img).resize((32, 32)).save(path)
        paths.append(path)
    proc = run_cli("predict", digits_run, *paths, "--json", check=True)
    preds = json.loads(proc.stdout)
    assert len(preds) == 3
    for p in preds:
        assert p["label"] in [str(i) for i in range(10)]
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert "digit0.png" in run_cli("predict", digits_run, paths[0], check=True).stdout


def test_runs_and_recipes(digits_run: Path) -> None:
    out = run_cli("runs", digits_run.parent, check=True).stdout
    assert digits_run.name[:12] in out
    recipes = run_cli("recipes", check=True).stdout
    assert "digits-cnn" in recipes and "xor-mlp" in recipes


def _assert_user_error(proc, *needles: str) -> None:  # noqa: ANN001
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["train", "digits-cn"], ["unknown recipe 'digits-cn'", "did you mean 'digits-cnn'"]),
        (["train", "train.epoch=2"], ["train.epoch: unknown key", "did you mean 'epochs'"]),
        (["train", "model.name=resnet"], ["model.name: unknown model 'resnet'", "valid: cnn, efficientnet_lite0, gpt, hf_encoder, llama, mf, mlp, mobilenet_v2, rnn, transformer, two_tower"]),
        (["train", "data.name=mnistt"], ["data.name: unknown dataset 'mnistt'", "did you mean 'mnist'"]),
        (["train", "data.batch_size=0"], ["data.batch_size: got 0"]),
        (["train", "mnist-cnn", "data.root=/nonexistent", "data.installed=false"], ["download"]),
        (["evaluate", "/no/such/run"], ["does not exist"]),
        (["evaluate", "."], ["not a run directory"]),
        (["train", "--resume", "/no/such/run"], ["does not exist"]),
        (["frobnicate"], ["got 'frobnicate'; valid: train, evaluate"]),
    ],
)
def test_user_errors_exit_2_in_one_line(args: list[str], needles: list[str], tmp_path: Path) -> None:
    _assert_user_error(run_cli(*args, cwd=tmp_path), *needles)


def test_bad_inputs_on_a_run(digits_run: Path, tmp_path: Path) -> None:
    _assert_user_error(run_cli("evaluate", digits_run, "--split", "dev"), "valid: train, val, test")
    _assert_user_error(run_cli("predict", digits_run, tmp_path / "missing.png"), "does not exist")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _assert_user_error(run_cli("predict", digits_run, text), "takes images")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    _assert_user_error(run_cli("predict", digits_run, broken), "cannot read image")


def test_tampered_or_pickled_weights_are_refused(digits_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    (copy / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    _assert_user_error(run_cli("evaluate", copy), "model.safetensors")
    assert not marker.exists()
    summary = json.loads((copy / "summary.json").read_text())
    del summary["weights_sha256"]
    (copy / "summary.json").write_text(json.dumps(summary))
    _assert_user_error(run_cli("evaluate", copy), "not a valid safetensors file")
    assert not marker.exists()


def test_run_dir_collision_keeps_existing_run(digits_run: Path) -> None:
    before = (digits_run / "model.safetensors").read_bytes()
    _assert_user_error(run_cli("train", *TINY_DIGITS, "--run-dir", digits_run), "already holds a run")
    assert (digits_run / "model.safetensors").read_bytes() == before


def test_resume_with_overrides_is_refused(digits_run: Path) -> None:
    _assert_user_error(run_cli("train", "--resume", digits_run, "train.epochs=9"), "drop the key=value")
