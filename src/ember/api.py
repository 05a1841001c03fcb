"""The Python API, mirroring the CLI: a thin façade over the modules that do the work.

    import ember
    run = ember.train("digits-cnn", ["train.epochs=2"])          # a recipe
    run = ember.train(model=my_module, data=(train_ds, val_ds, test_ds))  # your own objects
    ember.evaluate(run.path)
    ember.predict(run.path, ["digit.png"])

Reading runs lives in `ember.loading`, training sessions in `ember.training.session`, the
report in `ember.report`; this module only wires them to the public names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember import data as data_mod
from ember.config import ExperimentConfig, load
from ember.data.bundle import DataBundle
from ember.data.objects import data_bundle
from ember.errors import ConfigError, DataError
from ember.inputs import read_inputs, tensor_inputs
from ember.loading import LoadedRun, load_run, load_tokenizer, read_config
from ember.runs import Run, open_run
from ember.training.callbacks import Callback
from ember.training.device import resolve_device
from ember.training.distributed import environment, shutdown
from ember.training.evaluation import evaluate_split
from ember.training.session import Trained, config_for, object_config, train_session

__all__ = ["load_config", "train", "evaluate", "predict", "report", "open_run", "load_run", "LoadedRun",
           "read_config"]

load_config = load


def _bundle_of(data: Any, task: str | None) -> DataBundle | None:
    """`data=` as given to `train`/`evaluate`: a DataBundle, (train, val, test) Datasets, or None."""
    if data is None or isinstance(data, DataBundle):
        return data
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and 1 <= len(data) <= 3:
        return data_bundle(*data, task=task or "classification")
    raise DataError(f"data: got {type(data).__name__}; pass a DataBundle or a (train, val, test) tuple of "
                    "Datasets (ember.data_bundle builds one with class names)")


def train(
    recipe: str | ExperimentConfig | None = None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    verbose: bool = True,
    *,
    model: nn.Module | None = None,
    data: DataBundle | Sequence[Any] | None = None,
    task: str | None = None,
    callbacks: Iterable[Callback] = (),
    live: bool = True,
) -> Run:
    """Train a recipe (name, YAML path or config), or your own model and data, into a run.

    Args:
        recipe: a shipped recipe name, a YAML file or an `ExperimentConfig`; it supplies the
            training settings (optimizer, schedule, epochs, ...). Default: `digits-cnn`, or,
            when `model` is given, `digits-mlp`'s training settings.
        overrides: dotted `key=value` changes, e.g. `["train.epochs=5"]`.
        run_dir: write the run here instead of `runs/<recipe>-<time>`.
        resume: a run folder to continue from its latest checkpoint (pass `model`/`data`
            again when the run was made from objects).
        model: your own `nn.Module`, trained as it is (its current weights are the start).
        data: a `DataBundle`, or `(train, val, test)` map-style Datasets of (input, target).
        task: with Dataset tuples: "classification" (default) or "regression".
        callbacks: `ember.Callback` objects called during training.
        quiet: print nothing (the same as `verbose=False`; either one silences the run).
        verbose: print progress and the results table (default).
        live: on a terminal, a live progress bar; False: plain log lines (`ember train --quiet`).

    Returns:
        The `Run`; its `summary.json` holds per-split metrics, timing and size.

    Examples:
        >>> run = train("xor-mlp", ["train.epochs=2000"], quiet=True)
        >>> json.loads(run.summary.read_text())["test"]["rmse"] < 0.1
        True
    """
    t0 = time.perf_counter()
    env = environment()
    bundle = _bundle_of(data, task)
    named = recipe is not None
    if recipe is None and resume is None:  # with resume: the run's own recipe
        recipe = "digits-mlp" if model is not None or bundle is not None else "digits-cnn"
    try:
        cfg, continued = config_for(recipe, overrides, resume)
        if continued is None and (model is not None or bundle is not None):
            cfg = object_config(cfg, model, bundle, description=_describe(data))
            if not named:  # runs/<model class>-<time>, not the borrowed recipe's name
                cfg = cfg.model_copy(update={"recipe": type(model).__name__.lower() if model is not None
                                             else "custom"})
        elif continued is not None and ((model is None and cfg.model.name == "object")
                                        or (bundle is None and cfg.data.name == "object")):
            raise ConfigError(f"--resume: '{continued.path}' was trained from objects; pass model= and "
                              "data= again to resume it")
        verbose = verbose and not quiet  # one knob: either flag silences the run
        result = train_session(cfg, continued, run_dir, env, not live, verbose, model, bundle, callbacks, t0)
        if isinstance(result, Trained):
            if cfg.log.report:
                # matplotlib is imported only when a report is made
                from ember.report.build import build_report

                build_report(result.run, result.model, result.bundle, result.task, result.device,
                             limit=cfg.log.image_grid)
            if verbose:
                from ember.cli_tables import print_summary  # rich tables only when printing

                print_summary(result.summary, result.run)
            return result.run
        return result
    finally:
        shutdown()


def _describe(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, DataBundle):
        return f"DataBundle {data.sizes()}"
    return "Datasets: " + ", ".join(type(d).__name__ for d in data)


def evaluate(run_dir: str | Path, split: str = "test", *, model: nn.Module | None = None,
             data: DataBundle | Sequence[Any] | None = None, on: str | Path | None = None) -> dict[str, Any]:
    """Metrics of a finished run's model on `split`, scored in the run's own precision.

    `model` / `data`: for runs trained from objects (see `train`). `on`: score labelled files
    from elsewhere instead, a folder of class sub-folders or an installed set such as
    `asterisk_digits` (see `ember.data.labelled_files`), decoded as `predict` decodes them.
    """
    if split not in ("train", "val", "test"):
        raise DataError(f"--split: got '{split}'; valid: train, val, test")
    loaded = load_run(run_dir, model=model)
    cfg = loaded.config
    device = resolve_device(cfg.train.device)
    if on is not None:
        dataset = _labelled_dataset(loaded, on)
    else:
        bundle = _bundle_of(data, loaded.info.task) or data_mod.build(cfg.data, cfg.train.seed)
        dataset = bundle.split(split)
    metrics = evaluate_split(loaded.model.to(device), dataset, loaded.task, device,
                             cfg.data.eval_batch_size, cfg.train.precision)
    if on is not None and metrics:
        metrics["examples"] = len(dataset)
    # The run's numeric precision under its own key: "precision" is the classification metric.
    return {**metrics, "dtype": cfg.train.precision} if metrics else metrics


def _labelled_dataset(loaded: LoadedRun, on: str | Path) -> Any:
    from ember.data.bundle import ArrayDataset
    from ember.data.labelled_files import labelled_files

    files, labels = labelled_files(on, loaded.info)
    x = torch.cat([batch for _, batch in read_inputs(files, loaded.info)])
    return ArrayDataset(x, torch.tensor(labels, dtype=torch.long))


def report(run_dir: str | Path) -> Path:
    """Re-render a finished run's report (after an upgrade, or once tools added sections)."""
    from ember.compress.report import write_section
    from ember.report.build import render_run

    write_section(open_run(run_dir))  # its compressed children may be new since it was written
    return render_run(run_dir)


