"""Inputs that used to crash with a traceback (exit 1) or give a wrong answer (exit 0): each is
now exit 2 and one line naming what was wrong."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import SafetensorError

import ember
import ember.api
import ember.training.device as device_mod
import ember.weights
from ember.cli import main
from ember.errors import ConfigError
from tests.reliability.conftest import TINY_XOR
from tests.reliability.images import png_header_claiming

CSV_HEAD = "a,b,label\n"


def _exit(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("name, text, what", [
    ("config.yaml", "- a\n- b\n", "mapping of config sections"),
    ("data_info.json", "{not json", "not valid JSON"),
    ("data_info.json", "[1, 2]", "JSON object"),
    ("data_info.json", '{"task": 1}', "does not describe the data"),
    ("summary.json", "\x00\x01garbage", "not valid JSON"),
])
def test_damaged_run_files(xor_run: Path, copy_run: Callable[[Path], Path], capsys: pytest.CaptureFixture[str],
                           name: str, text: str, what: str) -> None:
    run = copy_run(xor_run)
    (run / name).write_text(text)
    code, err = _exit(capsys, "evaluate", run)
    _one_line_error(code, err)
    assert what in err


def test_runs_listing_survives_a_damaged_summary(xor_run: Path, copy_run: Callable[[Path], Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(xor_run)
    (run / "summary.json").write_text("{oops")
    assert main(["runs", str(run.parent)]) == 0
    assert "damaged summary.json" in capsys.readouterr().out


def _csv(tmp_path: Path, body: str | bytes) -> Path:
    path = tmp_path / "data.csv"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


def _rows(n: int, classes: int = 2) -> str:
    return "".join(f"{i},{i % 7},{i % classes}\n" for i in range(n))


@pytest.mark.parametrize("body, message", [
    (CSV_HEAD + _rows(40, classes=1), "holds one class"),
    (CSV_HEAD + _rows(2), "cannot be split"),
    (CSV_HEAD + _rows(20) + "1,2\n" + _rows(20), "row 22: 2 fields, the header has 3"),
    (CSV_HEAD + _rows(20) + "1,2,\n" + _rows(20), "row 22: no label"),
    (os.urandom(4000), "not a UTF-8 text CSV"),
    (CSV_HEAD + _rows(20) + "nan,2,1\n" + _rows(20), "row 22, column 'a': 'nan' is not a finite number"),
    (CSV_HEAD + _rows(20) + "1,inf,1\n" + _rows(20), "row 22, column 'b': 'inf' is not a finite number"),
    (CSV_HEAD + _rows(20) + "1,1e39,1\n" + _rows(20), "not a finite number"),
])
def test_bad_training_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str | bytes,
                          message: str) -> None:
    path = _csv(tmp_path, body)
    code, err = _exit(capsys, "train", "iris-mlp", "data.name=csv", f"data.path={path}", "train.epochs=1",
                      "log.report=false", "--run-dir", tmp_path / "run")
    _one_line_error(code, err)
    assert message in err


def test_nan_in_a_predict_csv(iris_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = json.loads((iris_run / "data_info.json").read_text())
    header = ",".join(info["feature_names"])
    path = _csv(tmp_path, f"{header}\n5.1,3.5,1.4,0.2\nnan,3.0,1.0,0.1\n")
    code, err = _exit(capsys, "predict", iris_run, path)
    _one_line_error(code, err)
    assert "row 3" in err and "not a finite number" in err


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.inf", "optim.lr: got inf; input should be a finite number"),
    ("optim.lr=.nan", "finite number"),
    ("train.epochs=1e999", "train.epochs"),
])
def test_non_finite_config_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ember.load_config("iris-mlp", [override])


@pytest.mark.parametrize("recipe, override, message", [
    ("iris-mlp", "model.hidden=[0]", "model.hidden.0: got 0; input should be greater than or equal to 1"),
    ("iris-mlp", "model.hidden=[-3]", "model.hidden.0: got -3"),
    ("digits-cnn", "model.channels=[100000000]", "model.channels.0: got 100000000; input should be less than"),
    ("iris-mlp", "train.seed=100000000000000000000000", "train.seed: got 100000000000000000000000"),
    ("iris-mlp", "train.threads=99999999999", "train.threads: got 99999999999"),
    ("iris-mlp-dp", "train.privacy.target_epsilon=1e-300", "target_epsilon: got '1e-300'; input should be greater"),
])
def test_widths_seeds_threads_and_budgets_in_range(recipe: str, override: str, message: str) -> None:
    """A zero, negative or absurd width, a seed past NumPy's range, a tiny DP budget: refused by the config."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        ember.load_config(recipe, [override])


