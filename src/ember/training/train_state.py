"""Model and optimizer state in a form that does not depend on the world size.

Both go through `torch.distributed.checkpoint.state_dict`, which names everything by
parameter name (FQN) whatever wraps the model (nothing, DDP or FSDP2), so a checkpoint
written by N ranks loads into M:

- *full* state: whole tensors, gathered to rank 0 and written as safetensors
  (`model.safetensors`, `optimizer.safetensors` + JSON for the scalars);
- *sharded* state (FSDP): each rank writes its own shards with torch.distributed.checkpoint
  (DCP) into `dcp/`, through DCP's safetensors storage (offsets in each file's JSON header,
  param groups in `optimizer.json`): DCP's default storage pickles its `.metadata`, which
  loading would unpickle, so Ember never uses it. DCP reshards on load, for any world size.

Tied parameters (GPT's `lm_head.weight` is `wte.weight`) are stored once, under their first
name, and re-tied on load.

torch.distributed.checkpoint is imported where it is used: importing it takes most of a
second, which every `ember evaluate`, `predict` or error exit would pay otherwise.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ember.errors import CheckpointError
from ember.runs import atomic_write_text
from ember.safe_paths import inside, read_text
from ember.training.distributed import unwrap
from ember.weights import load_tensors, save_state, save_tensors

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

__all__ = [
    "aliases", "full_model_state", "save_model_weights", "save_full", "load_full", "save_sharded", "load_sharded",
    "load_full_model_state", "SEP",
]

SEP = "::"  # between a parameter name (which has dots) and an optimizer slot ("exp_avg")
_MODEL, _OPTIM = "model/", "optim/"  # key prefixes in the sharded safetensors files
_REST = "optimizer.json"  # the optimizer's non-tensor state beside the shards
_SUFFIX = ".safetensors"


def _full_options() -> StateDictOptions:
    """Whole (gathered) tensors, offloaded to the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _load_options(model: nn.Module) -> StateDictOptions:
    """Whole tensors are re-sharded into an FSDP model; a plain or DDP model takes them as they are."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions
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
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(unwrap(model), options=_full_options())
    return _drop_aliases(state, model)


def save_full(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, is_main: bool) -> None:
    """Gather whole model and optimizer state and, on rank 0, write them under `folder`."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(unwrap(model), optimizer, options=_full_options())  # collective under FSDP
    if not is_main:
        return
    save_state(_drop_aliases(msd, model), folder / "model.safetensors")
    tensors, rest = _split_optimizer(osd)
    save_tensors(tensors, folder / "optimizer.safetensors")
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
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    msd = _add_aliases(load_tensors(folder / "model.safetensors"), model)
    if optimizer is None:
        set_model_state_dict(unwrap(model), msd, options=_load_options(model))
        return
    rest = json.loads(read_text(inside(folder, "optimizer.json")))
    osd = _join_optimizer(load_tensors(folder / "optimizer.safetensors"), rest)
    osd["state"] = _add_aliases(osd["state"], model)
    set_state_dict(unwrap(model), optimizer, model_state_dict=msd, optim_state_dict=osd,
                   options=_load_options(model))