def predict(run_dir: str | Path, inputs: Sequence[str | Path] | Any = (), texts: list[str] | None = None, *,
            model: nn.Module | None = None, batch_size: int = 256) -> list[dict[str, Any]]:
    """Predictions, one dict per example.

    `inputs` is either files (images, CSV rows, text files, a series CSV: decoded and
    normalised as in training) or model-ready examples: a tensor or NumPy array of shape
    (N, *input_shape) (or one example), or a map-style Dataset whose items are `x` or
    `(x, y)`. `texts` are raw strings for text models.

    Examples:
        >>> run = train("iris-mlp", ["train.epochs=2", "log.report=false"], quiet=True)
        >>> preds = predict(run.path, torch.zeros(2, 4))  # two standardised rows: the mean flower
        >>> len(preds), preds[0]["input"]
        (2, 'tensor#1')
    """
    loaded = load_run(run_dir, model=model)
    tokenizer = load_tokenizer(loaded.run.path) if loaded.info.input_kind == "tokens" else None
    is_files = isinstance(inputs, (list, tuple)) and all(isinstance(p, (str, Path)) for p in inputs)
    if is_files:
        rows = read_inputs([Path(p) for p in inputs], loaded.info, tokenizer, texts)
    else:
        rows = tensor_inputs(inputs, loaded.info, batch_size)
        if texts:
            rows += read_inputs([], loaded.info, tokenizer, texts)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for source, x in rows:
        with torch.no_grad():
            y = loaded.model(x)
        for i, pred in enumerate(loaded.task.predict(y)):
            if tokenizer is not None and "next_token_ids" in pred:
                pred["next_tokens"] = [tokenizer.decode([t]) for t in pred["next_token_ids"]]
            if is_files or source.startswith("text#"):
                name = source if len(x) == 1 else f"{source}#{i + 1}"
            else:  # tensor/dataset rows are numbered across batches
                seen[source] = seen.get(source, 0) + 1
                name = f"{source}#{seen[source]}"
            out.append({"input": name, **pred})
    return out
