"""Shared by the compression tests: a small trained digits CNN and checks on its children."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ember.cli import main

# Full digits (1,257 training images), 10 epochs of a small CNN: ~93% in ~1.5 s, a parent
# with accuracy worth keeping. One thread: bit-reproducible.
PARENT = ["train.epochs=10", "model.channels=[8,16]", "model.hidden=[32]", "train.threads=1",
          "log.report=false"]
FIGURES = ("params", "size_mb", "latency_ms_b1", "throughput_b64", "accuracy", "loss")


def tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> digest)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def digit_png(folder: Path, index: int = 3) -> Path:
    from sklearn.datasets import load_digits

    img = (load_digits().images[index] / 16 * 255).astype(np.uint8)
    path = folder / f"digit{index}.png"
    Image.fromarray(img).resize((32, 32)).save(path)
    return path


def run_main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`ember ARGS` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def record_of(child: Path) -> dict[str, Any]:
    return json.loads((child / "compression.json").read_text())


def check_record(child: Path, parent: Path, method: str) -> dict[str, Any]:
    """compression.json has every figure for parent and child and names the parent."""
    record = record_of(child)
    assert record["method"] == method
    assert Path(record["parent_run"]) == parent.resolve()
    assert record["steps"][-1]["method"] == method
    for side in ("parent", "child"):
        for key in FIGURES:
            assert isinstance(record[side][key], (int, float)), (side, key, record[side])
        assert record[side]["latency_ms_b1"] > 0 and record[side]["throughput_b64"] > 0
        assert 0 <= record[side]["accuracy"] <= 1
    assert record["parent"]["run"] == parent.name and record["child"]["run"] == child.name
    assert record["child"]["size_mb"] == pytest.approx((child / "model.safetensors").stat().st_size / 1e6, abs=1e-4)
    summary = json.loads((child / "summary.json").read_text())
    assert summary["weights_sha256"] == hashlib.sha256((child / "model.safetensors").read_bytes()).hexdigest()
    assert summary["test"]["accuracy"] == pytest.approx(record["child"]["accuracy"], abs=1e-6)
    return record
