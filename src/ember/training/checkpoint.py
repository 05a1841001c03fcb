"""Checkpoints: complete, verified folders that `checkpoints/latest` names only when done.

    checkpoints/step-00000120/
      model.safetensors      parameters and buffers
      optimizer.safetensors  optimizer tensors (Adam moments, momentum buffers, ...)
      state.json             step, epoch, position, RNG states, optimizer scalars, loop state
      manifest.json          sha256 of each file above (written last)
    checkpoints/latest       the name of the newest complete folder

A folder is assembled under a temporary name and renamed into place, so a kill at any
moment leaves only complete folders. Loading checks every sha256 and falls back, with a
warning, to the newest older checkpoint that verifies.
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
from torch import Tensor, nn

from ember.errors import CheckpointError
from ember.runs import atomic_write_text, fsync_dir
from ember.weights import load_tensors, save_tensors, save_weights, sha256_file

__all__ = ["Checkpoint", "has_checkpoint", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

_FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


@dataclass
class Checkpoint:
    """A verified checkpoint read back from disk."""

    path: Path
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    state: dict[str, Any]


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


def _split_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimizer state dict -> (tensors for safetensors, JSON-able remainder)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in opt_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entry in rest["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": rest["param_groups"]}


def _step_dirs(folder: Path) -> list[Path]:
    dirs = [p for p in folder.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]), reverse=True)


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint `step` under `folder`, point `latest` at it, prune to `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = folder / name
    tmp = folder / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_weights(model, tmp / "model.safetensors")  # refuses non-finite weights
        opt_tensors, opt_rest = _split_optimizer(optimizer.state_dict())
        save_tensors(opt_tensors, tmp / "optimizer.safetensors")
        payload = {**state, "step": step, "optimizer": opt_rest, "rng": rng_state()}
        atomic_write_text(tmp / "state.json", json.dumps(payload, sort_keys=True))
        manifest = {"step": step, "files": {f: sha256_file(tmp / f) for f in _FILES}}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    return final


def has_checkpoint(folder: Path) -> bool:
    """Whether any checkpoint folder (good or damaged) exists under `folder`."""
    return folder.is_dir() and bool(_step_dirs(folder))


def _verify(path: Path) -> str | None:
    """None when every file matches the manifest; otherwise what is wrong."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest.json (incomplete)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "manifest.json is corrupt"
    for fname in _FILES:
        f = path / fname
        if not f.is_file():
            return f"{fname} is missing"
        if sha256_file(f) != files.get(fname):
            return f"{fname} fails its sha256 check (corrupt or tampered)"
    return None


def _read(path: Path) -> Checkpoint:
    model = load_tensors(path / "model.safetensors")
    opt_tensors = load_tensors(path / "optimizer.safetensors")
    state = json.loads((path / "state.json").read_text())
    return Checkpoint(path, model, _join_optimizer(opt_tensors, state.pop("optimizer")), state)


def load_checkpoint(folder: Path) -> Checkpoint:
    """The newest checkpoint under `folder` that verifies; warns about any skipped."""
    candidates = _step_dirs(folder) if folder.is_dir() else []
    latest = folder / "latest"
    if latest.is_file():
        named = folder / latest.read_text().strip()
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
                ckpt = _read(path)
            except (CheckpointError, json.JSONDecodeError, KeyError, ValueError) as exc:
                problem = str(exc)
            else:
                if problems:
                    warnings.warn(
                        f"skipped bad checkpoint(s) {'; '.join(problems)}; using {path.name}",
                        stacklevel=2,
                    )
                return ckpt
        problems.append(f"{path.name}: {problem}")
    raise CheckpointError(f"no usable checkpoint under '{folder}': {'; '.join(problems)}")
