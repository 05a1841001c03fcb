"""Model and optimizer state in a form that does not depend on the world size.

Both go through `torch.distributed.checkpoint.state_dict`, which names everything by
parameter name (FQN) whatever wraps the model (nothing, DDP or FSDP2), so a checkpoint
written by N ranks loads into M:

- *full* state: whole tensors, gathered to rank 0 and written as safetensors
  (`model.safetensors`, `optimizer.safetensors` + JSON for the scalars);
- *sharded* state (FSDP): each rank writes its own shards with torch.distributed.checkpoint
  (DCP) into `dcp/`; DCP reshards on load, for any world size, one process included.

Tied parameters (GPT's `lm_head.weight` is `wte.weight`) are stored once, under their first
name, and re-tied on load.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from ember.runs import atomic_write_text
from ember.training.distributed import unwrap
from ember.weights import load_tensors, save_state, save_tensors

__all__ = [
    "aliases", "full_model_state", "save_model_weights", "save_full", "load_full", "save_sharded", "load_sharded",
    "load_full_model_state", "SEP",
]

SEP = "::"  # between a parameter name (which has dots) and an optimizer slot ("exp_avg")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _load_options(model: nn.Module) -> StateDictOptions:
    """Whole tensors are re-sharded into an FSDP model; a plain or DDP model takes them as they are."""
    from torch.distributed.tensor import DTensor

    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    return StateDictOptions(full_state_dict=True) if sharded else StateDictOptions()


def aliases(model: nn.Module) -> dict[str, str]:
    """Second names of shared parameters -> the first name (tied embeddings)."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in unwrap(model).named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def _drop_aliases(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    tied = aliases(model)
    return {k: v for k, v in state.items() if k not in tied}


def _add_aliases(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    out = dict(state)
    for alias, name in aliases(model).items():
        if name in out and alias not in out:
            out[alias] = out[name]
    return out


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """Whole weights on rank 0 (collective under FSDP; other ranks get an empty dict)."""
    state = get_model_state_dict(unwrap(model), options=_FULL)
    return _drop_aliases(state, model)


def save_full(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, is_main: bool) -> None:
    """Gather whole model and optimizer state and, on rank 0, write them under `folder`."""
    msd, osd = get_state_dict(unwrap(model), optimizer, options=_FULL)  # collective under FSDP
    if not is_main:
        return
    save_state(_drop_aliases(msd, model), folder / "model.safetensors")
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pname, slots in osd["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"{pname}{SEP}{key}"] = value
            else:
                scalars.setdefault(pname, {})[key] = value
    save_tensors(tensors, folder / "optimizer.safetensors")
    rest = {"param_groups": osd["param_groups"], "scalars": scalars}
    atomic_write_text(folder / "optimizer.json", json.dumps(rest, sort_keys=True))


def save_model_weights(model: nn.Module, path: Path, is_main: bool) -> None:
    """Whole weights of a trained model, whatever wraps it, written by rank 0 to `path`.

    Every rank calls it: under FSDP gathering the shards is collective.
    """
    weights = full_model_state(model)
    if is_main:
        save_state(weights, path)


def load_full(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
    """Load whole state written by `save_full` (by any number of ranks) into `model`."""
    msd = _add_aliases(load_tensors(folder / "model.safetensors"), model)
    if optimizer is None:
        set_model_state_dict(unwrap(model), msd, options=_load_options(model))
        return
    rest = json.loads((folder / "optimizer.json").read_text())
    state: dict[str, dict[str, Any]] = {}
    for name, value in load_tensors(folder / "optimizer.safetensors").items():
        pname, key = name.rsplit(SEP, 1)
        state.setdefault(pname, {})[key] = value
    for pname, slots in rest["scalars"].items():
        state.setdefault(pname, {}).update(slots)
    osd = {"state": _add_aliases(state, model), "param_groups": rest["param_groups"]}
    set_state_dict(unwrap(model), optimizer, model_state_dict=msd, optim_state_dict=osd,
                   options=_load_options(model))


def load_full_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load whole weights (from rank 0's file, present on every rank) into a possibly sharded model."""
    set_model_state_dict(unwrap(model), _add_aliases(state, model), options=_load_options(model))


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes one process when no process group exists: that is intended."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Every rank writes its shards into `folder` (collective)."""
    msd, osd = get_state_dict(unwrap(model), optimizer)
    with _quiet_single_process():
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
    """Read shards written by any number of ranks into this rank's part of the state."""
    if optimizer is None:
        msd = get_model_state_dict(unwrap(model))
        with _quiet_single_process():
            dcp.load({"model": msd}, checkpoint_id=str(folder))
        set_model_state_dict(unwrap(model), msd)
        return
    msd, osd = get_state_dict(unwrap(model), optimizer)  # the layout to fill, on this rank
    box = {"model": msd, "optim": osd}
    with _quiet_single_process():
        dcp.load(box, checkpoint_id=str(folder))
    set_state_dict(unwrap(model), optimizer, model_state_dict=box["model"], optim_state_dict=box["optim"])
