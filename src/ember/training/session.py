"""A training session: from a config (and, optionally, your own model and data) to a run.

`train_session` is what `ember.train` and `ember train` run: check the config, build data
and model, join the process group under torchrun, create (or reopen) the run folder, fit,
write the final weights, `summary.json` and the report. The pieces are public because the
tools reuse them (compression writes its children with `prepare`, `write_data_files` and
`write_summary`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember import data as data_mod
from ember import models
from ember.config import ExperimentConfig, from_dict, load, to_yaml
from ember.data.bundle import DataBundle
from ember.errors import ConfigError, RunError
from ember.loading import read_config
from ember.models.decoding import generate_ids
from ember.privacy.model import private_model, record_fixes
from ember.privacy.report import read_budget
from ember.runs import Run, atomic_write_text, lock_run, new_run_dir, open_run, unlock_run
from ember.tasks import Task, for_info
from ember.training.baselines import compute_baselines
from ember.training.callbacks import Callback, resolve_callbacks
from ember.training.device import check_precision, resolve_device
from ember.training.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    init_process_group,
    parallelize,
    resolve_strategy,
)
from ember.training.dry_run import dry_forward
from ember.training.evaluation import evaluate_split
from ember.training.loggers import MLflowLogger, TensorBoardLogger
from ember.training.loop import LoopState, fit
from ember.training.progress import Reporter
from ember.training.train_state import save_model_weights
from ember.transfer import hooks as transfer
from ember.weights import load_weights, sha256_file

__all__ = ["train_session", "Trained", "prepare", "write_data_files", "config_for", "write_summary", "lm_sampler",
           "object_config", "run_callbacks"]

TRAIN_EVAL_CAP = 5000  # samples of the train split scored for summary.json
# ...and at most this many tokens of a language model's: 64 windows of 1024 (a 135M model scores
# one such window in ~2 s on two cores, and train metrics only sanity-check the held-out ones).
TRAIN_EVAL_TOKENS = 65536


@dataclass
class Trained:
    """A finished session on rank 0: what the report and the caller need, in memory."""

    run: Run
    model: nn.Module
    bundle: DataBundle
    task: Task
    device: torch.device
    summary: dict[str, Any]


def prepare(cfg: ExperimentConfig, local_rank: int = 0,
            bundle: DataBundle | None = None) -> tuple[torch.device, DataBundle]:
    """Threads, device (this rank's GPU under torchrun) and precision checked, data built.

    `bundle`: data given as objects, used instead of building `cfg.data`.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, local_rank)
    check_precision(cfg.train.precision, device)
    return device, bundle if bundle is not None else data_mod.build(cfg.data, cfg.train.seed)


def write_data_files(run: Run, bundle: DataBundle) -> None:
    """`data_info.json` (and `tokenizer.json` for text, `chat_template.jinja` for conversations)."""
    atomic_write_text(run.data_info, bundle.info.to_json())
    if bundle.tokenizer is not None:
        atomic_write_text(run.tokenizer, bundle.tokenizer.to_json())
    if bundle.chat_template is not None:  # `ember chat` on this run formats prompts as it was trained
        atomic_write_text(run.chat_template, bundle.chat_template)


def config_for(recipe: str | ExperimentConfig | None, overrides: list[str] | None,
               resume: str | Path | None) -> tuple[ExperimentConfig, Run | None]:
    """The config to train and, with `--resume`, the run it continues.

    `recipe` None means digits-cnn, or with `resume` the run's own; a recipe given with
    `resume` must be the run's.
    """
    if resume is not None:
        if overrides:
            raise ConfigError("--resume continues a run with its saved config; drop the key=value overrides")
        run = open_run(resume)
        if run.compression.is_file():  # its config alone does not rebuild its model
            raise RunError(f"'{run.path}' is a compressed run and cannot be resumed; run ember compress on its "
                           "parent again")
        cfg = read_config(run)
        if recipe is not None:
            asked = recipe.recipe if isinstance(recipe, ExperimentConfig) else load(recipe).recipe
            if asked != cfg.recipe:
                raise ConfigError(f"--resume '{run.path}' is a {cfg.recipe} run, not {asked}; drop the recipe "
                                  f"to resume it, or train {asked} into a new run")
        return cfg, run
    recipe = "digits-cnn" if recipe is None else recipe
    return (recipe if isinstance(recipe, ExperimentConfig) else load(recipe, overrides)), None


