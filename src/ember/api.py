"""The Python API, mirroring the CLI: load_config, train, evaluate, predict, open_run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ember import data as data_mod
from ember import models
from ember.config import ExperimentConfig, from_dict, load, to_yaml
from ember.data.bundle import DataBundle, DataInfo
from ember.errors import CheckpointError, ConfigError, DataError, RunError
from ember.runs import Run, atomic_write_text, new_run_dir, open_run
from ember.tasks import Task, for_info
from ember.training.baselines import compute_baselines
from ember.training.device import check_precision, resolve_device
from ember.training.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    environment,
    init_process_group,
    parallelize,
    resolve_strategy,
    shutdown,
)
from ember.training.evaluation import evaluate_split, predict_outputs
from ember.training.loop import LoopState, fit
from ember.training.progress import Reporter
from ember.training.train_state import save_model_weights
from ember.transfer import hooks as transfer
from ember.weights import load_weights, sha256_file

__all__ = ["load_config", "train", "evaluate", "predict", "report", "open_run", "load_run", "LoadedRun"]

load_config = load
_TRAIN_EVAL_CAP = 5000  # samples of the train split scored for summary.json


@dataclass
class LoadedRun:
    """A finished run rebuilt from its files: config, data description, task and model."""

    run: Run
    config: ExperimentConfig
    info: DataInfo
    task: Task
    model: nn.Module


def read_config(run: Run) -> ExperimentConfig:
    try:
        raw = yaml.safe_load(run.config.read_text())
    except yaml.YAMLError as exc:
        raise RunError(f"'{run.config}' is not valid YAML: {str(exc).splitlines()[0]}") from None
    return from_dict(raw)


def load_run(path: str | Path, weights: Path | None = None) -> LoadedRun:
    """Rebuild a run's model from `config.yaml`, `data_info.json` and its safetensors weights."""
    run = open_run(path)
    cfg = read_config(run)
    if not run.data_info.is_file():
        raise RunError(f"'{run.path}' has no data_info.json; was training interrupted before it began?")
    info = DataInfo.from_dict(json.loads(run.data_info.read_text()))
    model = models.build(cfg.model, info)
    weights_path = weights or run.weights
    if not weights_path.is_file():
        raise RunError(f"'{run.path}' has no {weights_path.name}; resume it with: ember train --resume {run.path}")
    expected = run.read_summary().get("weights_sha256")
    if weights is None and expected and sha256_file(weights_path) != expected:
        raise CheckpointError(f"'{weights_path}' fails its sha256 check against summary.json (corrupt or tampered)")
    if (run.path / "compression.json").is_file():  # a compressed child: rebuild pruned/int8 layers first
        from ember.compress.child import load_compressed

        model = load_compressed(run, model, info, weights_path)
    else:
        load_weights(model, weights_path)
    model.eval()
    return LoadedRun(run, cfg, info, for_info(info), model)


