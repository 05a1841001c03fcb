"""The likelihood-ratio attack (LiRA, Carlini et al. 2022, "Membership Inference Attacks From
First Principles"), online variant with a shared variance.

A global threshold on the loss (the loss attack) cannot see that a model memorised one hard,
atypical sample: such a sample has a high loss under any model that did not train on it, and a
merely average loss under one that did. LiRA calibrates per sample. It trains shadow models, the
run's own recipe, on random halves of the attacker's pool (the run's training split plus the
held-out split), so that every audited sample is IN for half of them and OUT for the other half.
For each sample it compares the target model's logit-scaled confidence with two Gaussians (the
confidence of the IN shadows and of the OUT shadows), and the log-likelihood ratio is its score.

Shadows come in complementary pairs (a half and the rest), so each sample has exactly
`shadows / 2` IN and OUT observations; with a few shadows the per-sample variance is noise, so
one variance per side, pooled over all samples, is used (the paper's advice below 64 shadows).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember.data.bundle import ArrayDataset, DataBundle
from ember.errors import ConfigError, DataError
from ember.tasks import Task

__all__ = ["lira_scores", "train_shadow"]


def train_shadow(cfg: Any, data: DataBundle, runs_dir: Path) -> nn.Module:
    """Train the run's recipe (same model, optimizer, schedule, epochs, privacy) on `data`.

    Returns:
        The trained model, in eval mode.
    """
    from ember.api import train
    from ember.config import from_dict
    from ember.loading import load_run

    raw = cfg.model_dump(mode="json")
    raw["train"].update(max_steps=None, checkpoint_every=0, keep_checkpoints=1, early_stopping=None)
    raw["log"].update(report=False, runs_dir=str(runs_dir), tensorboard=False, mlflow=None, callbacks=[])
    if raw["train"].get("privacy"):
        raw["train"]["privacy"]["fixed"] = []  # the shadow fixes its own fresh model's layers
    shadow_run = train(from_dict(raw), data=data, verbose=False)
    model = load_run(shadow_run.path).model
    model.eval()
    return model


def _pool(bundle: DataBundle, held: ArrayDataset) -> ArrayDataset:
    """The attacker's pool: the training split followed by the held-out split."""
    train = bundle.train
    if not isinstance(train, ArrayDataset) or not isinstance(held, ArrayDataset):
        raise DataError("--lira: the shadow models are trained on the run's data held in memory; this run's "
                        "data is read lazily from disk; use the loss attack (and --shadow) alone")
    return ArrayDataset(torch.cat([train.x, held.x]), torch.cat([train.y, held.y]), train.augment)


def lira_scores(cfg: Any, bundle: DataBundle, held: ArrayDataset, task: Task, target_scores: np.ndarray,
                audited: torch.Tensor, shadows: int, seed: int,
                score_fn: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-sample LiRA scores (higher: more likely a member) of the audited samples.

    Args:
        cfg: the run's config (the shadows' recipe).
        bundle: the run's data; its train split holds the members.
        held: the held-out split whose samples are the non-members.
        task: the run's task (classification: LiRA reads class logits).
        target_scores: the target model's confidence on the audited samples.
        audited: the audited samples' positions in the pool (train first, then held-out).
        shadows: how many shadow models; an even number >= 2.
        seed: draws the halves.
        score_fn: (model, dataset) -> per-sample confidence, as for the target.

    Returns:
        The scores, and what the attack used (shadows, pool and shadow training-set sizes).

    Raises:
        ConfigError: an odd or too small number of shadows, or a task without classes.
    """
    if task.name != "classification":
        raise ConfigError(f"--lira: the attack reads class logits; this run's task is {task.name}; use the "
                          "loss attack alone")
    if shadows < 2 or shadows % 2:
        raise ConfigError(f"--lira: got {shadows} shadow models; give an even number >= 2 (they come in "
                          "complementary pairs); 8-16 is typical")
    pool = _pool(bundle, held)
    n = len(pool)
    audit_set = ArrayDataset(pool.x[audited], pool.y[audited])  # un-augmented, as the target was scored
    conf = np.zeros((shadows, len(audited)))
    inside = np.zeros((shadows, len(audited)), dtype=bool)
    gen = torch.Generator().manual_seed(seed + 7919)
    with tempfile.TemporaryDirectory(prefix="ember-lira-") as tmp:
        for pair in range(shadows // 2):
            perm = torch.randperm(n, generator=gen)
            halves = (perm[: n // 2], perm[n // 2 :])
            for side in (0, 1):
                k = 2 * pair + side
                members = halves[side].sort().values
                watch = pool.subset(halves[1 - side][:256].sort().values)  # a small val split keeps it cheap
                data = DataBundle(train=pool.subset(members), val=watch, test=watch, info=bundle.info)
                model = train_shadow(cfg, data, Path(tmp) / f"shadow-{k}")
                conf[k] = score_fn(model, audit_set)
                inside[k] = np.isin(audited.numpy(), members.numpy())
    mu_in = np.array([conf[inside[:, i], i].mean() for i in range(len(audited))])
    mu_out = np.array([conf[~inside[:, i], i].mean() for i in range(len(audited))])
    sd_in = max(float(np.std(conf[inside] - np.broadcast_to(mu_in, conf.shape)[inside])), 1e-6)
    sd_out = max(float(np.std(conf[~inside] - np.broadcast_to(mu_out, conf.shape)[~inside])), 1e-6)
    scores = _log_normal(target_scores, mu_in, sd_in) - _log_normal(target_scores, mu_out, sd_out)
    return scores, {"shadows": shadows, "pool": n, "shadow_train_size": n // 2, "sd_in": sd_in, "sd_out": sd_out}


def _log_normal(x: np.ndarray, mu: np.ndarray, sd: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)