def object_config(cfg: ExperimentConfig, model: nn.Module | None, bundle: DataBundle | None,
                  description: str) -> ExperimentConfig:
    """`cfg` with its model/data sections replaced by records of the objects passed in."""
    raw = cfg.model_dump(mode="json")
    if model is not None:
        raw["model"] = {"name": "object", "class_name": f"{type(model).__module__}.{type(model).__qualname__}"}
    if bundle is not None:
        keep = {k: v for k, v in raw["data"].items()
                if k in ("batch_size", "eval_batch_size", "shuffle", "drop_last")}
        raw["data"] = {**keep, "name": "object", "description": description}
    # The borrowed recipe's description tells of its own model and data, not these objects.
    if model is not None:
        count = sum(p.numel() for p in model.parameters())
        what = f"Own model {type(model).__qualname__} ({count:,} parameters)"
    else:
        what = f"The '{cfg.recipe}' recipe's {cfg.model.name} model"
    raw["description"] = f"{what} trained on " + (description or "own data" if bundle is not None
                                                  else f"the recipe's {cfg.data.name} data")
    return from_dict(raw)


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


def run_callbacks(cfg: ExperimentConfig, extra: Iterable[Callback] = ()) -> list[Callback]:
    """The loggers the config turns on, the callbacks it names, then those passed in code."""
    out: list[Callback] = []
    if cfg.log.tensorboard:
        out.append(TensorBoardLogger())
    if cfg.log.mlflow is not None:
        out.append(MLflowLogger(cfg.log.mlflow.tracking_uri, cfg.log.mlflow.experiment))
    return out + resolve_callbacks(cfg.log.callbacks) + list(extra)


def train_session(cfg: ExperimentConfig, continued: Run | None, run_dir: str | Path | None, env: DistEnv,
                  quiet: bool = False, verbose: bool = True, model: nn.Module | None = None,
                  bundle: DataBundle | None = None, callbacks: Iterable[Callback] = (),
                  t0: float | None = None) -> Trained | Run:
    """Train `cfg` into a new run (or continue `continued`).

    Returns `Trained` on rank 0 (the caller renders the report: the report sits above
    training) and the bare `Run` on other ranks.

    `model` and `bundle`, when given, are used instead of building `cfg.model` / `cfg.data`
    (the config then records them as objects).
    """
    t0 = time.perf_counter() if t0 is None else t0
    callbacks = run_callbacks(cfg, callbacks)  # a bad callback name fails before anything is written
    device, bundle = prepare(cfg, env.local_rank, bundle)
    # Join the process group (when torchrun started this process) before anything is written.
    init_process_group(env, device, cfg.train.dist_timeout_s)
    if cfg.train.privacy is not None:  # [privacy] the config records the layers DP-SGD replaces
        cfg = record_fixes(cfg, model, bundle.info)
    if model is not None and continued is None:  # a user's module: checked before a folder exists
        dry_forward(model.to(device), bundle, device)
    continued = continued or _restarted_run(cfg, run_dir, env)
    if continued is not None and env.is_main:
        lock_run(continued.path)  # before anything is written; a new run is locked as it is created
    run = continued if continued is not None else _create_run(cfg, run_dir, env)
    try:
        return _train_in(run, cfg, device, bundle, continued is not None, env, quiet, verbose, model, callbacks, t0)
    finally:
        unlock_run(run.path)


