"""ONNX export of every family with a parity check against the eager model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ember
from ember.export import export_onnx
from tests.conftest import run_cli

FAMILIES = {
    "digits-cnn": ["train.epochs=1", "data.limit=200", "model.channels=[4,8]", "model.hidden=[16]"],
    "iris-mlp": ["train.epochs=2"],
    "stdlib-modules-lstm": ["train.max_steps=3", "data.per_class=8", "data.max_len=32", "model.hidden_size=8",
                            "model.num_layers=2"],
    "stdlib-modules-transformer": ["train.max_steps=3", "data.per_class=8", "data.max_len=32", "model.d_model=16",
                                   "model.d_ff=16"],
    "stdlib-char-gpt": ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1", "model.n_embd=32",
                        "train.max_steps=5"],
    "sunspots-lstm": ["train.epochs=1", "model.hidden_size=8"],
}


@pytest.mark.parametrize("recipe", list(FAMILIES))
def test_export_parity_for_every_family(recipe: str, tmp_path: Path) -> None:
    run = ember.train(recipe, [*FAMILIES[recipe], f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    result = export_onnx(run.path)
    assert (run.path / "export" / "model.onnx").stat().st_size > 0
    assert result["parity"]["max_abs_diff"] < 1e-4
    if "prediction_agreement" in result["parity"]:
        assert result["parity"]["prediction_agreement"] == 1.0
    if recipe == "stdlib-char-gpt":  # dynamic sequence axis: a shorter prompt runs through the same graph
        assert result["parity_short_sequence"]["max_abs_diff"] < 1e-4
        from ember.export.onnx import generate_onnx

        assert len(generate_onnx(run.path, "def ", max_new_tokens=10, temperature=0)) >= 1
    assert json.loads((run.path / "export" / "export.json").read_text()) == result


def test_int8_and_bad_opset(tmp_path: Path) -> None:
    run = ember.train("digits-cnn", [*FAMILIES["digits-cnn"], f"log.runs_dir={tmp_path}", "log.report=false"],
                      verbose=False)
    proc = run_cli("export", run.path, "--int8", check=True)
    result = json.loads(proc.stdout)  # stdout is the JSON alone; the progress lines go to stderr
    assert "[ember] export: tracing" in proc.stderr and "[ember] export: quantizing" in proc.stderr
    assert result["int8"]["size_mb"] < result["size_mb"]
    assert result["int8"]["parity"]["prediction_agreement"] >= 0.9
    bad = run_cli("export", run.path, "--opset", "9")
    assert bad.returncode == 2 and "valid: 17..23" in bad.stderr
