"""Scale-out on the CPU with gloo: 2 processes give the weights of 1, checkpoints cross world
sizes, a SIGKILLed worker is restarted and resumes exactly, a failing rank ends the job.

Each test launches real worker processes through `ember train --nproc 2` (torchrun's agent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ember
from ember.weights import load_tensors

FAULTS = Path(__file__).parent / "faults"  # sitecustomize.py: fault injection for the workers
# A 2-block GPT (FSDP shards each block) without dropout, so that runs can be compared.
GPT = ["data.max_chars=120000", "data.block_size=32", "model.n_layer=2", "model.n_embd=32",
       "model.dropout=0", "train.max_steps=12", "train.checkpoint_every=6", "data.eval_batch_size=256",
       "log.report=false", "train.threads=1"]
FSDP = ["train.strategy=fsdp", "train.activation_checkpointing=true"]
# An MLP without dropout or batch norm (per-rank batch statistics differ from one process's),
# with gradient accumulation and a short last step that splits unevenly over the ranks.
MLP = ["train.epochs=2", "data.limit=400", "model.dropout=0", "model.batch_norm=false", "data.batch_size=30",
       "train.grad_accum=2", "log.report=false", "train.threads=1"]


def _launch(*args: str | Path, fault: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    if fault:
        env["PYTHONPATH"] = os.pathsep.join([str(FAULTS), env.get("PYTHONPATH", "")])
        env["EMBER_TEST_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "ember", "train", *map(str, args), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=timeout)


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert sorted(x) == sorted(y)
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def _cut_after_first_checkpoint(run: Path) -> None:
    """Make `run` look killed right after its step-6 checkpoint."""
    for extra in ("model.safetensors", "summary.json"):
        (run / extra).unlink()
    shutil.rmtree(run / "checkpoints" / "step-00000012")
    (run / "checkpoints" / "latest").write_text("step-00000006\n")


@pytest.fixture(scope="module")
def gpt_single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the GPT trained in this one process."""
    root = tmp_path_factory.mktemp("single")
    return ember.train("stdlib-char-gpt", GPT, run_dir=root / "run", verbose=False).path