def load_full_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load whole weights (from rank 0's file, present on every rank) into a possibly sharded model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(unwrap(model), _add_aliases(state, model), options=_load_options(model))


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns that it assumes one process when no process group exists: that is intended."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _split_optimizer(osd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state -> its tensors (flat, by `fqn::slot`) and everything else (JSON-able)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pname, slots in osd["state"].items():
        for key, value in slots.items():
            if isinstance(value, Tensor):
                tensors[f"{pname}{SEP}{key}"] = value
            else:
                scalars.setdefault(pname, {})[key] = value
    return tensors, {"param_groups": osd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        pname, key = name.rsplit(SEP, 1)
        state.setdefault(pname, {})[key] = value
    for pname, slots in rest["scalars"].items():
        state.setdefault(pname, {}).update(slots)
    return {"state": state, "param_groups": rest["param_groups"]}


def _flat(msd: dict[str, Any], tensors: dict[str, Tensor] | None) -> dict[str, Tensor]:
    out = {f"{_MODEL}{k}": v for k, v in msd.items()}
    out.update({f"{_OPTIM}{k}": v for k, v in (tensors or {}).items()})
    return out


def check_sharded_folder(folder: Path) -> None:
    """Refuse a `dcp/` folder that is not Ember's safetensors layout (never unpickle one).

    Raises:
        CheckpointError: DCP's pickled `.metadata` is there, or no shard file is.
    """
    if (folder / ".metadata").exists() or any(folder.glob("*.distcp")):
        raise CheckpointError(f"'{folder}' holds torch.distributed.checkpoint pickled metadata (an older "
                              "Ember, or planted); Ember never unpickles: not loaded")
    if not any(folder.glob(f"*{_SUFFIX}")) or not (folder / _REST).is_file():
        raise CheckpointError(f"'{folder}' has no safetensors shards or no {_REST}; not a sharded checkpoint")


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, is_main: bool) -> None:
    """Every rank writes its shards into `folder` as safetensors (collective); no pickle.

    DCP's safetensors writer stores each shard's offsets in the file's JSON header, so the
    reader rebuilds the layout from the headers alone; the optimizer's non-tensor state
    (param groups) goes to `optimizer.json`, written by rank 0.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(unwrap(model), optimizer)
    # safetensors stores a tied tensor once: under its first name, re-tied on load.
    tensors, rest = _split_optimizer({**osd, "state": _drop_aliases(osd["state"], model)})
    msd = _drop_aliases(msd, model)
    folder.mkdir(parents=True, exist_ok=True)
    writer = HuggingFaceStorageWriter(str(folder), save_distributed=True)
    with _quiet_single_process():
        dcp.save(_flat(msd, tensors), storage_writer=writer)
    if is_main:
        atomic_write_text(folder / _REST, json.dumps(rest, sort_keys=True))


def _read(box: dict[str, Tensor], folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader

    check_sharded_folder(folder)
    try:
        with _quiet_single_process():
            # This reader parses safetensors headers (JSON) only; the pickled `.metadata` of
            # DCP's default storage was refused above, so nothing here unpickles.
            dcp.load(box, storage_reader=HuggingFaceStorageReader(str(folder)))
    except (CheckpointException, RuntimeError, ValueError, KeyError, AssertionError, OSError) as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        first = (lines[-1] if lines else type(exc).__name__)[:300]  # DCP's last line names the cause
        raise CheckpointError(f"sharded checkpoint '{folder}' does not fit this model ({first})") from None


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, folder: Path) -> None:
    """Read shards written by any number of ranks into this rank's part of the state.

    Raises:
        CheckpointError: the folder is not Ember's safetensors layout, or does not fit the model.
    """
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    if optimizer is None:
        msd = _drop_aliases(get_model_state_dict(unwrap(model)), model)
        box = _flat(msd, None)
        _read(box, folder)
        msd = {k[len(_MODEL):]: v for k, v in box.items()}
        set_model_state_dict(unwrap(model), _add_aliases(msd, model))
        return
    msd, osd = get_state_dict(unwrap(model), optimizer)  # the layout to fill, on this rank
    tensors, _ = _split_optimizer({**osd, "state": _drop_aliases(osd["state"], model)})
    box = _flat(_drop_aliases(msd, model), tensors)
    _read(box, folder)
    try:
        rest = json.loads(read_text(inside(folder, _REST)))
        msd = {k[len(_MODEL):]: v for k, v in box.items() if k.startswith(_MODEL)}
        otensors = {k[len(_OPTIM):]: v for k, v in box.items() if k.startswith(_OPTIM)}
        osd = _join_optimizer(otensors, rest)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"'{folder / _REST}' is not valid optimizer state ({exc})") from None
    osd["state"] = _add_aliases(osd["state"], model)
    set_state_dict(unwrap(model), optimizer, model_state_dict=_add_aliases(msd, model), optim_state_dict=osd)
