"""`ember plan`: parameter counts, FLOPs, memory and batch arithmetic, without training."""

from __future__ import annotations

import json
import math

import pytest

from ember.config import load
from ember.data import build as build_data
from ember.errors import ConfigError
from ember.models import build, count_parameters
from ember.plan import plan
from tests.conftest import run_cli


@pytest.mark.parametrize("recipe", ["digits-cnn", "xor-mlp", "iris-mlp"])
def test_counts_match_the_built_model(recipe: str) -> None:
    result = plan(recipe)
    cfg = load(recipe)
    bundle = build_data(cfg.data, cfg.train.seed)
    assert result["model"]["params"] == count_parameters(build(cfg.model, bundle.info))
    assert result["flops"]["forward_per_sample"] > 0
    assert result["flops"]["train_per_sample"] == 3 * result["flops"]["forward_per_sample"]
    b = result["batch"]
    assert b["steps_per_epoch"] == math.ceil(len(bundle.train) / cfg.data.batch_size)


def test_xor_flops_are_the_matmuls() -> None:
    # 2-4-1 MLP: 2*(2*4) + 2*(4*1) multiply-adds counted as 2 FLOPs each
    assert plan("xor-mlp")["flops"]["forward_per_sample"] == 2 * (2 * 4 + 4 * 1)


def test_effective_batch_and_optimizer_memory() -> None:
    acc = plan("digits-cnn", ["train.grad_accum=4", "data.batch_size=16"])
    assert acc["batch"]["effective"] == 64
    params = acc["model"]["params"]
    assert acc["memory_bytes"]["optimizer"] == 2 * 4 * params  # AdamW: two moments
    sgd = plan("digits-cnn", ["optim.name=sgd"])
    assert sgd["memory_bytes"]["optimizer"] == 4 * params  # momentum buffer
    plain = plan("digits-cnn", ["optim.name=sgd", "optim.momentum=0"])
    assert plain["memory_bytes"]["optimizer"] == 0
    assert plan("digits-cnn", ["train.max_steps=7"])["batch"]["total_steps"] == 7


def test_plan_without_data_files() -> None:
    result = plan("mnist-cnn", ["data.root=/nonexistent"])
    assert "note" in result["data"] and result["data"]["input_shape"] == [1, 28, 28]
    assert result["model"]["params"] > 100_000


def test_plan_bad_override() -> None:
    with pytest.raises(ConfigError):
        plan("digits-cnn", ["model.chanels=[1]"])


def test_cli_plan_json_and_error() -> None:
    proc = run_cli("plan", "digits-cnn", "--json", check=True)
    assert json.loads(proc.stdout)["model"]["name"] == "cnn"
    bad = run_cli("plan", "digits-cnn", "train.epochs=0")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
