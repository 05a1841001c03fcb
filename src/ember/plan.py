"""`ember plan`: what a run will cost, without training it.

Parameters, FLOPs per sample (measured with torch's FlopCounterMode on one sample),
memory for weights, gradients, optimizer state and activations, and the batch arithmetic.
Large models are built on the `meta` device, so planning GPT-2 small allocates nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ember import data as data_mod
from ember import models
from ember.config import load
from ember.data.bundle import DataInfo
from ember.errors import DataError

__all__ = ["plan", "print_plan"]

_META_THRESHOLD = 20_000_000  # parameters above which the model is planned on `meta`


def _data_info(cfg: Any) -> tuple[DataInfo, int, str | None]:
    estimate = data_mod.estimated_info(cfg.data)
    if estimate is not None:
        return estimate[0], estimate[1], "corpus not tokenized for the plan; vocabulary and sizes estimated"
    try:
        bundle = data_mod.build(cfg.data, cfg.train.seed)
        return bundle.info, len(bundle.train), None
    except DataError as exc:
        static = data_mod.static_info(cfg.data)
        if static is None:
            raise
        return static[0], static[1], f"data files absent ({exc}); sizes assumed from the published dataset"


def _example(info: DataInfo, device: torch.device) -> torch.Tensor:
    if info.input_kind == "tokens":
        return torch.zeros(1, *info.input_shape, dtype=torch.long, device=device)
    return torch.zeros(1, *info.input_shape, device=device)


def _activation_bytes_per_sample(model: nn.Module, x: torch.Tensor, elem: int) -> int:
    """Bytes of every leaf module's output for one sample: what backward keeps alive."""
    total = 0

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total * elem


def _optimizer_slots(cfg: Any) -> int:
    if cfg.optim.name in ("adam", "adamw"):
        return 2
    return 1 if cfg.optim.momentum > 0 else 0


def plan(recipe: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Resolve the config and estimate cost; JSON-able result."""
    cfg = load(recipe, overrides)
    info, train_size, note = _data_info(cfg)
    with torch.device("meta"):
        probe = models.build(cfg.model, info)
    params = sum(p.numel() for p in probe.parameters())
    trainable = sum(p.numel() for p in probe.parameters() if p.requires_grad)
    device = torch.device("meta") if params > _META_THRESHOLD else torch.device("cpu")
    if device.type == "cpu":
        torch.manual_seed(0)
        model = models.build(cfg.model, info)
    else:
        model = probe
    model.eval()
    x = _example(info, device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    forward = int(counter.get_total_flops())
    elem = 2 if cfg.train.precision in ("bf16", "fp16") else 4
    act = _activation_bytes_per_sample(model, x, elem) * cfg.data.batch_size
    world = 1
    effective = cfg.data.batch_size * cfg.train.grad_accum * world
    spe = train_size // effective if cfg.data.drop_last else math.ceil(train_size / effective)
    total_steps = cfg.train.epochs * spe
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    memory = {
        "weights": params * 4,
        "gradients": trainable * 4,
        "optimizer": trainable * 4 * _optimizer_slots(cfg),
        "activations": act,
    }
    memory["total"] = sum(memory.values())
    result: dict[str, Any] = {
        "recipe": cfg.recipe,
        "config": cfg.model_dump(mode="json"),
        "data": {"name": cfg.data.name, "train_size": train_size, "input_shape": list(info.input_shape),
                 "task": info.task, "num_outputs": info.num_outputs},
        "model": {"name": cfg.model.name, "params": params, "trainable_params": trainable},
        "flops": {"forward_per_sample": forward, "train_per_sample": 3 * forward,
                  "note": "training ~ 3x forward (backward ~ 2x forward)"},
        "memory_bytes": memory,
        "batch": {"batch_size": cfg.data.batch_size, "grad_accum": cfg.train.grad_accum, "world_size": world,
                  "effective": effective, "steps_per_epoch": spe, "epochs": cfg.train.epochs,
                  "total_steps": total_steps},
        "device": cfg.train.device,
        "precision": cfg.train.precision,
    }
    if info.task == "lm":
        tokens = int(info.input_shape[0])
        result["flops"]["forward_per_token"] = forward // tokens
        result["flops"]["train_per_token"] = 3 * forward // tokens
    if note:
        result["data"]["note"] = note
    return result


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.2f} MiB"


def print_plan(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"plan: {result['recipe']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    d, m, f, mem, b = (result[k] for k in ("data", "model", "flops", "memory_bytes", "batch"))
    rows = [
        ("data", f"{d['name']} ({d['task']}), {d['train_size']:,} train, input {d['input_shape']}"),
        ("model", f"{m['name']}, {m['params']:,} parameters ({_count(m['params'])})"),
        ("FLOPs / sample (forward)", _count(f["forward_per_sample"])),
        ("FLOPs / sample (train, ~3x)", _count(f["train_per_sample"])),
    ]
    if "forward_per_token" in f:
        rows.append(("FLOPs / token (train)", _count(f["train_per_token"])))
    rows += [
        ("memory: weights", _bytes(mem["weights"])),
        ("memory: gradients", _bytes(mem["gradients"])),
        ("memory: optimizer state", _bytes(mem["optimizer"])),
        (f"memory: activations (batch {b['batch_size']}, {result['precision']})", _bytes(mem["activations"])),
        ("memory: total", _bytes(mem["total"])),
        ("effective batch (batch x accum x world)",
         f"{b['batch_size']} x {b['grad_accum']} x {b['world_size']} = {b['effective']}"),
        ("steps per epoch / total", f"{b['steps_per_epoch']:,} / {b['total_steps']:,}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console = Console()
    console.print(table)
    if "note" in d:
        console.print(f"note: {d['note']}")
