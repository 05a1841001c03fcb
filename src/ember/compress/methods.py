"""What each compression step does to a model: prune, quantize, distill, fine-tune.

Each function takes the chain's current run (`Node`) and one step, and returns the new
model with the config and transforms that rebuild it (`Result`); `pipeline` writes it out
as a child run and measures it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember import models
from ember.compress.config import DistillStep, FinetuneStep, PruneStep, QuantizeStep
from ember.compress.training import (
    FINETUNE_LR_SCALE,
    STRUCTURED_LR_SCALE,
    PhaseRun,
    freeze_zeros,
    train_config,
)
from ember.compress.training import (
    finetune as run_finetune,
)
from ember.config import ExperimentConfig, from_dict
from ember.data.bundle import DataBundle
from ember.loading import LoadedRun
from ember.runs import Run
from ember.training.loop import LoopState
from ember.training.progress import Reporter

__all__ = ["Node", "Result", "prune", "quantize", "distill", "finetune"]


@dataclass
class Node:
    """A run in the chain: its loaded model, measured figures and what built it."""

    loaded: LoadedRun
    figures: dict[str, Any]
    transforms: list[dict[str, Any]]
    lineage: list[dict[str, str]]  # ancestors, root first
    steps: list[dict[str, Any]]  # every step applied since the root


@dataclass
class Result:
    """What one step produced, before it is written out."""

    model: nn.Module
    config: ExperimentConfig
    transforms: list[dict[str, Any]]
    details: dict[str, Any]
    state: LoopState = field(default_factory=LoopState)
    params: int | None = None  # for int8 models: the float model's count


def _example(bundle: DataBundle) -> torch.Tensor:
    """Two real training inputs: what tracing (torch-pruning) and QAT's range seeding run on."""
    return bundle.train.batch(torch.arange(min(2, len(bundle.train))))[0]


def prune(node: Node, step: PruneStep, bundle: DataBundle, run: Run, device: torch.device,
           reporter: Reporter) -> Result:
    from ember.compress.prune import (
        make_permanent,
        prune_structured,
        prune_unstructured,
        sparsity_of,
    )

    cfg = node.loaded.config
    model = copy.deepcopy(node.loaded.model).to(device)
    scale = STRUCTURED_LR_SCALE if step.kind == "structured" else FINETUNE_LR_SCALE
    ft_cfg = train_config(cfg, step.finetune_epochs or 1, step.lr, step.max_steps, fine_tune=True, lr_scale=scale)
    example = _example(bundle).to(device)
    transforms = list(node.transforms)
    details: dict[str, Any] = {"kind": step.kind, "target": step.sparsity, "iterations": step.iterations,
                               "finetune_epochs": step.finetune_epochs,
                               "sparsity_before": round(sparsity_of(model), 6)}
    state, offset = LoopState(), 0
    for it in range(step.iterations):
        if step.kind == "unstructured":
            # A linear ramp of the total share masked (masks only grow); fine-tuning in
            # between lets the remaining weights take over before the next cut.
            target = step.sparsity * (it + 1) / step.iterations
            stats = prune_unstructured(model, max(target, details["sparsity_before"]))
            reporter.message(f"prune {it + 1}/{step.iterations}: {stats['sparsity']:.3f} of "
                             f"{stats['total']:,} weights zero")
        else:
            # Per round remove q of each layer so that (1 - q)^k = 1 - ratio after k rounds.
            q = 1 - (1 - step.sparsity) ** (1 / step.iterations)
            model, record = prune_structured(model, q, example)
            transforms.append({"kind": "structure", "record": record})
            reporter.message(f"prune {it + 1}/{step.iterations}: {record['params_before']:,} -> "
                             f"{record['params_after']:,} parameters")
        if step.finetune_epochs:
            state = run_finetune(model, bundle, ft_cfg, PhaseRun(run.path, f"prune-{it + 1}", offset), device, reporter)
            offset += state.step
    make_permanent(model)
    if step.kind == "structured":
        # Units are removed, not zeroed: the smaller matrices hold no more zeros than before,
        # so "sparsity" would read 0.0; the share of parameters removed is what happened.
        before = transforms[len(node.transforms)]["record"]["params_before"]
        after = transforms[-1]["record"]["params_after"]
        details["params_removed"] = round(1 - after / before, 6) if before else 0.0
        details["zero_weights"] = round(sparsity_of(model), 6)
        del details["sparsity_before"]
    else:
        details["sparsity"] = round(sparsity_of(model), 6)
    return Result(model, ft_cfg if step.finetune_epochs else cfg, transforms, details, state)


