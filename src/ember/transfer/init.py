"""`model.init_from`: start a model from another run's weights or a safetensors file.

Tensors are matched by name (after `model.init_map` renames prefixes) and shape. What did
not fit is reported, not fatal: a new head for different classes is the usual case. When
the source is a run whose classes differ from this data's, the output head is left at its
fresh initialisation even if the number of classes happens to be the same.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError
from ember.models.common import ModelSection
from ember.weights import load_tensors

__all__ = ["LoadReport", "init_from", "source_tensors", "output_head"]


@dataclass
class LoadReport:
    """What `init_from` did, by tensor name (the model's names)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the source
    unexpected: list[str] = field(default_factory=list)  # in the source, not in the model
    mismatched: list[dict[str, Any]] = field(default_factory=list)  # same name, other shape
    reinitialised: list[str] = field(default_factory=list)  # the head, for different classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for the console."""
        parts = [f"init_from {self.source}: {len(self.loaded)} tensors loaded"]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape-mismatched", [m["name"] for m in self.mismatched]),
                             ("head re-initialised", self.reinitialised)):
            if items:
                shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
                parts.append(f"{len(items)} {label} ({shown})")
        return "; ".join(parts)


def source_tensors(spec: str) -> tuple[dict[str, Tensor], DataInfo | None]:
    """The tensors named by `spec` (a run directory or a .safetensors file), and the run's data info.

    Raises:
        ConfigError: neither a run directory with model.safetensors nor a safetensors file.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise ConfigError(f"model.init_from: '{spec}' holds no model.safetensors; give a finished run "
                              "directory or a .safetensors file")
        info_path = path / "data_info.json"
        info = DataInfo.from_dict(json.loads(info_path.read_text())) if info_path.is_file() else None
        return load_tensors(weights), info
    if path.is_file() and path.suffix == ".safetensors":
        return load_tensors(path), None
    raise ConfigError(f"model.init_from: '{spec}' is neither a run directory nor a .safetensors file")


def _rename(tensors: dict[str, Tensor], mapping: dict[str, str | None]) -> dict[str, Tensor]:
    """Apply the longest matching prefix rule to each name; a None target drops the tensor."""
    if not mapping:
        return tensors
    rules = sorted(mapping.items(), key=lambda kv: -len(kv[0]))
    out: dict[str, Tensor] = {}
    for name, t in tensors.items():
        for old, new in rules:
            if name.startswith(old):
                if new is None:
                    break
                out[new + name[len(old):]] = t
                break
        else:
            out[name] = t
    return out


def output_head(model: nn.Module, num_outputs: int) -> list[str]:
    """Names of the last `nn.Linear` with `num_outputs` outputs (the classification head)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_outputs:
            last = name
    if last is None:
        return []
    return [f"{last}.{p}" if last else p for p, _ in model.get_submodule(last).named_parameters()]


def _classes_differ(source: DataInfo | None, info: DataInfo) -> bool:
    if source is None or info.task != "classification" or source.task != "classification":
        return False
    return tuple(source.class_names) != tuple(info.class_names)


@torch.no_grad()
def init_from(model: nn.Module, cfg: ModelSection, info: DataInfo) -> LoadReport:
    """Copy the matching tensors of `cfg.init_from` into `model` (in place) and report.

    Raises:
        ConfigError: the source is missing, or not one tensor of it fits the model.
    """
    assert cfg.init_from is not None
    tensors, source_info = source_tensors(cfg.init_from)
    tensors = _rename(tensors, cfg.init_map)
    report = LoadReport(source=str(cfg.init_from))
    state = model.state_dict()
    head = set(output_head(model, info.num_outputs)) if _classes_differ(source_info, info) else set()
    fit: dict[str, Tensor] = {}
    for name, t in tensors.items():
        if name not in state:
            report.unexpected.append(name)
        elif tuple(t.shape) != tuple(state[name].shape):
            report.mismatched.append({"name": name, "source": list(t.shape), "model": list(state[name].shape)})
        elif name in head:
            report.reinitialised.append(name)
        else:
            fit[name] = t
    if not fit:
        raise ConfigError(f"model.init_from: no tensor of '{cfg.init_from}' fits this model (by name and "
                          f"shape); its names look like {sorted(tensors)[:3]}; map them with model.init_map")
    model.load_state_dict(fit, strict=False)
    # Tied tensors (GPT's head is its embedding) count as loaded through their other name.
    loaded_storage = {state[n].data_ptr() for n in fit}
    report.loaded = sorted(fit)
    report.missing = sorted(n for n, t in state.items()
                            if n not in fit and n not in head and t.data_ptr() not in loaded_storage
                            and n not in {m["name"] for m in report.mismatched})
    return report
