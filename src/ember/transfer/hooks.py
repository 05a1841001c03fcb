"""The transfer-learning hooks training calls, and nothing else of this package:

- `prepare(model, cfg, info, run)` after the model is built: `model.init_from`, `model.lora`,
  `train.freeze`; writes `transfer.json` into the run (read back by `summary_fields`);
- `training.optim.build_optimizer` takes its groups from `freeze.param_groups`;
- `unfreeze_at(model, epoch)` at the start of each epoch (`train.unfreeze_at_epoch`);
- `finish(model, run)` after training: keeps the adapters and merges them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from torch import nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.runs import Run, atomic_write_text
from ember.transfer.freeze import apply_freeze, param_groups, parameter_counts, unfreeze_at
from ember.transfer.init import LoadReport, init_from
from ember.transfer.lora import adapter_state, has_adapters, inject, merge

__all__ = ["prepare", "finish", "structure", "param_groups", "unfreeze_at", "parameter_counts",
           "describe_parameters", "summary_fields", "LoadReport", "TRANSFER_FILE", "ADAPTER_FILE"]

TRANSFER_FILE = "transfer.json"
ADAPTER_FILE = "adapter.safetensors"


def structure(model: nn.Module, cfg: Any, world_size: int = 1) -> dict[str, Any]:
    """Adapters and freezing as the config asks (no weights read): what `ember plan` needs too.

    Raises:
        ConfigError: a pattern matching nothing; unfreezing with more than one process.
    """
    record: dict[str, Any] = {}
    lora = getattr(cfg.model, "lora", None)  # a plug-in's config may not have the shared fields
    if lora is not None:
        record["lora"] = {**lora.model_dump(), "adapted": inject(model, lora)}
    if cfg.train.freeze:
        if cfg.train.unfreeze_at_epoch is not None and world_size > 1:
            raise ConfigError("train.unfreeze_at_epoch: DDP/FSDP fix the trainable set when they wrap the "
                              "model; train on one process or drop unfreeze_at_epoch")
        apply_freeze(model, cfg.train.freeze, cfg.train.unfreeze_at_epoch)
        record["freeze"] = list(cfg.train.freeze)
        record["unfreeze_at_epoch"] = cfg.train.unfreeze_at_epoch
    counts = parameter_counts(model)
    if counts["trainable_params"] == 0 and cfg.train.unfreeze_at_epoch is None:
        raise ConfigError("train.freeze: every parameter is frozen; nothing would train")
    record.update(counts)
    record["trainable_share"] = counts["trainable_params"] / max(counts["params"], 1)
    return record


def prepare(model: nn.Module, cfg: Any, info: DataInfo, run: Run | None = None, is_main: bool = True,
            world_size: int = 1, message: Callable[[str], None] | None = None) -> nn.Module:
    """Initialise from `model.init_from`, add LoRA adapters, freeze; record it all in the run.

    Args:
        model: the freshly built model (modified in place and returned).
        cfg: the `ExperimentConfig`.
        info: this data's description (its classes decide whether the head is kept).
        run: where `transfer.json` goes (rank 0 only writes).
        message: a callable taking one line for the console (the reporter's `message`).
    """
    report = init_from(model, cfg.model, info) if getattr(cfg.model, "init_from", None) else None
    if report is not None and message is not None:
        message(report.line())
    record = structure(model, cfg, world_size)
    if report is not None:
        record["init_from"] = report.to_dict()
    if run is not None and is_main:
        atomic_write_text(run.path / TRANSFER_FILE, json.dumps(record, indent=2))
    return model


def finish(model: nn.Module, run: Run, is_main: bool = True) -> nn.Module:
    """After training: save the adapters as `adapter.safetensors`, then merge them (in place)."""
    if not has_adapters(model):
        return model
    if is_main:
        from ember.weights import save_state

        save_state(adapter_state(model), run.path / ADAPTER_FILE)
    return merge(model)


def describe_parameters(model: nn.Module) -> str:
    """'1,234 parameters' or '1,234 parameters (200 trainable, 1,034 frozen)'."""
    c = parameter_counts(model)
    if c["frozen_params"] == 0:
        return f"{c['params']:,} parameters"
    share = 100 * c["trainable_params"] / max(c["params"], 1)
    return f"{c['params']:,} parameters ({c['trainable_params']:,} trainable = {share:.2f}%, {c['frozen_params']:,} frozen)"


def summary_fields(run: Run) -> dict[str, Any]:
    """What `prepare` recorded, for summary.json: counts at the start, init report, LoRA."""
    path = run.path / TRANSFER_FILE
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    out = {k: record[k] for k in ("trainable_params", "frozen_params", "trainable_share") if k in record}
    for key in ("init_from", "lora", "freeze", "unfreeze_at_epoch"):
        if record.get(key) is not None:
            out[key] = record[key]
    if "init_from" in out:  # the full name lists stay in transfer.json; the summary keeps counts
        rep = out["init_from"]
        out["init_from"] = {"source": rep["source"], "loaded": len(rep["loaded"]), "missing": rep["missing"],
                            "unexpected": rep["unexpected"], "mismatched": rep["mismatched"],
                            "reinitialised": rep["reinitialised"]}
    return out