def quantize(node: Node, step: QuantizeStep, bundle: DataBundle, run: Run, reporter: Reporter) -> Result:
    from ember.compress.quantize import check_supported, convert_qat, prepare_qat
    from ember.compress.quantize import quantize as to_int8

    cfg = node.loaded.config
    cpu = torch.device("cpu")  # int8 kernels are CPU kernels
    model = copy.deepcopy(node.loaded.model).to(cpu).eval()
    check_supported(model, step.mode)
    params = node.figures["params"]
    details: dict[str, Any] = {"mode": step.mode}
    state = LoopState()
    out_cfg = cfg
    if step.mode == "qat":
        epochs = step.finetune_epochs or 2
        out_cfg = train_config(cfg, epochs, step.lr, step.max_steps, fine_tune=True, device="cpu")
        example = _example(bundle)
        prepared = prepare_qat(model, example)
        kept = freeze_zeros(prepared)  # a pruned parent stays sparse through QAT
        state = run_finetune(prepared, bundle, out_cfg, PhaseRun(run.path, "qat", 0), cpu, reporter)
        from ember.compress.prune import make_permanent

        make_permanent(prepared)
        qmodel = convert_qat(prepared.eval())
        details.update({"finetune_epochs": epochs, "zeros_kept": kept})
    else:
        calibration = None
        if step.mode == "static":
            gen = torch.Generator().manual_seed(cfg.train.seed)
            order = torch.randperm(len(bundle.train), generator=gen)
            size = cfg.data.batch_size
            calibration = [bundle.train.batch(order[i * size:(i + 1) * size])[0]
                           for i in range(step.calibration_batches) if i * size < len(order)]
            details["calibration_batches"] = len(calibration)
            details["calibration_samples"] = sum(len(b) for b in calibration)
        qmodel = to_int8(model, step.mode, calibration)
    # Quantized kernels run on the CPU, in fp32 around int8: the child's config says so, for `ember evaluate`.
    out_cfg = from_dict({**out_cfg.model_dump(mode="json"),
                         "train": {**out_cfg.train.model_dump(mode="json"), "device": "cpu", "precision": "fp32"}})
    transforms = [*node.transforms, {"kind": "quantize", "mode": step.mode, "meta": {}}]
    return Result(qmodel, out_cfg, transforms, details, state, params=params)


def distill(node: Node, step: DistillStep, bundle: DataBundle, run: Run, device: torch.device,
            reporter: Reporter) -> Result:
    from ember.compress.distill import DistillConfig, student_model_config
    from ember.compress.distill import distill as run_distill

    cfg = node.loaded.config
    student_cfg = student_model_config(step.student, cfg)
    train_cfg = train_config(cfg, step.epochs or cfg.train.epochs, step.lr, step.max_steps or cfg.train.max_steps,
                             fine_tune=False)
    dcfg = DistillConfig(temperature=step.temperature, alpha=step.alpha)
    student, state = run_distill(node.loaded, student_cfg, train_cfg, run, device, dcfg, reporter=reporter,
                                 bundle=bundle)
    out_cfg = from_dict({**train_cfg.model_dump(mode="json"), "model": student_cfg.model_dump(mode="json")})
    details = {"student": student_cfg.model_dump(mode="json"), "temperature": step.temperature,
               "alpha": step.alpha, "epochs": train_cfg.train.epochs,
               "teacher_params": node.figures["params"], "student_params": models.count_parameters(student)}
    return Result(student, out_cfg, [], details, state)  # a new architecture: no transforms to replay


def finetune(node: Node, step: FinetuneStep, bundle: DataBundle, run: Run, device: torch.device,
              reporter: Reporter) -> Result:
    from ember.compress.prune import make_permanent, sparsity_of

    cfg = node.loaded.config
    model = copy.deepcopy(node.loaded.model).to(device)
    ft_cfg = train_config(cfg, step.epochs, step.lr, step.max_steps, fine_tune=True)
    kept = freeze_zeros(model)  # a sparse parent stays exactly as sparse
    state = run_finetune(model, bundle, ft_cfg, PhaseRun(run.path, "finetune", 0), device, reporter)
    make_permanent(model)
    details = {"epochs": step.epochs, "zeros_kept": kept, "sparsity": round(sparsity_of(model), 6)}
    return Result(model, ft_cfg, list(node.transforms), details, state)
