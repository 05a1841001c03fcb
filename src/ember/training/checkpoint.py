"""Checkpoints: complete, verified folders that `checkpoints/latest` names only when done.

    checkpoints/step-00000120/
      model.safetensors      whole parameters and buffers           (full checkpoints:
      optimizer.safetensors  optimizer tensors (Adam moments, ...)   single process, DDP)
      optimizer.json         optimizer scalars and param groups, by parameter name
      dcp/                   DCP shards as safetensors + JSON       (sharded: FSDP; no pickle)
      state.json             step, epoch, position, every rank's RNG state, loop state
      manifest.json          sha256 of every file above (written last)
    checkpoints/latest       the name of the newest complete folder

A folder is assembled under a temporary name and renamed into place by rank 0 once every
rank has written its part, so a kill at any moment leaves only complete folders. Loading
checks every sha256 and falls back, with a warning, to the newest older checkpoint that
verifies. Both kinds load into any world size and strategy (see `train_state`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ember.errors import CheckpointError, EmberWarning
from ember.runs import atomic_write_text, fsync_dir
from ember.safe_paths import inside, read_text
from ember.training import train_state
from ember.training.distributed import DistEnv, barrier, gather_objects
from ember.weights import load_tensors, sha256_file

__all__ = ["Checkpoint", "has_checkpoint", "save_checkpoint", "load_checkpoint", "restore_checkpoint",
           "rng_state", "set_rng_state"]

FORMAT = 2  # 1: optimizer state keyed by position (one process only); 2: by parameter name


@dataclass
class Checkpoint:
    """A verified checkpoint folder and its `state.json`; `restore_checkpoint` loads the tensors."""

    path: Path
    state: dict[str, Any]

    @property
    def sharded(self) -> bool:
        return (self.path / "dcp").is_dir()


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from (dropout uses torch's global generators)."""
    out: dict[str, Any] = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    raw = base64.b64decode(state["torch"])
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(cuda)


def _join_optimizer_v1(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Format-1 optimizer state (keyed by parameter position), kept so older runs still resume."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": rest["param_groups"]}


def _step_dirs(folder: Path) -> list[Path]:
    dirs = [p for p in folder.glob("step-*") if p.is_dir() and not p.is_symlink() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]), reverse=True)


def _files(path: Path) -> list[str]:
    return sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file() and f.name != "manifest.json")


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
    env: DistEnv | None = None,
    sharded: bool = False,
) -> Path:
    """Write checkpoint `step` under `folder`, point `latest` at it, prune to `keep`.

    Every rank calls this (it is collective when `env` is distributed); `sharded` writes
    DCP shards from each rank (FSDP), otherwise rank 0 writes whole tensors.
    """
    env = env or DistEnv()
    name = f"step-{step:08d}"
    final = folder / name
    tmp = folder / f".tmp-{name}"  # one name for every rank: they all write into it
    if env.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(env)
    rngs = gather_objects(rng_state(), env)
    try:
        if sharded:
            train_state.save_sharded(model, optimizer, tmp / "dcp", env.is_main)
        else:
            train_state.save_full(model, optimizer, tmp, env.is_main)
        if env.is_main:
            payload = {**state, "step": step, "format": FORMAT, "world_size": env.world_size, "rng": rngs,
                       "sharded": sharded}
            atomic_write_text(tmp / "state.json", json.dumps(payload, sort_keys=True))
            manifest = {"step": step, "files": {f: sha256_file(tmp / f) for f in _files(tmp)}}
            atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        if env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if env.is_main:
        if final.exists():  # left by an earlier attempt at this step before a crash
            old = folder / f".old-{name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(folder)
        atomic_write_text(folder / "latest", name + "\n")
        # Older checkpoints go only now, once the new one is complete and `latest` names it.
        for old in _step_dirs(folder)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    barrier(env)
    return final


def has_checkpoint(folder: Path) -> bool:
    """Whether any checkpoint folder (good or damaged) exists under `folder`."""
    return folder.is_dir() and bool(_step_dirs(folder))


