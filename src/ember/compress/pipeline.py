"""`compress(run_dir, steps)`: apply compression steps to a finished run, one child run per step.

Each step reads its parent run (never writing to it), builds a smaller or faster model,
saves it as a new run directory beside the parent and measures parent and child side by
side into the child's `compression.json`. A chain writes one child per step, each child's
parent being the previous child: every intermediate model is a run of its own that can be
evaluated, and each step's cost and gain is read off its own record.

    runs/digits-cnn-20261124-120000/                     the parent (trained)
    runs/digits-cnn-prune-20261124-121500/               prune step, parent: the run above
    runs/digits-cnn-prune-quantize-20261124-121530/      quantize step, parent: the prune child
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ember import models
from ember.cli_tables import print_compression
from ember.compress import methods
from ember.compress.child import is_quantized
from ember.compress.config import (
    CompressConfig,
    DistillStep,
    PruneStep,
    QuantizeStep,
    Step,
    check_order,
)
from ember.compress.measure import MEASURE_THREADS, measure, primary_metric
from ember.compress.methods import Node
from ember.compress.record import RECORD, read_record
from ember.compress.report import write_section
from ember.config import from_dict, to_yaml
from ember.data.bundle import DataBundle
from ember.errors import ConfigError
from ember.loading import LoadedRun, load_run
from ember.report.build import build_report
from ember.runs import Run, atomic_write_text, new_run_dir, unlock_run
from ember.training.progress import Reporter
from ember.training.session import prepare, write_data_files, write_summary
from ember.weights import save_tensors, save_weights

__all__ = ["compress"]

FORMAT = "ember.compression/1"


def _resolve_chain(parent: LoadedRun, steps: CompressConfig | list[Step] | None) -> list[Step]:
    if steps is None:
        if parent.config.compress is None:
            raise ConfigError(f"no --method or --recipe given, and '{parent.run.path}/config.yaml' has no "
                              "compress: section; e.g. ember compress RUN --method quantize")
        return list(parent.config.compress.steps)
    return list(steps.steps) if isinstance(steps, CompressConfig) else list(steps)


def _precheck(parent: LoadedRun, chain: list[Step], transforms: list[dict[str, Any]]) -> None:
    """Every check that needs no training, before any child folder is made."""
    try:
        check_order(chain, quantized=is_quantized(transforms))
    except ValueError as exc:
        where = f"'{parent.run.path}' is already int8; " if is_quantized(transforms) else ""
        raise ConfigError(f"{where}{exc}") from None
    from ember.compress.distill import check_student, student_model_config

    teacher_cfg, model = parent.config, parent.model  # what the step at hand will work on
    for step in chain:
        if isinstance(step, QuantizeStep):
            from ember.compress.quantize import check_supported

            check_supported(model, step.mode)
        elif isinstance(step, DistillStep):
            student = student_model_config(step.student, teacher_cfg)  # reads a --student file
            try:
                check_student(student, teacher_cfg, parent.info)
            except ConfigError as exc:
                raise ConfigError(f"student: {exc}") from None
            teacher_cfg = from_dict({**teacher_cfg.model_dump(mode="json"), "model": student.model_dump(mode="json")})
            model = models.build(student, parent.info)


def _child_folder(parent: Run, recipe: str, out_dir: Path | None, index: int, count: int, method: str) -> Run:
    if out_dir is None:
        return new_run_dir(parent.path.parent, recipe)
    target = out_dir if count == 1 else out_dir / f"{index + 1:02d}-{method}"
    if target.resolve() == parent.path.resolve():
        raise ConfigError(f"--run-dir: '{target}' is the parent run; a compressed run goes into a new folder")
    if target.is_dir() and any(target.iterdir()) and not (target / "config.yaml").exists():
        # A failed step removes its folder: never let that be a folder holding the user's files.
        raise ConfigError(f"--run-dir: '{target}' exists and is not empty; give a new or empty folder")
    return new_run_dir(parent.path.parent, recipe, target)


# --- one step, written out -----------------------------------------------------------------


def _change(parent: dict[str, Any], child: dict[str, Any], metric: str, mode: str) -> dict[str, Any]:
    """Child relative to parent: speed-up, size and parameter ratios, metric difference
    (and, for metrics judged by ratio like perplexity, the relative change in percent)."""
    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    out = {"speedup_b1": ratio(parent.get("latency_ms_b1"), child.get("latency_ms_b1")),
           "throughput_ratio": ratio(child.get("throughput_b64"), parent.get("throughput_b64")),
           "size_ratio": ratio(parent.get("size_mb"), child.get("size_mb")),
           "params_ratio": ratio(parent.get("params"), child.get("params"))}
    if metric in parent and metric in child:
        out[f"{metric}_delta"] = round(child[metric] - parent[metric], 6)
        if mode == "min" and parent[metric]:
            out[f"{metric}_change_pct"] = round(100 * (child[metric] - parent[metric]) / parent[metric], 3)
    return out


def _step(node: Node, step: Step, bundle: DataBundle, run: Run, device: torch.device, reporter: Reporter,
          t0: float) -> Node:
    parent = node.loaded
    reporter.message(f"{step.method}: {parent.run.path} -> {run.path}")
    if isinstance(step, PruneStep):
        result = methods.prune(node, step, bundle, run, device, reporter)
    elif isinstance(step, QuantizeStep):
        result = methods.quantize(node, step, bundle, run, reporter)
    elif isinstance(step, DistillStep):
        result = methods.distill(node, step, bundle, run, device, reporter)
    else:
        result = methods.finetune(node, step, bundle, run, device, reporter)

    recipe = f"{parent.config.recipe}-{step.method}"
    cfg = from_dict({**result.config.model_dump(mode="json"), "recipe": recipe, "compress": None})
    atomic_write_text(run.config, to_yaml(cfg))
    write_data_files(run, bundle)
    transforms = result.transforms
    if transforms and transforms[-1]["kind"] == "quantize" and not transforms[-1]["meta"]:
        from ember.compress.quantize import quantized_state

        tensors, meta = quantized_state(result.model)
        transforms[-1]["meta"] = meta
        save_tensors(tensors, run.weights)
    else:
        save_weights(result.model.cpu(), run.weights)

    task_metric, mode = primary_metric(parent.task)
    lineage = [*node.lineage, {"name": parent.run.path.name, "path": str(parent.run.path.resolve())}]
    steps = [*node.steps, step.model_dump(mode="json")]
    record: dict[str, Any] = {
        "format": FORMAT, "method": step.method, "step": step.model_dump(mode="json"), "steps": steps,
        "parent_run": lineage[-1]["path"], "root_run": lineage[0]["path"], "lineage": lineage,
        "metric": {"name": task_metric, "mode": mode}, "details": result.details, "transforms": transforms,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    # Written before measuring: the reload below goes through `load_run`, which replays it.
    atomic_write_text(run.path / RECORD, json.dumps(record, indent=2))
    child = load_run(run.path)
    params = result.params if result.params is not None else models.count_parameters(child.model)
    cpu = torch.device("cpu")
    summary = write_summary(cfg=cfg, run=run, model=child.model, bundle=bundle, task=child.task, device=cpu,
                         state=result.state, wall=time.perf_counter() - t0, resumed=False)
    # The summary just scored the test split on the CPU; in fp32 that is measure's own figure.
    scored = summary.get("test") if cfg.train.precision == "fp32" else None
    figures = measure(child.model, bundle.test, child.task, run.weights, params, cfg.data.eval_batch_size,
                      metrics=scored)
    record["parent"] = {"run": parent.run.path.name, **node.figures}
    record["child"] = {"run": run.path.name, **figures}
    record["change"] = _change(node.figures, figures, task_metric, mode)
    record["measured_with"] = {"device": "cpu", "threads": MEASURE_THREADS, "torch": torch.__version__}
    atomic_write_text(run.path / RECORD, json.dumps(record, indent=2))
    summary.update({"params": params, "compression": {"method": step.method, "parent_run": record["parent_run"],
                                                      "change": record["change"]}})
    atomic_write_text(run.summary, json.dumps(summary, indent=2))
    write_section(run)
    if cfg.log.report:
        build_report(run, child.model, bundle, child.task, cpu, limit=cfg.log.image_grid)
    return Node(child, figures, transforms, lineage, steps)


def compress(run_dir: str | Path, steps: CompressConfig | list[Step] | None = None,
             out_dir: str | Path | None = None, quiet: bool = False, verbose: bool = True) -> list[Run]:
    """Compress a finished run: one new child run per step; the parent is only read.

    Args:
        run_dir: the parent run (trained, or itself a compressed child).
        steps: the steps to apply in order; None takes the parent config's `compress:` section.
        out_dir: where the child goes (a chain: one numbered sub-folder per step); default a
            new `<recipe>-<method>-<time>` folder beside the parent.

    Returns:
        The child runs, in order; each holds `compression.json` with parent and child figures.

    Raises:
        RunError: a missing run. ConfigError: an invalid step, a model/method pair that is not
        supported, a student that does not fit the task.

    Example:
        >>> from ember.compress.config import QuantizeStep
        >>> [child] = compress("runs/digits-cnn-20261124-120000", [QuantizeStep(mode="static")])
    """
    t0 = time.perf_counter()
    parent = load_run(run_dir)
    chain = _resolve_chain(parent, steps)
    record = read_record(parent.run.path) or {}
    transforms = list(record.get("transforms", []))
    _precheck(parent, chain, transforms)
    cfg = parent.config
    device, bundle = prepare(cfg)
    reporter = Reporter(quiet=quiet, enabled=verbose)
    params = record.get("child", {}).get("params") or models.count_parameters(parent.model)
    figures = measure(parent.model.cpu(), bundle.test, parent.task, parent.run.weights, params,
                      cfg.data.eval_batch_size)
    node = Node(parent, figures, transforms, list(record.get("lineage", [])), list(record.get("steps", [])))
    out = Path(out_dir) if out_dir is not None else None
    children: list[Run] = []
    for i, step in enumerate(chain):
        recipe = f"{node.loaded.config.recipe}-{step.method}"
        run = _child_folder(node.loaded.run, recipe, out, i, len(chain), step.method)
        try:
            node = _step(node, step, bundle, run, device, reporter, t0)
        except BaseException:
            # A failed step leaves no half-written run behind (earlier steps' children stay).
            shutil.rmtree(run.path, ignore_errors=True)
            raise
        finally:
            unlock_run(run.path)  # new_run_dir locked the child while it was written
        children.append(node.loaded.run)
        t0 = time.perf_counter()
        if verbose:
            print_compression(read_record(run.path) or {}, run.path)
    return children
