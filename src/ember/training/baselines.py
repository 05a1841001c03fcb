"""Baselines every run is compared with, on the same splits and with the same metrics.

- classification: the majority class; logistic regression on TF-IDF character n-grams of
  the raw texts (text sources) or on the inputs themselves (tables, small images);
- regression: the training targets' mean; forecasting also persistence (repeat the window's
  last value) and seasonal-naive (the value one season back, when the series has a season);
- language models: the unigram model of the training tokens (add-one smoothed).

Each baseline is turned into the outputs a model would give (logits, predictions, token
log-probabilities) and scored by `evaluate_split`, so its figures are computed exactly
like the model's. Fitting is capped (`_FIT_CAP` training samples) to stay cheap, and the
figures of the last few datasets are kept in memory by a fingerprint of exactly what the
baselines read (targets, and the raw texts or the inputs): a compress chain, a tuning study or
a seed sweep in one process fits TF-IDF + logistic regression once, not once per run.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ember.data.bundle import ArrayDataset, DataBundle
from ember.tasks import Task
from ember.training.evaluation import evaluate_split

__all__ = ["compute_baselines"]

_FIT_CAP = 5000  # training samples a baseline is fitted on (logistic regression on MNIST stays fast)
_SPLITS = ("val", "test")
_MEMO: OrderedDict[str, dict[str, Any]] = OrderedDict()  # fingerprint -> figures, newest last
_MEMO_SIZE = 8


class _Outputs(nn.Module):
    """A 'model' whose outputs for a split were computed beforehand: input i -> row i."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _indexed(dataset: ArrayDataset) -> ArrayDataset:
    """The split with each input replaced by its index (for precomputed outputs)."""
    return ArrayDataset(torch.arange(len(dataset)), dataset.y)


def _score(outputs: dict[str, Tensor], bundle: DataBundle, task: Task) -> dict[str, Any]:
    """Metrics of precomputed per-split outputs (N, ...) on each split."""
    out = {}
    for split in _SPLITS:
        data = bundle.split(split)
        if len(data) == 0:
            continue
        table = outputs[split]
        metrics = evaluate_split(_Outputs(lambda i, t=table: t[i]), _indexed(data), task, torch.device("cpu"), 4096)
        out[split] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    return out


def _constant(value: Tensor, bundle: DataBundle, task: Task) -> dict[str, Any]:
    return _score({s: value.expand(len(bundle.split(s)), *value.shape).clone() for s in _SPLITS}, bundle, task)


def _targets(dataset: Any) -> torch.Tensor:
    """A split's targets: all of them when held in memory; the first `_FIT_CAP` of a split read
    from disk (streamed images, token files), so a baseline never loads a whole large split."""
    y = dataset.y
    return y if isinstance(y, torch.Tensor) else y[:_FIT_CAP]


def _fit_rows(bundle: DataBundle) -> tuple[np.ndarray, np.ndarray]:
    x, y = bundle.train.x[:_FIT_CAP], bundle.train.y[:_FIT_CAP]
    return x.reshape(len(x), -1).float().numpy(), y.numpy()