def _verify(path: Path) -> str | None:
    """None when every file matches the manifest; otherwise what is wrong."""
    manifest_path = inside(path, "manifest.json")  # links refused: every file loaded is listed here
    if not manifest_path.is_file():
        return "no manifest.json (incomplete)"
    try:
        manifest = json.loads(read_text(manifest_path))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "manifest.json is corrupt"
    if "state.json" not in files:
        return "manifest.json lists no state.json"
    for fname, digest in files.items():
        f = inside(path, str(fname))
        if not f.is_file():
            return f"{fname} is missing"
        if sha256_file(f) != digest:
            return f"{fname} fails its sha256 check (corrupt or tampered)"
    return None


def load_checkpoint(folder: Path) -> Checkpoint:
    """The newest checkpoint under `folder` that verifies; warns about any skipped."""
    candidates = _step_dirs(folder) if folder.is_dir() else []
    latest = inside(folder, "latest")
    if latest.is_file():
        named = folder / read_text(latest).strip()
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    if not candidates:
        raise CheckpointError(f"no checkpoint under '{folder}'; nothing to resume from")
    problems = []
    for path in candidates:
        problem = _verify(path)
        if problem is None:
            try:
                state = json.loads(read_text(inside(path, "state.json")))
            except (json.JSONDecodeError, ValueError) as exc:
                problem = str(exc)
            else:
                if problems:
                    warnings.warn(f"skipped bad checkpoint(s) {'; '.join(problems)}; using {path.name}",
                                  EmberWarning, stacklevel=2)
                return Checkpoint(path, state)
        problems.append(f"{path.name}: {problem}")
    raise CheckpointError(f"no usable checkpoint under '{folder}': {'; '.join(problems)}")


def _restore_tensors(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                     env: DistEnv) -> None:
    if ckpt.state.get("format", 1) == 1:
        if env.distributed:
            raise CheckpointError(f"'{ckpt.path}' predates multi-process checkpoints; resume it with one process")
        model.load_state_dict(load_tensors(ckpt.path / "model.safetensors"), strict=False)
        if optimizer is not None:
            tensors = load_tensors(ckpt.path / "optimizer.safetensors")
            optimizer.load_state_dict(_join_optimizer_v1(tensors, ckpt.state["optimizer"]))
    elif ckpt.sharded:
        train_state.load_sharded(model, optimizer, ckpt.path / "dcp")
    else:
        train_state.load_full(model, optimizer, ckpt.path)


def restore_checkpoint(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                       env: DistEnv | None = None, sharded: bool | None = None) -> None:
    """Load the checkpoint's model (and optimizer) state, and this rank's RNG state.

    Works whatever world size wrote it: whole tensors are re-sharded, DCP shards re-read.
    A rank with no saved RNG stream of its own (the job grew) starts one from the seed.
    `sharded` says whether this run writes sharded checkpoints (FSDP); a `dcp/` folder
    in a run that does not, or that state.json does not declare, is refused unread.

    Raises:
        CheckpointError: the checkpoint's layout does not match the run, or it does not load.
    """
    env = env or DistEnv()
    if ckpt.sharded and (sharded is False or not ckpt.state.get("sharded", False)):
        raise CheckpointError(f"'{ckpt.path / 'dcp'}' is a sharded checkpoint in a run that was not sharded "
                              "(not written by this run's strategy); refusing to read it")
    try:
        _restore_tensors(ckpt, model, optimizer, env)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        why = (lines[0] if lines else type(exc).__name__)[:200]
        raise CheckpointError(f"'{ckpt.path}' does not fit this run's model/optimizer ({why}); was config.yaml "
                              "edited since it was saved? Resume with the config it was trained with") from None
    rngs = ckpt.state.get("rng")
    if isinstance(rngs, dict):  # format 1: one process
        rngs = [rngs]
    if rngs and env.rank < len(rngs):
        set_rng_state(rngs[env.rank])