def _image_folder(root: Path, per_class: int, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (side, side, 3)).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_image_size_zero_refused_and_an_int_is_a_square(tmp_path: Path) -> None:
    folder = ["data.name=image_folder", f"data.path={tmp_path}", "model.name=cnn"]
    with pytest.raises(ConfigError, match="data.image_size"):
        ember.load_config("digits-cnn", [*folder, "data.image_size=[0,0]"])
    cfg = ember.load_config("digits-cnn", [*folder, "data.image_size=16"])
    assert tuple(cfg.data.image_size) == (16, 16)


def test_image_folder_with_one_image_per_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _image_folder(tmp_path / "imgs", per_class=1)
    code, err = _exit(capsys, "train", "digits-cnn", "data.name=image_folder", f"data.path={root}",
                      "data.image_size=8", "train.epochs=1", "log.report=false", "--run-dir", tmp_path / "run")
    _one_line_error(code, err)
    assert "cannot be split" in err


def test_decompression_bomb_in_train_predict_and_explain(digits_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bomb = png_header_claiming(40000, 40000)
    root = _image_folder(tmp_path / "imgs", per_class=6)
    (root / "cat" / "bomb.png").write_bytes(bomb)
    code, err = _exit(capsys, "train", "digits-cnn", "data.name=image_folder", f"data.path={root}",
                      "data.image_size=8", "train.epochs=1", "log.report=false", "--run-dir", tmp_path / "run")
    _one_line_error(code, err)
    assert "bomb.png" in err and "too large" in err
    (tmp_path / "bomb.png").write_bytes(bomb)
    for command in ("predict", "explain"):
        code, err = _exit(capsys, command, digits_run, tmp_path / "bomb.png")
        _one_line_error(code, err)
        assert "too large" in err


@pytest.mark.parametrize("which", ["--run-dir", "log.runs_dir"])
def test_run_folder_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    target = ["--run-dir", a_file / "run"] if which == "--run-dir" else [f"log.runs_dir={a_file}"]
    code, err = _exit(capsys, "train", "xor-mlp", "train.epochs=1", "log.report=false", *target)
    _one_line_error(code, err)
    assert "is a file" in err


def test_disk_full_names_the_file_and_keeps_nothing_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    real = ember.weights.save_file

    def full_disk(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        if "checkpoints" in filename:
            Path(filename).write_bytes(b"\0" * 10)  # what a full disk leaves: a torn file
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                  'message: "No space left on device" })')
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ember.weights, "save_file", full_disk)
    code, err = _exit(capsys, "train", "xor-mlp", *TINY_XOR, "--run-dir", tmp_path / "run")
    _one_line_error(code, err)
    assert "No space left on device" in err and "model.safetensors" in err and "nothing partial" in err
    leftovers = [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    assert leftovers == []


def test_checkpoint_fallback_is_an_ember_warning_line(xor_run: Path, copy_run: Callable[[Path], Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(xor_run)
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    (run / "model.safetensors").unlink()
    (ckpts[-1] / "state.json").write_text("{}")  # the newest one fails its sha256 check
    code = main(["train", "--resume", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if "skipped bad checkpoint" in ln]
    assert len(warning) == 1 and warning[0].startswith("warning: skipped bad checkpoint(s)")
    assert "UserWarning" not in err and ".py:" not in err


def test_bf16_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(device_mod, "cpu_has_native_bf16", lambda: False)
    code, err = _exit(capsys, "train", "xor-mlp", "train.precision=bf16", "train.device=cpu",
                      "--run-dir", tmp_path / "run")
    _one_line_error(code, err)
    assert "no native bf16" in err and "train.precision=fp32" in err
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # fp16 needs CUDA in Ember; the scaler's bookkeeping is the same on the CPU, so the check is lifted here.
    import ember.training.session

    monkeypatch.setattr(ember.training.session, "check_precision", lambda precision, device: None)
    cfg = [*TINY_XOR, "train.precision=fp16"]
    whole = ember.train("xor-mlp", cfg, run_dir=tmp_path / "whole", verbose=False).path
    last = json.loads((whole / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert last["scaler"]["scale"] > 0 and last["scaler"]["_growth_tracker"] == 6
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step-00000006")
    (cut / "checkpoints" / "latest").write_text("step-00000004\n")
    (cut / "model.safetensors").unlink()
    ember.train(resume=cut, verbose=False)
    resumed = json.loads((cut / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert resumed["scaler"] == last["scaler"]  # the growth tracker went on from 4, not from 0


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _exit(capsys, "train", "xor-mlp", "train.epochs=1", "log.report=false",
                      "--run-dir", tmp_path / ("a" * 300))
    _one_line_error(code, err)
    assert "File name too long" in err and "a" * 300 in err
