"""`ember plan`: parameter counts, FLOPs, memory and batch arithmetic, without training."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ember.config import load
from ember.data import build as build_data
from ember.errors import ConfigError
from ember.models import build, count_parameters
from ember.plan import _rnn_flops, plan, print_plan
from tests.conftest import run_cli

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"


@pytest.mark.parametrize("recipe", ["digits-cnn", "xor-mlp", "iris-mlp"])
def test_counts_match_the_built_model(recipe: str) -> None:
    result = plan(recipe)
    cfg = load(recipe)
    bundle = build_data(cfg.data, cfg.train.seed)
    params = count_parameters(build(cfg.model, bundle.info))
    assert result["model"]["params"] == params == result["model"]["trainable_params"]
    assert result["model"]["planned_on"] == "cpu"
    assert result["flops"]["forward_per_sample"] > 0
    assert result["flops"]["train_per_sample"] == 3 * result["flops"]["forward_per_sample"]
    assert "3x forward" in result["flops"]["note"]
    b = result["batch"]
    assert b["world_size"] == 1 and b["effective"] == cfg.data.batch_size
    assert b["steps_per_epoch"] == math.ceil(len(bundle.train) / cfg.data.batch_size)
    assert b["total_steps"] == cfg.train.epochs * b["steps_per_epoch"]
    assert result["data"]["train_size"] == len(bundle.train) and "note" not in result["data"]
    assert result["config"]["model"]["name"] == cfg.model.name
    json.dumps(result)  # JSON-able


def test_xor_flops_are_the_matmuls() -> None:
    # 2-4-1 MLP: 2*4 + 4*1 multiply-adds, counted as 2 FLOPs each
    assert plan("xor-mlp")["flops"]["forward_per_sample"] == 2 * (2 * 4 + 4 * 1)


def test_effective_batch_steps_and_drop_last() -> None:
    base = plan("digits-cnn")
    train = base["data"]["train_size"]
    acc = plan("digits-cnn", ["train.grad_accum=4", "data.batch_size=16"])
    assert acc["batch"]["effective"] == 64
    assert acc["batch"]["steps_per_epoch"] == math.ceil(train / 64)
    dropped = plan("digits-cnn", ["data.batch_size=100", "data.drop_last=true"])
    assert dropped["batch"]["steps_per_epoch"] == train // 100
    assert plan("digits-cnn", ["train.max_steps=7"])["batch"]["total_steps"] == 7


def test_optimizer_memory_by_optimizer() -> None:
    adamw = plan("digits-cnn")
    params = adamw["model"]["params"]
    mem = adamw["memory_bytes"]
    assert mem["weights"] == mem["gradients"] == 4 * params
    assert mem["optimizer"] == 2 * 4 * params  # AdamW: two fp32 moments
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")
    assert plan("digits-cnn", ["optim.name=sgd"])["memory_bytes"]["optimizer"] == 4 * params  # momentum
    plain = plan("digits-cnn", ["optim.name=sgd", "optim.momentum=0"])
    assert plain["memory_bytes"]["optimizer"] == 0
    assert adamw["memory_mib"]["weights"] == pytest.approx(4 * params / 2**20, abs=1e-6)


def test_activations_scale_with_batch_and_precision() -> None:
    fp32 = plan("digits-cnn")["memory_bytes"]["activations"]
    assert fp32 > 0
    assert plan("digits-cnn", ["data.batch_size=64"])["memory_bytes"]["activations"] == 2 * fp32
    assert plan("digits-cnn", ["train.precision=bf16"])["memory_bytes"]["activations"] == fp32 // 2


def test_plan_without_data_files() -> None:
    result = plan("mnist-cnn", ["data.root=/nonexistent", "data.installed=false"])
    assert result["data"]["note"].startswith("data files absent; sizes assumed")
    assert result["data"]["input_shape"] == [1, 28, 28]
    cfg = load("mnist-cnn")
    from ember.data import static_info

    info, train_size = static_info(cfg.data)
    assert result["data"]["train_size"] == train_size
    assert result["model"]["params"] == count_parameters(build(cfg.model, info))


def test_large_model_is_planned_on_meta() -> None:
    result = plan("gpt2-124m")
    assert result["model"]["planned_on"] == "meta"
    assert result["model"]["params"] > 100_000_000
    f = result["flops"]
    # Forward FLOPs per token are at least 2 per weight of the blocks and the LM head.
    assert f["forward_per_token"] > 2 * 0.9 * result["model"]["params"]
    assert result["precision"] == "bf16" and "note" in result["data"]


def test_recurrent_flops_are_counted() -> None:
    # GRU decomposes into matmuls the counter sees: the analytic count must agree with it.
    gru = nn.GRU(3, 8, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.zeros(1, 5, 3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        gru(x)
    assert _rnn_flops(gru, x) == counter.get_total_flops() > 0
    # LSTM runs a fused CPU kernel the counter cannot see; the plan still counts it.
    lstm = nn.LSTM(3, 8, batch_first=True)
    assert _rnn_flops(lstm, x) == 2 * 5 * 4 * 8 * (3 + 8)
    assert plan("sunspots-lstm")["flops"]["forward_per_sample"] > 0


def test_plan_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    plan("digits-cnn")
    assert torch.equal(before, torch.get_rng_state())


def test_plan_bad_override() -> None:
    with pytest.raises(ConfigError):
        plan("digits-cnn", ["model.chanels=[1]"])


def test_print_plan_human_units(capsys: pytest.CaptureFixture[str]) -> None:
    print_plan(plan("mnist-cnn", ["data.root=/nonexistent", "data.installed=false"]))
    out = capsys.readouterr().out
    assert "plan: mnist-cnn" in out and "MiB" in out and "105.91K" in out
    assert "data files absent" in out


def test_cli_plan_json_and_errors() -> None:
    proc = run_cli("plan", "digits-cnn", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["model"]["name"] == "cnn" and result["recipe"] == "digits-cnn"
    for bad in (["train.epochs=0"], ["model.chanels=[1]"]):
        failed = run_cli("plan", "digits-cnn", *bad)
        assert failed.returncode == 2, failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), failed.stderr
    table = run_cli("plan", "xor-mlp", check=True)
    assert "plan: xor-mlp" in table.stdout


@pytest.mark.slow
def test_overhead_benchmark_runs() -> None:
    # Only that it runs and reports its figures; its timings are not tested.
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--epochs", "1", "--rounds", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("ember_s", "raw_s", "ratio", "ember_train_only_s", "ratio_train_only", "rounds", "epochs",
                "torch", "threads"):
        assert key in out
    assert out["rounds"] == 1 and out["epochs"] == 1 and out["threads"] == 2
    assert out["same_final_weights"] is True  # both loops did the same work


def test_plan_per_rank_memory_for_ddp_and_fsdp() -> None:
    args = ("stdlib-char-gpt", ["data.max_chars=120000", "data.block_size=32", "model.n_layer=2", "model.n_embd=32"])
    one = plan(*args)
    ddp = plan(*args, nproc=4)
    fsdp = plan(args[0], [*args[1], "train.strategy=fsdp"], nproc=4)
    assert (one["strategy"], ddp["strategy"], fsdp["strategy"]) == ("single", "ddp", "fsdp")
    m1, md, mf = one["memory_bytes"], ddp["memory_bytes"], fsdp["memory_bytes"]
    assert md["weights"] == m1["weights"] and md["gradient_buckets"] == m1["gradients"]
    assert mf["weights"] == -(-m1["weights"] // 16) * 4 and mf["optimizer"] * 4 >= m1["optimizer"]
    assert 0 < mf["unsharded_working_set"] <= m1["weights"]  # with 2 blocks: everything
    # Each rank runs a quarter of the micro-batch; the global batch is unchanged.
    assert ddp["batch"]["micro_batch_per_rank"] * 4 == one["batch"]["batch_size"]
    assert ddp["batch"]["effective"] == one["batch"]["effective"]
    assert abs(md["activations"] * 4 - m1["activations"]) <= m1["activations"] * 0.05


def test_plan_bad_nproc_and_single_strategy(cli) -> None:  # noqa: ANN001
    proc = cli("plan", "digits-cnn", "--nproc", "0")
    assert proc.returncode == 2 and "--nproc: got 0" in proc.stderr
    proc = cli("plan", "digits-cnn", "train.strategy=single", "--nproc", "2")
    assert proc.returncode == 2 and "train.strategy" in proc.stderr
