"""No file in a run is ever unpickled: a planted DCP `.metadata` pickle never runs.

The payload is a real pickle whose unpickling creates a marker file; the attacker also
rewrites `state.json` and re-hashes `manifest.json`, since whoever can plant a file can.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest

import ember
from ember.errors import CheckpointError
from ember.weights import load_tensors
from tests.conftest import run_cli


class _Payload:
    """Unpickling this calls `open(marker, "w")`: code execution, observable as a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _plant(ckpt: Path, marker: Path, declare_sharded: bool = True) -> None:
    """Put a pickled `.metadata` in `ckpt/dcp`, declare it sharded and re-hash the manifest."""
    dcp = ckpt / "dcp"
    dcp.mkdir(exist_ok=True)
    (dcp / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    (dcp / "__0_0.distcp").write_bytes(b"\0" * 16)
    state = json.loads((ckpt / "state.json").read_text())
    if declare_sharded:
        state["sharded"] = True
        (ckpt / "state.json").write_text(json.dumps(state))
    files = {str(f.relative_to(ckpt)): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in ckpt.rglob("*") if f.is_file() and f.name != "manifest.json"}
    (ckpt / "manifest.json").write_text(json.dumps({"step": state["step"], "files": files}))


def _cut_to_first_checkpoint(run: Path) -> Path:
    ckpts = sorted(p for p in (run / "checkpoints").glob("step-*"))
    for later in ckpts[1:]:
        for f in sorted(later.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        later.rmdir()
    (run / "checkpoints" / "latest").write_text(ckpts[0].name + "\n")
    (run / "model.safetensors").unlink()
    return ckpts[0]


def test_payload_is_a_real_pickle_exploit(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(marker)))  # what torch's DCP reader would do  # noqa: S301
    assert marker.exists()


@pytest.mark.parametrize("declare_sharded", [True, False])
def test_planted_dcp_in_unsharded_run_is_refused_unread(xor_run: Path, copy_run, tmp_path: Path,
                                                        declare_sharded: bool) -> None:
    run = copy_run(xor_run)
    marker = tmp_path / "pwned"
    _plant(_cut_to_first_checkpoint(run), marker, declare_sharded)
    proc = run_cli("train", "--resume", run, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "not sharded" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sharded (FSDP) run of 2 processes: its checkpoints are `dcp/` folders."""
    run = tmp_path_factory.mktemp("fsdp") / "run"
    proc = run_cli("train", "xor-mlp", "train.epochs=4", "train.checkpoint_every=2", "train.keep_checkpoints=3",
                   "log.report=false", "train.threads=1", "train.strategy=fsdp", "--nproc", "2",
                   "--run-dir", run, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_sharded_checkpoints_hold_no_pickle(fsdp_run: Path) -> None:
    dcp = fsdp_run / "checkpoints" / "step-00000004" / "dcp"
    names = sorted(p.name for p in dcp.iterdir())
    assert names and all(n.endswith((".safetensors", ".json")) for n in names), names


def test_sharded_checkpoint_resumes_in_one_process(fsdp_run: Path, copy_run) -> None:
    run = copy_run(fsdp_run)
    reference = load_tensors(fsdp_run / "model.safetensors")
    _cut_to_first_checkpoint(run)
    ember.train(resume=run, verbose=False)
    resumed = load_tensors(run / "model.safetensors")
    assert max(float((reference[k] - resumed[k]).abs().max()) for k in reference) < 1e-6


def test_pickle_planted_in_sharded_run_never_runs(fsdp_run: Path, copy_run, tmp_path: Path) -> None:
    run = copy_run(fsdp_run)
    marker = tmp_path / "pwned"
    _plant(_cut_to_first_checkpoint(run), marker)
    proc = run_cli("train", "--resume", run, "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "never unpickles" in proc.stderr
    assert not marker.exists()


def test_pickle_replacing_every_shard_never_runs(fsdp_run: Path, copy_run, tmp_path: Path) -> None:
    """Even with Ember's own check bypassed (no `.metadata` name), shards are read as safetensors only."""
    run = copy_run(fsdp_run)
    marker = tmp_path / "pwned"
    ckpt = _cut_to_first_checkpoint(run)
    for shard in (ckpt / "dcp").glob("*.safetensors"):
        shard.write_bytes(pickle.dumps(_Payload(marker)))
    _plant(ckpt, marker)
    (ckpt / "dcp" / ".metadata").unlink()
    (ckpt / "dcp" / "__0_0.distcp").unlink()
    _plant_hash_only(ckpt)
    with pytest.raises(CheckpointError):
        ember.train(resume=run, verbose=False)
    assert not marker.exists()
    assert os.listdir(tmp_path).count("pwned") == 0


def _plant_hash_only(ckpt: Path) -> None:
    files = {str(f.relative_to(ckpt)): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in ckpt.rglob("*") if f.is_file() and f.name != "manifest.json"}
    step = json.loads((ckpt / "state.json").read_text())["step"]
    (ckpt / "manifest.json").write_text(json.dumps({"step": step, "files": files}))
