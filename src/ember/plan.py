"""`ember plan`: what a run will cost, without training it.

Parameters, FLOPs per sample (measured with torch's `FlopCounterMode` on one sample),
memory for weights, gradients, optimizer state and activations, and the batch arithmetic.
Models above `META_THRESHOLD` parameters are built on the `meta` device, so planning
GPT-2 small allocates no weights and runs no real arithmetic.

With `nproc` > 1 the memory is per rank, for the strategy the config resolves to: DDP keeps
a whole replica plus gradient buckets on every rank; FSDP keeps 1/N of the weights,
gradients and optimizer state, plus the unsharded working set (the root's parameters and
two blocks' worth: the running one and the prefetched next one). Activations are those of
the rank's micro-batch, `ceil(batch_size / N)`.

    >>> result = plan("digits-cnn", ["data.batch_size=128"])
    >>> result["batch"]["effective"]
    128
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode

from ember import data as data_mod
from ember import models
from ember.config import ExperimentConfig, load
from ember.data.bundle import DataBundle, DataInfo
from ember.data.footprint import data_footprint
from ember.errors import ConfigError, DataError
from ember.transfer.hooks import structure

__all__ = ["plan", "print_plan", "META_THRESHOLD"]

META_THRESHOLD = 50_000_000  # parameters above which the model is planned on `meta`
_FP32 = 4  # weights, gradients and optimizer state stay fp32 under autocast (bf16/fp16)
_ACT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TRAIN_FLOPS_NOTE = "training ~ 3x forward (backward ~ 2x forward)"


def _data_info(cfg: ExperimentConfig) -> tuple[DataInfo, int, str | None, DataBundle | None]:
    """The data description, the train-split size, a note when either is assumed, and the data."""
    estimate = data_mod.estimated_info(cfg.data)
    if estimate is not None:  # tokenizing a large corpus would take longer than the plan
        return estimate[0], estimate[1], "corpus not tokenized for the plan; vocabulary and sizes estimated", None
    try:
        bundle = data_mod.build(cfg.data, cfg.train.seed)
    except DataError as exc:
        static = data_mod.static_info(cfg.data)
        if static is None:
            raise
        return static[0], static[1], f"data files absent; sizes assumed from the published dataset ({exc})", None
    return bundle.info, len(bundle.train), None, bundle


def _example(info: DataInfo, device: torch.device) -> torch.Tensor:
    """A batch of one all-zeros sample of the model's input shape."""
    dtype = torch.long if info.input_kind == "tokens" else torch.float32
    return torch.zeros(1, *info.input_shape, dtype=dtype, device=device)


