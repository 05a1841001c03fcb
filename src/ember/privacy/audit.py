"""`ember audit RUN`: how much a trained model leaks about which samples it was trained on.

Membership inference: an attacker holding a sample and the model guesses whether the
sample was in the training set. The **loss-threshold attack** (Yeom et al. 2018) guesses
"member" when the model's loss on the sample is low; its ROC over all thresholds compares
the run's training samples (members) with held-out samples of the same distribution
(non-members, the test split by default). An AUC of 0.5 means the attacker learns nothing;
differential privacy bounds how far above 0.5 any attack can get.

The **shadow-model attack** (Shokri et al. 2017, `--shadow`) trains a copy of the run's
recipe on half of the validation split, learns from it how members' output vectors differ
from non-members' (a logistic regression on sorted probabilities and the loss), and applies
that to the run's model. It costs one more training run.

The **likelihood-ratio attack** (LiRA, Carlini et al. 2022, `--lira N`, see `privacy/lira.py`)
trains N shadow copies of the recipe on random halves of the members and non-members, and
scores each sample by how much more likely the target's confidence on it is under its IN
shadows than under its OUT shadows: the per-sample calibration the threshold attacks lack.

Writes `audit/audit.json` (AUC, TPR at 1% FPR, advantage per attack) and `audit/section.html`
(the ROC curves), and re-renders the run's report.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.data.bundle import ArrayDataset, DataBundle
from ember.errors import ConfigError, DataError
from ember.privacy.lira import lira_scores, train_shadow
from ember.runs import atomic_write_text
from ember.tasks import Task

__all__ = ["audit", "per_sample_losses", "attack_figures"]

MAX_PER_SIDE = 2000  # members and non-members scored (each); beyond this the AUC barely moves


def per_sample_losses(model: nn.Module, dataset: ArrayDataset, task: Task, batch_size: int = 256,
                      device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample's mean loss, its membership score (higher: more member-like) and, for
    classification, its sorted top-3 probabilities (the shadow attack's features).

    For classification the score is the logit-scaled confidence log(p_y / (1 - p_y)), computed
    from the logits in float64: it ranks the samples exactly as the loss does, but the loss of a
    confidently right prediction rounds to 0 in float32, and a memorising model's members and the
    best-fitted non-members would tie there, pulling the attack's AUC towards 0.5.
    """
    device = device or next(model.parameters()).device
    model.eval()
    losses, scores, feats = [], [], []
    with torch.no_grad():
        for idx in torch.arange(len(dataset)).split(batch_size):
            x, y = dataset.batch(idx)
            out = model(x.to(device))
            y = y.to(device)
            batch_losses = [float(task.loss_sum(out[i : i + 1], y[i : i + 1])) / max(task.count(y[i : i + 1]), 1)
                            for i in range(len(idx))]
            losses.extend(batch_losses)
            if task.name == "classification":
                scores.append(_logit_confidence(out, y))
                probs = torch.softmax(out.float(), dim=-1).sort(dim=-1, descending=True).values
                feats.append(probs[:, :3].cpu().numpy())
            else:
                scores.append(-np.asarray(batch_losses))
    loss_arr = np.asarray(losses, dtype=np.float64)
    score_arr = np.concatenate(scores) if scores else np.zeros(0)
    feat = np.concatenate(feats) if feats else np.zeros((len(loss_arr), 0))
    return loss_arr, score_arr, feat


def _logit_confidence(logits: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """log p_y - log(1 - p_y) = z_y - logsumexp(z_j, j != y), per row, in float64."""
    z = logits.double()
    true = z.gather(1, target[:, None]).squeeze(1)
    others = z.scatter(1, target[:, None], float("-inf")).logsumexp(dim=1)
    return (true - others).cpu().numpy()


def attack_figures(labels: np.ndarray, scores: np.ndarray) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """AUC, TPR at 1% FPR and membership advantage (max TPR - FPR) of `scores` (higher: member)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    low = tpr[fpr <= 0.01]
    figures = {"auc": float(roc_auc_score(labels, scores)), "tpr_at_1pct_fpr": float(low.max()) if len(low) else 0.0,
               "advantage": float(np.max(tpr - fpr))}
    return figures, (fpr, tpr)


def _balanced(n_members: int, n_non: int, seed: int, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal numbers of members and non-members (a random subset of the larger side)."""
    k = min(n_members, n_non, cap)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_members, generator=gen)[:k].sort().values, torch.randperm(n_non, generator=gen)[:k].sort().values