def _train_in(run: Run, cfg: ExperimentConfig, device: torch.device, bundle: DataBundle, resumed: bool,
              env: DistEnv, quiet: bool, verbose: bool, model: nn.Module | None, callbacks: list[Callback],
              t0: float) -> Trained | Run:
    """The session once its run folder is held: fit, final weights, summary."""
    strategy = resolve_strategy(cfg.train.strategy, env)
    if env.is_main and not (resumed and run.data_info.is_file()):
        # A resumed run keeps the files it was trained with: rewriting them before the
        # checkpoint is known to fit would damage a run whose config was edited.
        write_data_files(run, bundle)
    reporter = Reporter(quiet=quiet, enabled=verbose and env.is_main)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    if model is None:
        model = models.build(cfg.model, bundle.info)
    model = private_model(model, cfg).to(device)  # [privacy] Opacus-compatible layers (no-op otherwise)
    # model.init_from, model.lora, train.freeze (recorded in the run's transfer.json)
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
    sampler = lm_sampler(bundle, cfg.train.seed, device) if task.name == "lm" and bundle.tokenizer else None
    state = fit(train_model, bundle, task, cfg, run, device, resume=resumed, reporter=reporter,
                on_validate=sampler, env=env, strategy=strategy, callbacks=callbacks)
    transfer.finish(model, run, env.is_main)  # LoRA: adapters kept, then merged into the weights
    save_model_weights(train_model, run.weights, env.is_main)  # collective under FSDP
    if strategy == "fsdp" and env.is_main:
        model = models.build(cfg.model, bundle.info).to(device)  # a whole copy to score
        load_weights(model, run.weights)
    barrier(env)
    if not env.is_main:
        return run
    summary = write_summary(cfg, run, model, bundle, task, device, state, time.perf_counter() - t0,
                            resumed=resumed, world_size=env.world_size, strategy=strategy)
    return Trained(run, model, bundle, task, device, summary)


def lm_sampler(bundle: DataBundle, seed: int, device: torch.device, prompt_tokens: int = 24,
               new_tokens: int = 160) -> Any:
    """A callback that writes a text sample at each validation, from a fixed val prompt."""
    source = bundle.val if len(bundle.val) else bundle.train
    prompt = source.x[:1, :prompt_tokens]
    vocab = int(bundle.info.extra.get("vocab_size", bundle.info.num_outputs))
    block = int(bundle.info.input_shape[0])

    def sample(model: nn.Module, state: LoopState) -> dict[str, Any]:
        # Its own generator, seeded by the step: the global RNG (and so resume) is untouched.
        gen = torch.Generator(device=device.type).manual_seed(seed * 1_000_003 + state.step)
        context = min(block, int(getattr(model, "block_size", block)))  # a model set shorter than the data's rows
        ids = list(generate_ids(model, prompt.to(device), new_tokens, context, vocab, 0.8, None, 0.95, gen))
        return {"split": "sample", "prompt": bundle.tokenizer.decode(prompt[0].tolist()),
                "text": bundle.tokenizer.decode(ids)}

    return sample


def write_summary(cfg: ExperimentConfig, run: Run, model: nn.Module, bundle: DataBundle, task: Task,
                  device: torch.device, state: LoopState, wall: float, resumed: bool,
                  world_size: int = 1, strategy: str = "single") -> dict[str, Any]:
    """Score every split in the run's precision and write `summary.json`; returns it."""
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
        "precision": cfg.train.precision,
        "world_size": world_size,
        "strategy": strategy,
        "class_names": list(bundle.info.class_names),
        "weights_sha256": sha256_file(run.weights),
        **transfer.summary_fields(run),
    }
    if "baseline" in bundle.info.extra:  # e.g. popularity, beside a recommender's own figures
        summary["baseline"] = bundle.info.extra["baseline"]
    if cfg.train.privacy is not None:  # [privacy] ε and δ spent (privacy/budget.json, written by fit)
        summary["privacy"] = read_budget(run)
    if cfg.plugins:
        summary["plugins"] = {k: v.model_dump() for k, v in cfg.plugins.items()}
    for split in ("train", "val", "test"):
        dataset = bundle.split(split)
        # Train metrics are a sanity check against val/test: a fixed subset is enough, and a
        # whole LM corpus would take longer to score than to train on (data.eval_limit, where a
        # source has one, caps it like the held-out splits).
        cap = min(TRAIN_EVAL_CAP, getattr(cfg.data, "eval_limit", None) or TRAIN_EVAL_CAP)
        if task.name == "lm" and bundle.info.input_shape:  # windows of tokens: cap the tokens scored
            cap = min(cap, max(1, TRAIN_EVAL_TOKENS // int(bundle.info.input_shape[0])))
        if split == "train" and len(dataset) > cap:
            dataset = dataset.subset(torch.arange(cap))
            summary["train_metrics_on"] = cap
        metrics = evaluate_split(model, dataset, task, device, cfg.data.eval_batch_size, cfg.train.precision)
        if metrics:
            summary[split] = metrics
    summary["baselines"] = compute_baselines(bundle, task)  # same splits, same metrics
    atomic_write_text(run.summary, json.dumps(summary, indent=2))
    return summary