def _leaf_output_elements(model: nn.Module, x: torch.Tensor) -> int:
    """Elements of every leaf module's output for `x`: roughly what backward keeps alive."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        nonlocal total
        outs = out if isinstance(out, (tuple, list)) else (out,)
        total += sum(o.numel() for o in outs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _rnn_flops(module: nn.RNNBase, x: torch.Tensor | PackedSequence) -> int:
    """Analytic FLOPs of a recurrent layer: gates x hidden x (input + hidden) x 2 per step."""
    rows = x.data.shape[0] if isinstance(x, PackedSequence) else x.numel() // module.input_size
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    dirs = 2 if module.bidirectional else 1
    out = module.proj_size or module.hidden_size
    per_step = sum(dirs * gates * module.hidden_size * ((module.input_size if layer == 0 else out * dirs) + out)
                   for layer in range(module.num_layers))
    return 2 * rows * per_step


def _forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass on `x` (matmuls and convolutions, 2 per multiply-add).

    Attention runs on the math SDPA backend, whose matmuls the counter sees (the fused CPU
    kernel has no FLOP formula). Fused recurrent kernels (LSTM on CPU) are invisible to the
    counter too: for those layers the analytic count replaces what it saw.
    """
    missing = 0
    with FlopCounterMode(display=False) as counter:
        seen: dict[int, int] = {}

        def before(module: nn.Module, _inputs: Any) -> None:
            seen[id(module)] = counter.get_total_flops()

        def after(module: nn.Module, inputs: Any, _out: Any) -> None:
            nonlocal missing
            counted = counter.get_total_flops() - seen.pop(id(module))
            missing += max(_rnn_flops(module, inputs[0]) - counted, 0)  # type: ignore[arg-type]

        rnns = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
        handles = [h for m in rnns for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
        try:
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
                model(x)
        finally:
            for h in handles:
                h.remove()
    return int(counter.get_total_flops()) + missing


def _optimizer_slots(cfg: ExperimentConfig) -> int:
    """fp32 tensors of optimizer state per trainable parameter."""
    if cfg.optim.name in ("adam", "adamw"):
        return 2  # first and second moments
    return 1 if cfg.optim.momentum > 0 else 0  # SGD: a momentum buffer, or nothing


def _build(cfg: ExperimentConfig, info: DataInfo) -> tuple[nn.Module, torch.device]:
    """The model on CPU, or on `meta` (no storage) when it has more than META_THRESHOLD params."""
    with torch.device("meta"):
        probe = models.build(cfg.model, info)  # shapes only: counting is free at any size
    if sum(p.numel() for p in probe.parameters()) > META_THRESHOLD:
        return probe, torch.device("meta")
    with torch.random.fork_rng(devices=[]):  # a dry run leaves the caller's RNG untouched
        return models.build(cfg.model, info), torch.device("cpu")


def _batch(cfg: ExperimentConfig, train_size: int, nproc: int) -> dict[str, int]:
    """Global batch, steps per epoch (as `BatchPlan` counts them) and total steps.

    The global batch does not depend on the number of processes: each rank takes 1/N of it.
    """
    effective = cfg.data.batch_size * cfg.train.grad_accum
    per_epoch = train_size // effective if cfg.data.drop_last else math.ceil(train_size / effective)
    total = cfg.train.epochs * per_epoch
    if cfg.train.max_steps is not None:
        total = min(total, cfg.train.max_steps)
    return {"batch_size": cfg.data.batch_size, "grad_accum": cfg.train.grad_accum, "world_size": nproc,
            "micro_batch_per_rank": math.ceil(cfg.data.batch_size / nproc), "effective": effective, "steps_per_epoch": per_epoch, "epochs": cfg.train.epochs,
            "total_steps": total}


def _per_rank(model: nn.Module, cfg: ExperimentConfig, strategy: str, nproc: int, trainable: int,
              activations: int) -> dict[str, int]:
    """Bytes each rank holds while training, for `strategy` over `nproc` processes."""
    from ember.training.distributed import repeated_blocks

    slots = _optimizer_slots(cfg)
    params = sum(p.numel() for p in model.parameters())
    if cfg.train.activation_checkpointing and repeated_blocks(model):
        # Only block inputs are kept; one block's activations are rebuilt at a time (rough).
        activations = activations * 2 // len(repeated_blocks(model))
    if strategy != "fsdp":
        out = {"weights": params * _FP32, "gradients": trainable * _FP32,
               "optimizer": trainable * _FP32 * slots, "activations": activations}
        if strategy == "ddp":
            out["gradient_buckets"] = trainable * _FP32  # DDP's all-reduce buffers
        return out
    blocks = repeated_blocks(model)
    largest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    root = params - sum(sum(p.numel() for p in b.parameters()) for b in blocks)
    gathered = _ACT_BYTES[cfg.train.precision] if cfg.train.precision == "bf16" else _FP32
    return {"weights": math.ceil(params / nproc) * _FP32, "gradients": math.ceil(trainable / nproc) * _FP32,
            "optimizer": math.ceil(trainable / nproc) * _FP32 * slots,
            "unsharded_working_set": (root + 2 * largest) * gathered, "activations": activations}


def plan(recipe: str, overrides: list[str] | None = None, nproc: int = 1) -> dict[str, Any]:
    """A dry run of `recipe` with `overrides`: what training would cost, as a JSON-able dict.

    Keys: recipe, config, data, model, flops, memory_bytes, memory_mib, batch, device,
    precision. Raises `ConfigError` for a bad config and `DataError` when the data is
    missing and the source has no published sizes to assume.
    """
    from ember.training.distributed import DistEnv, resolve_strategy

    cfg = load(recipe, overrides)
    if nproc < 1:
        raise ConfigError(f"--nproc: got {nproc}; must be >= 1")
    strategy = resolve_strategy(cfg.train.strategy, DistEnv(world_size=nproc))
    info, train_size, note, bundle = _data_info(cfg)
    model, device = _build(cfg, info)
    shares = structure(model, cfg, nproc)  # LoRA adapters and train.freeze, as training sets them
    model.eval()  # dropout off: FLOPs and activation sizes do not depend on it
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = _example(info, device)
    forward = _forward_flops(model, x)
    micro = math.ceil(cfg.data.batch_size / nproc)
    activations = _leaf_output_elements(model, x) * micro * _ACT_BYTES[cfg.train.precision]
    memory = _per_rank(model, cfg, strategy, nproc, trainable, activations)
    memory["total"] = sum(memory.values())
    batch = _batch(cfg, train_size, nproc)
    flops: dict[str, Any] = {
        "forward_per_sample": forward,
        "train_per_sample": 3 * forward,
        "train_total": 3 * forward * batch["effective"] * batch["total_steps"],
        "note": TRAIN_FLOPS_NOTE,
    }
    if info.input_kind == "tokens" and info.input_shape:
        tokens = int(info.input_shape[0])
        flops["forward_per_token"] = forward // tokens
        flops["train_per_token"] = 3 * forward // tokens
    data: dict[str, Any] = {"name": cfg.data.name, "train_size": train_size,
                            "input_shape": list(info.input_shape), "task": info.task,
                            "num_outputs": info.num_outputs,
                            "footprint": data_footprint(cfg.data, info, train_size, bundle)}
    if note:
        data["note"] = note
    out = {
        "recipe": cfg.recipe,
        "config": cfg.model_dump(mode="json"),
        "data": data,
        "model": {"name": cfg.model.name, "params": params, "trainable_params": trainable,
                  "frozen_params": params - trainable, "trainable_share": shares["trainable_share"],
                  "planned_on": device.type},
        "flops": flops,
        "memory_bytes": memory,
        "memory_mib": {k: round(v / 2**20, 6) for k, v in memory.items()},
        "batch": batch,
        "device": cfg.train.device,
        "precision": cfg.train.precision,
        "world_size": nproc,
        "strategy": strategy,
    }
    if cfg.train.privacy is not None:  # [privacy] the noise the target implies, and the ε it spends
        from ember.privacy.accounting import budget_plan

        out["privacy"] = budget_plan(cfg.train.privacy, cfg.data.batch_size, cfg.train.grad_accum, train_size,
                                     batch["total_steps"])
    return out


def _count(n: float) -> str:
    """1234567 -> '1.23M' (K, M, G, T, P, E)."""
    for unit, size in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float) -> str:
    """Bytes in KiB, MiB or GiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _footprint_rows(fp: dict[str, Any]) -> list[tuple[str, str]]:
    """The data footprint as table rows: disk, memory, decode time, fit."""
    rows = [(f"items ({' / '.join(fp['items'])})", " / ".join(f"{v:,}" for v in fp["items"].values()))]
    if fp["disk_bytes"] is not None:
        rows.append(("bytes on disk", _bytes(fp["disk_bytes"])))
    fits = {True: "fits", False: "does not fit", None: "unknown"}[fp["fits_in_memory"]]
    rows.append(("decoded in memory", f"{_bytes(fp['memory_bytes'])} ({fits} in half the free memory)"))
    if "decode_s_per_epoch" in fp:
        rows.append((f"decode + augment / epoch ({fp['workers']} workers)",
                     f"{fp['decode_s_per_epoch']:.2f} s ({fp['decode_s_per_item'] * 1e6:.0f} us / item)"))
    rows.append(("read", "streamed from disk per batch" if fp["streamed"] else "held in memory"))
    return rows


def print_plan(result: dict[str, Any]) -> None:
    """Print a `plan()` result as rich tables in human units."""
    from rich.console import Console
    from rich.table import Table

    d, m, f, mem, b = (result[k] for k in ("data", "model", "flops", "memory_bytes", "batch"))
    sharded = f" / {result['world_size']}" if result["strategy"] == "fsdp" else ""
    sections: dict[str, list[tuple[str, str]]] = {
        "data & model": [
            ("data", f"{d['name']} ({d['task']})"),
            ("input shape / outputs", f"{tuple(d['input_shape'])} / {d['num_outputs']:,}"),
            ("train samples", f"{d['train_size']:,}"),
            ("model", f"{m['name']}: {_count(m['params'])} parameters ({m['params']:,})"),
            ("trainable / frozen", f"{m['trainable_params']:,} ({100 * m['trainable_share']:.2f}%) / "
                                   f"{m['frozen_params']:,}"),
        ],
        "FLOPs": [
            ("forward / sample", _count(f["forward_per_sample"])),
            ("train / sample (~3x forward)", _count(f["train_per_sample"])),
            ("train, whole run", _count(f["train_total"])),
        ],
        f"memory per rank ({result['precision']}, device {result['device']}, "
        f"{result['world_size']} x {result['strategy']})": [
            ("weights (fp32)" + sharded, _bytes(mem["weights"])),
            ("gradients (fp32)" + sharded, _bytes(mem["gradients"])),
            (f"optimizer state ({result['config']['optim']['name']})" + sharded, _bytes(mem["optimizer"])),
            *([("DDP gradient buckets", _bytes(mem["gradient_buckets"]))] if "gradient_buckets" in mem else []),
            *([("FSDP unsharded root + 2 blocks", _bytes(mem["unsharded_working_set"]))]
              if "unsharded_working_set" in mem else []),
            (f"activations (micro-batch {b['micro_batch_per_rank']})", _bytes(mem["activations"])),
            ("total", _bytes(mem["total"])),
        ],
        "batches": [
            ("global batch", f"{b['batch_size']} x {b['grad_accum']} accum = {b['effective']}"
                             f" ({b['world_size']} ranks x {b['micro_batch_per_rank']})"),
            ("steps / epoch", f"{b['steps_per_epoch']:,}"),
            ("total steps", f"{b['total_steps']:,} ({b['epochs']} epochs)"),
        ],
    }
    sections["data & model"][3:3] = _footprint_rows(d["footprint"])
    if "privacy" in result:  # [privacy]
        pv = result["privacy"]
        sections["privacy (DP-SGD)"] = [
            ("target ε / δ", f"{pv['target_epsilon'] if pv['target_epsilon'] is not None else '-'} / {pv['delta']:.3g}"),
            ("noise multiplier σ", f"{pv['noise_multiplier']:.4g}"),
            ("sampling rate q", f"{pv['sample_rate']:.4g} ({'Poisson' if pv['poisson'] else 'shuffled'})"),
            ("ε after the run", f"{pv['epsilon']:.3g} ({pv['accountant']})"),
        ]
    if "train_per_token" in f:
        sections["FLOPs"].insert(2, ("train / token", _count(f["train_per_token"])))
    console = Console()
    console.print(f"[bold]plan: {result['recipe']}[/bold] (dry run, nothing trained)")
    for title, rows in sections.items():
        table = Table(title=title, show_header=False, title_justify="left", width=76)
        table.add_column("what", ratio=2)
        table.add_column("value", justify="right", ratio=3)
        for what, value in rows:
            table.add_row(what, value)
        console.print(table)
    if "note" in d:
        console.print(f"note: {d['note']}")