def _features(score: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return np.column_stack([score, probs])


def _shadow_attack(cfg: Any, bundle: DataBundle, task: Task, target_feats: np.ndarray, labels: np.ndarray,
                   seed: int, runs_dir: Path) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Train one shadow model on half the val split; learn member vs non-member from it."""
    from sklearn.linear_model import LogisticRegression

    if task.name != "classification":
        raise ConfigError(f"--shadow: the shadow-model attack reads class probabilities; this run's task is "
                          f"{task.name}; use the loss attack alone")
    val = bundle.val
    if len(val) < 20:
        raise DataError(f"--shadow: the val split has {len(val)} samples; the shadow model needs at least 20")
    perm = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed + 1))
    half = len(val) // 2
    s_in, s_out = val.subset(perm[:half]), val.subset(perm[half : 2 * half])
    model = train_shadow(cfg, DataBundle(train=s_in, val=s_out, test=s_out, info=bundle.info), runs_dir)
    _, si, pi = per_sample_losses(model, s_in, task)
    _, so, po = per_sample_losses(model, s_out, task)
    x = np.concatenate([_features(si, pi), _features(so, po)])
    y = np.concatenate([np.ones(len(si)), np.zeros(len(so))])
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    return attack_figures(labels, clf.predict_proba(target_feats)[:, 1])


def audit(run_dir: str | Path, split: str = "test", seed: int = 0, max_per_side: int = MAX_PER_SIDE,
          shadow: bool = False, bundle: DataBundle | None = None, model: nn.Module | None = None,
          lira: int = 0) -> dict[str, Any]:
    """Run the membership-inference attacks on a finished run; write audit.json and its section.

    Args:
        run_dir: the run to audit.
        split: the held-out split whose samples are the non-members (`test` or `val`).
        seed: which members are scored when there are more of them than non-members.
        max_per_side: at most this many members and as many non-members.
        shadow: also run the shadow-model attack (trains one more model).
        bundle: the run's data, for runs trained on data passed as objects.
        model: the module to load the weights into (runs trained on a model object).
        lira: also run the likelihood-ratio attack with this many shadow models (even; 0: not).

    Returns:
        The audit as written to `audit/audit.json`.

    Raises:
        DataError: the held-out split is empty, or the data cannot be rebuilt.
    """
    from ember import data as data_mod
    from ember.api import load_run
    from ember.privacy.report import audit_section, read_budget
    from ember.report.build import render_run

    if split not in ("test", "val"):
        raise ConfigError(f"--split: got '{split}'; valid: test, val (the non-members must be held out)")
    loaded = load_run(run_dir, model=model)
    cfg, run, task = loaded.config, loaded.run, loaded.task
    if bundle is None:
        if cfg.data.name == "object":
            raise DataError(f"'{run.path}' was trained on data passed as objects; pass it again: "
                            "ember.privacy.audit.audit(run, bundle=...)")
        bundle = data_mod.build(cfg.data, cfg.train.seed)
    held = bundle.split(split)
    if len(held) == 0 or len(bundle.train) == 0:
        raise DataError(f"the run's {split} split is empty: no held-out samples to compare the members with; "
                        "audit with --split val or train with a test_fraction")
    mi, ni = _balanced(len(bundle.train), len(held), seed, max_per_side)
    members, non_members = bundle.train.subset(mi), held.subset(ni)
    lm, sm, pm = per_sample_losses(loaded.model, members, task)
    ln, sn, pn = per_sample_losses(loaded.model, non_members, task)
    labels = np.concatenate([np.ones(len(lm)), np.zeros(len(ln))])
    figures, curve = attack_figures(labels, np.concatenate([sm, sn]))
    attacks = {"loss": figures}
    curves = {"loss": curve}
    if shadow:
        feats = np.concatenate([_features(sm, pm), _features(sn, pn)])
        attacks["shadow"], curves["shadow"] = _shadow_attack(cfg, bundle, task, feats, labels, seed,
                                                             run.tool_dir("audit") / "shadow-runs")
    lira_info = None
    if lira:
        audited = torch.cat([mi, len(bundle.train) + ni])
        scores, lira_info = lira_scores(cfg, bundle, held, task, np.concatenate([sm, sn]), audited, lira, seed,
                                        lambda m, ds: per_sample_losses(m, ds, task)[1])
        attacks["lira"], curves["lira"] = attack_figures(labels, scores)
    budget = read_budget(run)
    result: dict[str, Any] = {
        "run": run.path.name, "members": len(lm), "non_members": len(ln), "non_member_split": split, "seed": seed,
        "mean_loss_members": float(lm.mean()), "mean_loss_non_members": float(ln.mean()),
        "epsilon": None if budget is None else budget["epsilon"], "delta": None if budget is None else budget["delta"],
        "attacks": attacks,
    }
    if lira_info is not None:
        result["lira"] = lira_info
    folder = run.tool_dir("audit")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "audit.json", json.dumps(result, indent=2))
    atomic_write_text(folder / "section.html", audit_section(run, result, curves))
    if cfg.log.report and cfg.data.name != "object":  # the report rebuilds the data from the config
        render_run(run.path)
    return result


def format_audit(result: dict[str, Any]) -> str:
    """One line per attack, for the CLI."""
    eps = result["epsilon"]
    head = (f"{result['run']}: {result['members']} members vs {result['non_members']} non-members "
            f"({result['non_member_split']}); " + ("not private" if eps is None else
                                                   f"ε {float(eps):.3g}" if not math.isinf(float(eps)) else "ε ∞"))
    lines = [head] + [f"  {name:7s} AUC {a['auc']:.4f}  TPR@1%FPR {a['tpr_at_1pct_fpr']:.4f}  advantage "
                      f"{a['advantage']:.4f}" for name, a in result["attacks"].items()]
    return "\n".join(lines)
