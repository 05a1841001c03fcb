"""Checkpoints: verified on load, fallback to the previous good one, pickle never executed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from ember.errors import CheckpointError
from ember.training.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from ember.weights import load_tensors, load_weights


def _model_and_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path: Path) -> None:
    model, opt = _model_and_opt()
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 7, model, opt, {"loop": {"step": 7}}, keep=2)
    expected_next = torch.rand(3)
    torch.manual_seed(999)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.state["step"] == 7 and ckpt.state["loop"] == {"step": 7}
    assert not ckpt.sharded and ckpt.state["world_size"] == 1
    fresh_model, _ = _model_and_opt()
    with torch.no_grad():
        for p in fresh_model.parameters():
            p.add_(1.0)
    fresh = torch.optim.AdamW(fresh_model.parameters(), lr=0.01)
    restore_checkpoint(ckpt, fresh_model, fresh)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[k], v)
    a, b = opt.state_dict(), fresh.state_dict()
    for pid in a["state"]:
        for key, val in a["state"][pid].items():
            assert torch.equal(torch.as_tensor(val), torch.as_tensor(b["state"][pid][key]))
    # restore_checkpoint also put back the RNG stream as it was when saved
    assert torch.equal(torch.rand(3), expected_next)
    assert (tmp_path / "latest").read_text().strip() == "step-00000007"


def test_keeps_last_n(tmp_path: Path) -> None:
    model, opt = _model_and_opt()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000003", "step-00000004"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest", "tamper_state"])
def test_damaged_latest_falls_back_with_warning(tmp_path: Path, damage: str) -> None:
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 1, model, opt, {"loop": {"step": 1}}, keep=3)
    save_checkpoint(tmp_path, 2, model, opt, {"loop": {"step": 2}}, keep=3)
    latest = tmp_path / "step-00000002"
    target = latest / "model.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "flip":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete_manifest":
        (latest / "manifest.json").unlink()
    else:
        state = json.loads((latest / "state.json").read_text())
        state["loop"]["step"] = 1000
        (latest / "state.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="step-00000002"):
        ckpt = load_checkpoint(tmp_path)
    assert ckpt.path.name == "step-00000001"


def test_all_damaged_is_a_clear_error(tmp_path: Path) -> None:
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 1, model, opt, {}, keep=3)
    (tmp_path / "step-00000001" / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*sha256"):
        load_checkpoint(tmp_path)


def test_no_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_checkpoint(tmp_path)


class _Payload:
    """Unpickling this would create a file: proof that pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_pickle_renamed_safetensors_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "model.safetensors"
    evil.write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_tensors(evil)
    with pytest.raises(CheckpointError):
        load_weights(torch.nn.Linear(2, 2), evil)
    # torch.save output (a zip of pickles) is refused the same way.
    zipped = tmp_path / "zip.safetensors"
    torch.save({"weight": torch.zeros(2)}, zipped)
    with pytest.raises(CheckpointError):
        load_tensors(zipped)
    assert not marker.exists()
    # Sanity: the payload really would create the file if unpickled.
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_weights_shape_mismatch(tmp_path: Path) -> None:
    from ember.weights import save_weights

    save_weights(torch.nn.Linear(2, 3), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        load_weights(torch.nn.Linear(2, 4), tmp_path / "w.safetensors")


def test_sharded_checkpoint_round_trip_in_one_process(tmp_path: Path) -> None:
    """DCP shards (FSDP's format) load in a plain single process: the world-size change path."""
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 3, model, opt, {"loop": {"step": 3}}, keep=2, sharded=True)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.sharded and not (ckpt.path / "dcp" / ".metadata").exists()  # no pickled metadata
    manifest = json.loads((ckpt.path / "manifest.json").read_text())["files"]
    assert "dcp/optimizer.json" in manifest and "state.json" in manifest
    assert any(name.endswith(".safetensors") for name in manifest if name.startswith("dcp/"))
    fresh_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    fresh = torch.optim.AdamW(fresh_model.parameters(), lr=0.01)
    restore_checkpoint(ckpt, fresh_model, fresh)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[k], v), k
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_corrupt_shard_falls_back(tmp_path: Path) -> None:
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path, 1, model, opt, {"loop": {"step": 1}}, keep=3, sharded=True)
    save_checkpoint(tmp_path, 2, model, opt, {"loop": {"step": 2}}, keep=3, sharded=True)
    shard = next((tmp_path / "step-00000002" / "dcp").glob("*.safetensors"))
    shard.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="step-00000002"):
        assert load_checkpoint(tmp_path).path.name == "step-00000001"
