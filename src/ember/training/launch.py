"""`ember train --nproc N`: start N training processes on this node, as torchrun would.

This process becomes torchrun's elastic agent (`torch.distributed.launcher`): it starts the
workers (`python -m ember train ... --run-dir DIR`), watches them, and when one dies it
stops the rest and, while `--max-restarts` allows, starts them all again; they find
`DIR` and resume from its latest checkpoint. The run directory is chosen here, before any
worker starts, so that every attempt writes to the same place.

Multi-node jobs use torchrun directly (see the README): `torchrun --nnodes 2 --node-rank R
--rdzv-endpoint HOST:PORT ... -m ember train RECIPE --run-dir DIR`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ember.config import ExperimentConfig
from ember.errors import ConfigError

__all__ = ["launch_train", "worker_argv"]


def worker_argv(recipe: str | None, overrides: list[str], run_dir: Path | None, resume: Path | None,
                quiet: bool) -> list[str]:
    """The `ember train` command line each worker runs."""
    argv = ["train"]
    if resume is not None:
        argv += ["--resume", str(resume)]
    else:
        argv += [recipe or "digits-cnn", *overrides, "--run-dir", str(run_dir)]
    return argv + (["--quiet"] if quiet else [])


def launch_train(recipe: str | None, overrides: list[str], nproc: int, max_restarts: int,
                 run_dir: Path | None = None, resume: Path | None = None, quiet: bool = False) -> int:
    """Run `ember train` in `nproc` processes; returns the exit code for the `ember` command.

    Mistakes the workers would all make (a bad config, a run directory already in use, more
    processes than GPUs) are caught here first, before anything starts, with exit code 2.
    """
    from ember.runs import check_free, fresh_run_path
    from ember.training.session import config_for

    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc: this process was itself started by torchrun; drop --nproc")
    if nproc < 1:
        raise ConfigError(f"--nproc: got {nproc}; must be >= 1")
    if max_restarts < 0:
        raise ConfigError(f"--max-restarts: got {max_restarts}; must be >= 0")
    cfg, _ = config_for(recipe, overrides, resume)  # the checks `ember train` itself makes
    if resume is not None:  # in use by another process: say so now, not from every worker
        from ember.runs import lock_run, unlock_run

        lock_run(resume)
        unlock_run(resume)
    if resume is None:
        if run_dir is not None:
            check_free(run_dir)
        run_dir = run_dir or fresh_run_path(Path(cfg.log.runs_dir), cfg.recipe)
    if cfg.train.strategy == "single" and nproc > 1:
        raise ConfigError(f"train.strategy: 'single' runs one process, but --nproc is {nproc}; use ddp, fsdp or auto")
    _check_devices(cfg, nproc)
    return _launch(worker_argv(recipe, overrides, run_dir, resume, quiet), nproc, max_restarts, cfg)


def _check_devices(cfg: ExperimentConfig, nproc: int) -> None:
    import torch

    wants_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
    if wants_cuda and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc: got {nproc} but this node has {torch.cuda.device_count()} GPUs; "
                          f"use --nproc {torch.cuda.device_count()} or train.device=cpu")
    if cfg.train.device == "mps" and nproc > 1:
        raise ConfigError("--nproc: MPS has no multi-process backend; use --nproc 1 or train.device=cpu")


def _launch(argv: list[str], nproc: int, max_restarts: int, cfg: ExperimentConfig) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "OMP_NUM_THREADS" not in os.environ and not cfg.train.threads:
        # N processes each using every core would oversubscribe the CPU many times over.
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    # torchrun's own argument parser and launcher, in this process: the same rendezvous and
    # restart behaviour as `torchrun --standalone`, but the failures come back as objects.
    args = get_args_parser().parse_args([
        "--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}",
        "--monitor-interval=0.1", "-m", "ember", *argv,
    ])
    try:
        run(args)
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items())
        codes = {rank: failure.exitcode for rank, failure in failures}
        rank, first = failures[0]
        shown = ", ".join(f"rank {r} exit {c}" for r, c in codes.items())
        print(f"error: training failed on {len(codes)} of {nproc} processes ({shown}); "
              f"rank {rank}'s message is above", file=sys.stderr)
        # Every rank reports a user mistake with exit 2; anything else is a crash or a kill.
        return 2 if first.exitcode == 2 else 1
    return 0