def _logistic(features: Callable[[str], Any], fit_x: Any, fit_y: np.ndarray, k: int,
              bundle: DataBundle, task: Task) -> dict[str, Any]:
    """Multinomial logistic regression; its log-probabilities are the 'logits' scored."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=300, C=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning at the cap is no user's concern
        clf.fit(fit_x, fit_y)
    outputs = {}
    for split in _SPLITS:
        if len(bundle.split(split)) == 0:
            outputs[split] = torch.zeros(0, k)
            continue
        logp = np.full((len(bundle.split(split)), k), -30.0, dtype=np.float32)  # classes unseen in fit
        # Clipped: a separable fit gives probabilities of exactly 0, whose log is -inf.
        logp[:, clf.classes_] = np.log(np.clip(clf.predict_proba(features(split)), 1e-30, None))
        outputs[split] = torch.from_numpy(logp)
    return _score(outputs, bundle, task)


def _classification(bundle: DataBundle, task: Task) -> dict[str, Any]:
    k = bundle.info.num_outputs
    counts = torch.bincount(_targets(bundle.train).reshape(-1).long(), minlength=k).float()
    out = {"majority_class": _constant(torch.log((counts + 1e-3) / (counts.sum() + 1e-3 * k)), bundle, task)}
    if bundle.texts is not None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=50000)
        fit_x = vec.fit_transform(bundle.texts["train"][:_FIT_CAP])
        fit_y = bundle.train.y[:_FIT_CAP].numpy()
        out["tfidf_logreg"] = _logistic(lambda s: vec.transform(bundle.texts[s]), fit_x, fit_y, k, bundle, task)
    elif bundle.info.input_kind in ("tabular", "image") and isinstance(bundle.train.x, torch.Tensor):
        # In-memory inputs only: scoring every val/test row of a streamed folder would read it all.
        fit_x, fit_y = _fit_rows(bundle)

        def rows(split: str) -> np.ndarray:
            x = bundle.split(split).x
            return x.reshape(len(x), -1).float().numpy()

        out["logreg"] = _logistic(rows, fit_x, fit_y, k, bundle, task)
    return out


def _regression(bundle: DataBundle, task: Task) -> dict[str, Any]:
    y = _targets(bundle.train).float()
    out = {"mean": _constant(y.reshape(len(y), -1).mean(0).reshape(y.shape[1:]), bundle, task)}
    if task.name != "forecast" or bundle.info.input_kind != "series":
        return out
    horizon = bundle.info.num_outputs
    out["persistence"] = _score({s: bundle.split(s).x[:, -1, :1].expand(-1, horizon).clone() for s in _SPLITS},
                                bundle, task)
    season = int(bundle.info.extra.get("season") or bundle.info.extra.get("period") or 0)
    window = int(bundle.info.input_shape[0])
    if 1 < season <= window:
        # Step h ahead (h = 1..horizon) repeats the value one season before it, from the window.
        cols = [window - season + (h % season) for h in range(horizon)]
        out["seasonal_naive"] = _score({s: bundle.split(s).x[:, cols, 0].clone() for s in _SPLITS}, bundle, task)
    return out


def _language_model(bundle: DataBundle, task: Task) -> dict[str, Any]:
    vocab = int(bundle.info.extra.get("vocab_size", bundle.info.num_outputs))
    y = _targets(bundle.train).reshape(-1)
    y = y[y >= 0]  # ignored positions (IGNORE_INDEX) carry no token
    counts = torch.bincount(y, minlength=vocab)[:vocab].double() + 1.0  # add-one smoothing
    logp = torch.log(counts / counts.sum()).float()  # (V,)

    def unigram(x: Tensor) -> Tensor:  # (B, T) ids -> (B, T, V): the same distribution everywhere
        return logp.expand(*x.shape, vocab)

    out = {}
    for split in _SPLITS:
        data = bundle.split(split)
        if len(data):
            metrics = evaluate_split(_Outputs(unigram), data, task, torch.device("cpu"), 64)
            out[split] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
    return {"unigram": out}


def _fingerprint(bundle: DataBundle, task: Task) -> str | None:
    """A hash of everything the baselines read; None when a split is not held in memory."""
    h = hashlib.sha256(f"{task.name}\0{bundle.info.to_json()}".encode())
    for split in ("train", *_SPLITS):
        data = bundle.split(split)
        tensors = [getattr(data, "y", None)] + ([] if bundle.texts is not None else [getattr(data, "x", None)])
        if not all(isinstance(t, Tensor) for t in tensors):
            return None  # streamed from disk: hashing it would read it all
        for t in tensors:
            h.update(f"{split}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        if bundle.texts is not None:
            h.update("\0".join(bundle.texts[split]).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def compute_baselines(bundle: DataBundle, task: Task) -> dict[str, Any]:
    """`{baseline: {split: metrics}}` on the val and test splits, for this task.

    Example:
        >>> compute_baselines(bundle, task)["majority_class"]["test"]["accuracy"]
        0.11
    """
    key = _fingerprint(bundle, task)
    if key is not None and key in _MEMO:
        _MEMO.move_to_end(key)
        return copy.deepcopy(_MEMO[key])
    out = _compute(bundle, task)
    if key is not None:
        _MEMO[key] = copy.deepcopy(out)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return out


def _compute(bundle: DataBundle, task: Task) -> dict[str, Any]:
    if task.name == "classification":
        out = _classification(bundle, task)
    elif task.name in ("regression", "forecast"):
        out = _regression(bundle, task)
    elif task.name == "lm":
        out = _language_model(bundle, task)
    else:
        out = {}
    # A source that scored its own baseline (popularity for ranking, item means for ratings).
    scored = bundle.info.extra.get("baseline")
    if isinstance(scored, dict) and scored.get("name"):
        out[str(scored["name"])] = {s: scored[s] for s in _SPLITS if isinstance(scored.get(s), dict)}
    return out