@pytest.fixture(scope="module")
def gpt_fsdp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("fsdp") / "run"
    # Activation checkpointing too: recomputing the blocks in backward changes nothing.
    proc = _launch("stdlib-char-gpt", *GPT, *FSDP, "--nproc", "2", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    one = ember.train("digits-mlp", MLP, run_dir=tmp_path / "one", verbose=False).path
    # Each rank's batches built by a worker process: the same as one process building them.
    proc = _launch("digits-mlp", *MLP, "data.workers=1", "--nproc", "2", "--run-dir", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(one, tmp_path / "two") < 1e-5
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (summary["world_size"], summary["strategy"]) == (2, "ddp")
    assert summary["steps"] == json.loads((one / "summary.json").read_text())["steps"]
    # Only rank 0 wrote metrics: one line per logged step, not two.
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("split") == "train"]
    assert steps == sorted(set(steps))


def test_fsdp_two_processes_match_one(gpt_single: Path, gpt_fsdp: Path) -> None:
    assert _max_diff(gpt_single, gpt_fsdp) < 1e-5
    summary = json.loads((gpt_fsdp / "summary.json").read_text())
    assert (summary["world_size"], summary["strategy"]) == (2, "fsdp")
    ckpt = gpt_fsdp / "checkpoints" / "step-00000012"
    assert len(list((ckpt / "dcp").glob("*.safetensors"))) == 2  # one shard file per rank
    assert not (ckpt / "dcp" / ".metadata").exists()  # DCP's pickled metadata is never written
    # The final weights are one whole safetensors file all the same.
    assert load_tensors(gpt_fsdp / "model.safetensors")["wte.weight"].shape[1] == 32


def test_fsdp_checkpoint_resumes_in_one_process(gpt_single: Path, gpt_fsdp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(gpt_fsdp, run)
    _cut_after_first_checkpoint(run)
    ember.train(resume=run, verbose=False)
    assert _max_diff(gpt_single, run) < 1e-5
    assert json.loads((run / "summary.json").read_text())["world_size"] == 1


def test_one_process_checkpoint_resumes_with_two(gpt_single: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ember.train("stdlib-char-gpt", [*GPT, "train.strategy=fsdp"], run_dir=run, verbose=False)
    _cut_after_first_checkpoint(run)
    proc = _launch("--resume", run, "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step-00000006" in proc.stderr + proc.stdout
    assert _max_diff(gpt_single, run) < 1e-5
    assert json.loads((run / "summary.json").read_text())["strategy"] == "fsdp"


def test_sigkilled_worker_restarts_and_ends_with_the_same_weights(gpt_fsdp: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # Rank 1 SIGKILLs itself before step 9 on the first attempt; torchrun restarts both ranks,
    # which resume from the step-6 checkpoint.
    proc = _launch("stdlib-char-gpt", *GPT, *FSDP, "--nproc", "2", "--max-restarts", "1",
                   "--run-dir", run, fault="kill:1:8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step-00000006" in proc.stderr + proc.stdout
    assert _max_diff(gpt_fsdp, run) == 0.0  # the same computation, bit for bit


def test_failing_rank_fails_the_job_with_its_error(tmp_path: Path) -> None:
    proc = _launch("digits-mlp", *MLP, "--nproc", "2", "--run-dir", tmp_path / "run", fault="raise:1:3")
    assert proc.returncode == 1
    assert "injected failure on rank 1 at step 4" in proc.stderr
    assert "training failed" in proc.stderr.splitlines()[-1]


def test_hung_rank_times_out_instead_of_hanging(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _launch("digits-mlp", *MLP, "train.dist_timeout_s=5", "--nproc", "2", "--run-dir", tmp_path / "run",
                   fault="hang:1:3", timeout=200)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 150  # the 600 s hang was cut short by the 5 s collective timeout


@pytest.mark.parametrize("args,message", [
    (["--nproc", "0"], "--nproc: got 0"),
    (["--max-restarts", "2"], "--max-restarts needs --nproc"),
    (["--nproc", "2", "--max-restarts", "-1"], "--max-restarts: got -1"),
    (["--nproc", "2", "train.strategy=zero"], "train.strategy"),
])
def test_bad_launch_options_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = _launch("digits-mlp", *args, "--run-dir", tmp_path / "run")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_run_dir_in_use_is_refused_before_launch(gpt_single: Path) -> None:
    before = (gpt_single / "model.safetensors").read_bytes()
    proc = _launch("stdlib-char-gpt", "--nproc", "2", "--run-dir", gpt_single)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (gpt_single / "model.safetensors").read_bytes() == before


def test_strategy_single_with_two_processes_is_a_config_error(tmp_path: Path) -> None:
    proc = _launch("digits-mlp", *MLP, "train.strategy=single", "--nproc", "2", "--run-dir", tmp_path / "run")
    assert proc.returncode == 2
    assert "train.strategy: 'single' runs one process" in proc.stderr


def test_world_of_one_helpers() -> None:
    from ember.training.distributed import (
        DistEnv,
        all_sum,
        broadcast_object,
        gather_objects,
        resolve_strategy,
    )

    env = DistEnv()
    assert resolve_strategy("auto", env) == "single" and resolve_strategy("fsdp", env) == "single"
    assert resolve_strategy("auto", DistEnv(2, 1, 1)) == "ddp"
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_sum(t, env), t)
    assert broadcast_object("x", env) == "x" and gather_objects(3, env) == [3]


def test_activation_checkpointing_changes_no_gradient() -> None:
    from ember.config import load
    from ember.data.bundle import DataInfo
    from ember.models import build
    from ember.training.distributed import DistEnv, parallelize

    cfg = load("stdlib-char-gpt", GPT)
    info = DataInfo(task="lm", input_kind="tokens", input_shape=(32,), num_outputs=40, extra={"vocab_size": 40})
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = parallelize(build(cfg.model, info), "single", DistEnv(), torch.device("cpu"),
                            activation_checkpointing=checkpointed)
        x = torch.randint(0, 40, (4, 32))
        model(x).float().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()  # no wrapper: parameter names unchanged
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_activation_checkpointing_needs_blocks() -> None:
    from ember.errors import ConfigError
    from ember.training.distributed import DistEnv, parallelize

    with pytest.raises(ConfigError, match="no repeated blocks"):
        parallelize(torch.nn.Linear(2, 2), "single", DistEnv(), torch.device("cpu"), activation_checkpointing=True)