def prepare(cfg: ExperimentConfig, local_rank: int = 0) -> tuple[torch.device, DataBundle]:
    """Threads, device (this rank's GPU under torchrun) and precision checked, data built."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, local_rank)
    check_precision(cfg.train.precision, device)
    bundle = data_mod.build(cfg.data, cfg.train.seed)
    return device, bundle


def write_data_files(run: Run, bundle: DataBundle) -> None:
    """`data_info.json` (and `tokenizer.json` for text): what rebuilding the model needs."""
    atomic_write_text(run.data_info, bundle.info.to_json())
    if bundle.tokenizer is not None:
        atomic_write_text(run.path / "tokenizer.json", bundle.tokenizer.to_json())


def config_for(recipe: str | ExperimentConfig, overrides: list[str] | None,
                resume: str | Path | None) -> tuple[ExperimentConfig, Run | None]:
    """The config to train and, with `--resume`, the run it continues."""
    if resume is not None:
        if overrides:
            raise ConfigError("--resume continues a run with its saved config; drop the key=value overrides")
        run = open_run(resume)
        if (run.path / "compression.json").is_file():  # its config alone does not rebuild its model
            raise RunError(f"'{run.path}' is a compressed run and cannot be resumed; run ember compress on its "
                           "parent again")
        return read_config(run), run
    return (recipe if isinstance(recipe, ExperimentConfig) else load(recipe, overrides)), None


def _restarted_run(cfg: ExperimentConfig, run_dir: str | Path | None, env: DistEnv) -> Run | None:
    """Under torchrun, a `--run-dir` that already holds this same run is resumed.

    That is how a job that torchrun restarted after a failure (`--max-restarts`) finds its
    checkpoints. Rank 0 looks and tells the others, before anything is created, so that no
    rank mistakes the directory rank 0 is creating for an old one.
    """
    if run_dir is None or not env.distributed:
        return None
    held = None
    if env.is_main and (Path(run_dir) / "config.yaml").is_file():
        held = read_config(open_run(run_dir)) == cfg
    held = broadcast_object(held, env)
    if held is False:
        raise ConfigError(f"--run-dir '{run_dir}' already holds a different run; use another folder")
    return open_run(run_dir) if held else None


def _create_run(cfg: ExperimentConfig, run_dir: str | Path | None, env: DistEnv) -> Run:
    """Rank 0 creates the run directory and tells the other ranks where it is."""
    path = None
    if env.is_main:
        run = new_run_dir(cfg.log.runs_dir, cfg.recipe, Path(run_dir) if run_dir else None)
        atomic_write_text(run.config, to_yaml(cfg))
        path = str(run.path)
    return Run(Path(broadcast_object(path, env)))


def train(
    recipe: str | ExperimentConfig = "digits-cnn",
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    verbose: bool = True,
) -> Run:
    """Train a recipe (name, YAML path or config) into a new run directory, or resume one.

    Returns the `Run`; its `summary.json` holds per-split metrics, timing and size.

    Example:
        >>> run = train("xor-mlp", ["train.epochs=2000"], quiet=True)
        >>> json.loads(run.summary.read_text())["test"]["rmse"] < 0.1
        True
    """
    t0 = time.perf_counter()
    env = environment()
    try:
        return _train(recipe, overrides, run_dir, resume, quiet, verbose, env, t0)
    finally:
        shutdown()


def _train(recipe: str | ExperimentConfig, overrides: list[str] | None, run_dir: str | Path | None,
           resume: str | Path | None, quiet: bool, verbose: bool, env: DistEnv, t0: float) -> Run:
    cfg, continued = config_for(recipe, overrides, resume)
    device, bundle = prepare(cfg, env.local_rank)
    # Join the process group (when torchrun started this process) before anything is written.
    init_process_group(env, device, cfg.train.dist_timeout_s)
    continued = continued or _restarted_run(cfg, run_dir, env)
    run = continued if continued is not None else _create_run(cfg, run_dir, env)
    resumed = continued is not None
    strategy = resolve_strategy(cfg.train.strategy, env)
    if env.is_main:
        write_data_files(run, bundle)
    reporter = Reporter(quiet=quiet, enabled=verbose and env.is_main)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = models.build(cfg.model, bundle.info).to(device)
    model = transfer.prepare(model, cfg, bundle.info, run, env.is_main, env.world_size, reporter.message)
    if env.rank > 0:  # dropout masks differ between ranks (rank 0 keeps the one-process stream)
        torch.manual_seed(cfg.train.seed + 1_000_003 * env.rank)
    task = for_info(bundle.info)
    place = f", {env.world_size} processes ({strategy})" if env.distributed else ""
    reporter.message(
        f"{cfg.recipe}: {transfer.describe_parameters(model)}, data {bundle.sizes()}, "
        f"device {device.type}{place}, run {run.path}"
    )
    train_model = parallelize(model, strategy, env, device, cfg.train.precision, cfg.train.activation_checkpointing)
    sampler = _lm_sampler(bundle, cfg.train.seed, device) if task.name == "lm" and bundle.tokenizer else None
    state = fit(train_model, bundle, task, cfg, run, device, resume=resumed, reporter=reporter,
                on_validate=sampler, env=env, strategy=strategy)
    transfer.finish(model, run, env.is_main)  # LoRA: adapters kept, then merged into the weights
    save_model_weights(train_model, run.weights, env.is_main)  # collective under FSDP
    if strategy == "fsdp" and env.is_main:
        model = models.build(cfg.model, bundle.info).to(device)  # a whole copy to score
        load_weights(model, run.weights)
    barrier(env)
    if not env.is_main:
        return run
    summary = _summarize(cfg, run, model, bundle, task, device, state, time.perf_counter() - t0,
                         resumed=resumed, world_size=env.world_size, strategy=strategy)
    if cfg.log.report:
        from ember.report.build import build_report

        build_report(run, model, bundle, task, device, limit=cfg.log.image_grid)
    if verbose:
        from ember.cli_tables import print_summary

        print_summary(summary, run)
    return run


def _lm_sampler(bundle: DataBundle, seed: int, device: torch.device, prompt_tokens: int = 24,
                new_tokens: int = 160) -> Any:
    """A callback that writes a text sample at each validation, from a fixed val prompt."""
    from ember.generation import generate_ids

    source = bundle.val if len(bundle.val) else bundle.train
    prompt = source.x[:1, :prompt_tokens]
    vocab = int(bundle.info.extra.get("vocab_size", bundle.info.num_outputs))
    block = int(bundle.info.input_shape[0])

    def sample(model: nn.Module, state: LoopState) -> dict[str, Any]:
        # Its own generator, seeded by the step: the global RNG (and so resume) is untouched.
        gen = torch.Generator(device=device.type).manual_seed(seed * 1_000_003 + state.step)
        ids = list(generate_ids(model, prompt.to(device), new_tokens, block, vocab, 0.8, None, 0.95, gen))
        return {"split": "sample", "prompt": bundle.tokenizer.decode(prompt[0].tolist()),
                "text": bundle.tokenizer.decode(ids)}

    return sample


def _summarize(cfg: ExperimentConfig, run: Run, model: nn.Module, bundle: DataBundle, task: Task,
               device: torch.device, state: LoopState, wall: float, resumed: bool,
               world_size: int = 1, strategy: str = "single") -> dict[str, Any]:
    summary: dict[str, Any] = {
        "recipe": cfg.recipe,
        "task": task.name,
        "params": models.count_parameters(model),
        "wall_time_s": round(wall, 3),  # this invocation; a resumed run counts from its resume
        "resumed": resumed,
        "train_time_s": round(state.train_time_s, 3),
        "samples_per_s": round(state.samples / max(state.train_time_s, 1e-9), 1),
        "steps": state.step,
        "epochs": state.epoch,
        "stopped_early": state.stopped_early,
        "skipped_steps": state.skipped_steps,
        "best": {"metric": (cfg.train.early_stopping.metric if cfg.train.early_stopping else task.primary_metric),
                 "value": state.best, "step": state.best_step},
        "device": device.type,
        "world_size": world_size,
        "strategy": strategy,
        "class_names": list(bundle.info.class_names),
        "weights_sha256": sha256_file(run.weights),
        **transfer.summary_fields(run),
    }
    for split in ("train", "val", "test"):
        dataset = bundle.split(split)
        if split == "train" and len(dataset) > _TRAIN_EVAL_CAP:
            # Train metrics are a sanity check against val/test: a fixed subset is enough, and
            # a whole LM corpus would take longer to score than to train on.
            dataset = dataset.subset(torch.arange(_TRAIN_EVAL_CAP))
            summary["train_metrics_on"] = _TRAIN_EVAL_CAP
        metrics = evaluate_split(model, dataset, task, device, cfg.data.eval_batch_size, cfg.train.precision)
        if metrics:
            summary[split] = metrics
    summary["baselines"] = compute_baselines(bundle, task)  # same splits, same metrics
    atomic_write_text(run.summary, json.dumps(summary, indent=2))
    return summary


def evaluate(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """Metrics of a finished run's model on `split`, with the data rebuilt from its config."""
    loaded = load_run(run_dir)
    if split not in ("train", "val", "test"):
        raise DataError(f"--split: got '{split}'; valid: train, val, test")
    device = resolve_device(loaded.config.train.device)
    bundle = data_mod.build(loaded.config.data, loaded.config.train.seed)
    return evaluate_split(loaded.model.to(device), bundle.split(split), loaded.task, device,
                          loaded.config.data.eval_batch_size)


