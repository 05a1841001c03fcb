"""Private runs end to end: exact resume (weights and ε), the budget in every output, the audit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import ember
from ember.training.checkpoint import load_checkpoint
from tests.conftest import run_cli

pytest.importorskip("opacus")

# 160 training samples, batches of 32 in 2 micro-batches of 16 (virtual steps): 5 steps an epoch.
TINY_DP = ["data.limit=160", "data.batch_size=16", "train.grad_accum=2", "train.epochs=2", "model.channels=[4,8]",
           "model.hidden=[16]", "train.threads=1", "train.checkpoint_every=3", "train.keep_checkpoints=10",
           "log.report=false", "train.privacy={target_epsilon: 4, max_grad_norm: 1.0}"]


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dp")
    return ember.train("digits-cnn", [*TINY_DP, f"log.runs_dir={root}"], verbose=False).path


def test_budget_in_metrics_summary_config_and_checkpoints(private_run: Path) -> None:
    summary = json.loads((private_run / "summary.json").read_text())
    budget = summary["privacy"]
    assert budget["delta"] == pytest.approx(1 / 160) and budget["steps"] == 10
    assert 3.9 <= budget["epsilon"] <= 4.0  # the target, spent exactly by the last step
    vals = [r for r in map(json.loads, (private_run / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "val"]
    assert [r["step"] for r in vals] == [5, 10]
    assert 0 < vals[0]["epsilon"] < vals[1]["epsilon"] == pytest.approx(budget["epsilon"])
    assert "BatchNorm2d -> GroupNorm" in (private_run / "config.yaml").read_text()
    saved = load_checkpoint(private_run / "checkpoints").state["privacy"]
    assert saved["history"] and saved["noise_multiplier"] == budget["noise_multiplier"]
    assert (private_run / "privacy" / "section.html").is_file()
    # The run loads back (the fixed layers are rebuilt from the config) and scores as summary.json says.
    metrics = ember.evaluate(private_run, split="test")
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_killed_and_resumed_private_run_ends_identical(private_run: Path, tmp_path: Path) -> None:
    """Resumed mid-epoch (step 3 of 5) from a checkpoint: same weights and the same ε."""
    run = tmp_path / "resumed"
    shutil.copytree(private_run, run)
    for f in ("model.safetensors", "summary.json"):
        (run / f).unlink()
    shutil.rmtree(run / "privacy")
    ckpts = run / "checkpoints"
    for d in ckpts.glob("step-*"):
        if d.name != "step-00000003":
            shutil.rmtree(d)
    (ckpts / "latest").write_text("step-00000003\n")
    ember.train(resume=run, verbose=False)
    assert (run / "model.safetensors").read_bytes() == (private_run / "model.safetensors").read_bytes()
    a, b = (json.loads((p / "summary.json").read_text())["privacy"] for p in (private_run, run))
    assert a == b
    eps = [[r["epsilon"] for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "val"] for p in (private_run, run)]
    assert eps[0] == eps[1] and len(eps[0]) == 2


def test_audit_writes_figures_and_a_section(private_run: Path) -> None:
    proc = run_cli("audit", private_run)
    assert proc.returncode == 0, proc.stderr
    assert "AUC" in proc.stdout and "ε 4" in proc.stdout.replace("ε 3.99", "ε 4")
    result = json.loads((private_run / "audit" / "audit.json").read_text())
    loss = result["attacks"]["loss"]
    assert 0 <= loss["auc"] <= 1 and 0 <= loss["tpr_at_1pct_fpr"] <= 1 and 0 <= loss["advantage"] <= 1
    assert result["members"] == result["non_members"] > 0 and result["epsilon"] == pytest.approx(3.99, abs=0.02)
    assert "<img" in (private_run / "audit" / "section.html").read_text()


def test_audit_bad_inputs_exit_2(private_run: Path, tmp_path: Path) -> None:
    proc = run_cli("audit", tmp_path / "nope")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("audit", private_run, "--split", "train")
    assert proc.returncode == 2 and "--split" in proc.stderr
    proc = run_cli("audit", private_run, "--max-samples", "0")
    assert proc.returncode == 2 and "--max-samples" in proc.stderr


def test_shadow_attack_on_a_non_private_run(tmp_path: Path) -> None:
    from ember.privacy.audit import audit, format_audit

    run = ember.train("iris-mlp", ["train.epochs=5", "train.threads=1", f"log.runs_dir={tmp_path}"], verbose=False)
    result = audit(run.path, shadow=True, split="test")
    assert set(result["attacks"]) == {"loss", "shadow"} and result["epsilon"] is None
    for figures in result["attacks"].values():
        assert 0 <= figures["auc"] <= 1
    assert "not private" in format_audit(result)
    assert "Privacy audit" in (run.path / "report.html").read_text()  # the report was re-rendered


def test_lira_finds_what_a_memorising_model_leaks(tmp_path: Path) -> None:
    from ember.privacy.audit import audit

    # 100 training digits, no regularisation to speak of: the MLP memorises its members.
    run = ember.train("digits-mlp", ["data.limit=100", "train.epochs=20", "train.threads=1", "log.report=false",
                                     f"log.runs_dir={tmp_path}"], verbose=False)
    result = audit(run.path, lira=2)
    assert set(result["attacks"]) == {"loss", "lira"} and result["lira"]["shadows"] == 2
    assert result["lira"]["pool"] > 100 and result["lira"]["shadow_train_size"] == result["lira"]["pool"] // 2
    assert result["attacks"]["lira"]["auc"] > 0.65  # far from a coin flip: the members are recognised
    assert "lira" in (run.path / "audit" / "section.html").read_text()


def test_lira_odd_shadow_count_exits_2(private_run: Path) -> None:
    proc = run_cli("audit", private_run, "--lira", "3")  # shadows come in complementary pairs
    assert proc.returncode == 2 and "--lira" in proc.stderr and "Traceback" not in proc.stderr
