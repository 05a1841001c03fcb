"""Training throughput with 1 and 2 processes on the CPU (gloo), Ember against hand-written DDP.

For each workload and world size N the script runs
  ember     `ember train RECIPE --nproc N` (N=1: plain `ember train`), and reads the
            train-only samples/s from `summary.json` (validation, checkpoints excluded);
  baseline  the DDP loop a PyTorch user would write: N processes (torch.multiprocessing,
            gloo), the same model, data, optimizer and global batch, each rank taking its
            slice; timed around the optimizer steps only.
Both use `cores // N` threads per process, so N=1 and N=2 get the same cores. Printed as
JSON: samples/s (tokens/s for the GPT), `ratio` = Ember / baseline at the same N, and
`scaling` = throughput(N=2) / throughput(N=1).

    python benchmarks/scaling.py --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ember.config import load
from ember.data import build as build_data
from ember.models import build as build_model
from ember.tasks import for_info
from ember.training.batches import BatchPlan
from ember.training.optim import build_optimizer

WORKLOADS: dict[str, tuple[str, list[str], int]] = {
    # name: (recipe, overrides, tokens per sample)
    "digits-cnn": ("digits-cnn", ["data.batch_size=64", "log.report=false"], 1),
    "gpt-small": ("stdlib-char-gpt", ["data.max_chars=400000", "data.block_size=64", "model.n_layer=2",
                                      "model.n_embd=64", "model.n_head=4", "data.batch_size=16",
                                      "log.report=false", "schedule.warmup_steps=0"], 64),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _baseline_worker(rank: int, world: int, port: int, recipe: str, overrides: list[str], steps: int,
                     threads: int, out: Any) -> None:
    """One rank of the hand-written DDP loop."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = load(recipe, overrides)
    bundle = build_data(cfg.data, cfg.train.seed)
    task = for_info(bundle.info)
    torch.manual_seed(cfg.train.seed)
    model = torch.nn.parallel.DistributedDataParallel(build_model(cfg.model, bundle.info))
    opt = build_optimizer(model.module, cfg.optim)
    plan = BatchPlan(len(bundle.train), cfg.data.batch_size, world_size=world, rank=rank, seed=cfg.train.seed)
    order = plan.order(0)
    per_epoch = plan.steps_per_epoch()
    model.train()
    dist.barrier()
    start = time.perf_counter()
    for step in range(steps):
        (idx,) = plan.micro_batches(order, step % per_epoch)
        x, y = bundle.train.batch(idx, 0, train=True)
        loss = task.loss(model(x), y, task.count(y))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    dist.barrier()
    if rank == 0:
        out.put(time.perf_counter() - start)
    dist.destroy_process_group()


def baseline(recipe: str, overrides: list[str], world: int, steps: int, threads: int) -> float:
    """Samples/s of the hand-written loop."""
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_baseline_worker, args=(world, _free_port(), recipe, overrides, steps, threads, queue),
             nprocs=world, join=True)
    seconds = queue.get()
    batch = load(recipe, overrides).data.batch_size
    return steps * batch / seconds


def ember_run(recipe: str, overrides: list[str], world: int, steps: int, threads: int) -> float:
    """Train-only samples/s of `ember train` with `world` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        args = [sys.executable, "-m", "ember", "train", recipe, *overrides, f"train.max_steps={steps}",
                f"train.threads={threads}", "train.epochs=1000", "train.log_every=1000", "--run-dir", str(run),
                "--quiet"]
        if world > 1:
            args += ["--nproc", str(world)]
        subprocess.run(args, check=True, capture_output=True, text=True)
        return json.loads((run / "summary.json").read_text())["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    args = parser.parse_args()
    results: dict[str, Any] = {"cores": args.cores, "steps": args.steps, "torch": torch.__version__}
    for name in args.workloads:
        recipe, overrides, tokens = WORKLOADS[name]
        unit = "tokens_per_s" if tokens > 1 else "samples_per_s"
        row: dict[str, Any] = {"unit": unit}
        speed: dict[tuple[str, int], float] = {}
        for world in (1, 2):
            threads = max(1, args.cores // world)
            speed["ember", world] = ember_run(recipe, overrides, world, args.steps, threads) * tokens
            speed["baseline", world] = baseline(recipe, overrides, world, args.steps, threads) * tokens
            row[f"n{world}"] = {"ember": round(speed["ember", world], 1), "baseline": round(speed["baseline", world], 1),
                                "ratio": round(speed["ember", world] / speed["baseline", world], 3),
                                "threads_per_process": threads}
        row["scaling_ember"] = round(speed["ember", 2] / speed["ember", 1], 3)
        row["scaling_baseline"] = round(speed["baseline", 2] / speed["baseline", 1], 3)
        results[name] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