def report(run_dir: str | Path) -> Path:
    """Re-render a finished run's report (after an upgrade, or once more sections exist)."""
    from ember.report.build import build_report

    loaded = load_run(run_dir)
    device = torch.device("cpu")
    bundle = data_mod.build(loaded.config.data, loaded.config.train.seed)
    return build_report(loaded.run, loaded.model, bundle, loaded.task, device, limit=loaded.config.log.image_grid)


def predict(run_dir: str | Path, inputs: list[str | Path], texts: list[str] | None = None) -> list[dict[str, Any]]:
    """Predictions for files (images, CSV rows, text files, a series CSV) and/or raw `texts`."""
    from ember.inputs import read_inputs

    loaded = load_run(run_dir)
    tokenizer = None
    if loaded.info.input_kind == "tokens":
        from ember.generation import load_tokenizer

        tokenizer = load_tokenizer(loaded.run.path)
    rows = read_inputs([Path(p) for p in inputs], loaded.info, tokenizer, texts)
    out: list[dict[str, Any]] = []
    for source, x in rows:
        with torch.no_grad():
            y = loaded.model(x)
        for i, pred in enumerate(loaded.task.predict(y)):
            if tokenizer is not None and "next_token_ids" in pred:
                pred["next_tokens"] = [tokenizer.decode([t]) for t in pred["next_token_ids"]]
            out.append({"input": source if len(x) == 1 else f"{source}#{i + 1}", **pred})
    return out


__all__ += ["predict_outputs"]
