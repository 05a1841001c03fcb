"""Pretrained MiniLM against TF-IDF + logistic regression on the same text split.

The baseline is the strong one, not the capped one every run's report carries: word 1-2 grams
and character 2-5 grams (TF-IDF, sublinear tf) on the *whole* training split, logistic
regression with C chosen on the validation split. Then the recipes, on the same seeded split:

    python benchmarks/text_transfer.py                                   # rotten-tomatoes-minilm and -lora
    python benchmarks/text_transfer.py --recipes newsgroups-minilm
    python benchmarks/text_transfer.py --target "train.max_steps=2"      # a smoke run

Prints JSON: test accuracy of the baseline and of each recipe, the gaps, and the wall time of
each training run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import numpy as np

import ember
from ember.data import build as build_data


def tfidf_baseline(recipe: str, seed: int) -> dict[str, float]:
    """Test accuracy of word+char TF-IDF and logistic regression, C picked on val."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    cfg = ember.load_config(recipe, [f"train.seed={seed}"])
    bundle = build_data(cfg.data, seed)
    texts = bundle.texts
    assert texts is not None, f"{recipe} is not a text recipe"
    y = {s: bundle.split(s).y.numpy() for s in ("train", "val", "test")}
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x_train = hstack([words.fit_transform(texts["train"]), chars.fit_transform(texts["train"])]).tocsr()

    def features(split: str):  # noqa: ANN202
        return hstack([words.transform(texts[split]), chars.transform(texts[split])]).tocsr()

    x_val, x_test = features("val"), features("test")
    best: tuple[float, float, LogisticRegression] | None = None
    for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y["train"])
        val = float((clf.predict(x_val) == y["val"]).mean())
        if best is None or val > best[0]:
            best = (val, c, clf)
    assert best is not None
    val, c, clf = best
    test = float((clf.predict(x_test) == y["test"]).mean())
    return {"val_accuracy": round(val, 4), "test_accuracy": round(test, 4), "C": c,
            "train_size": len(texts["train"]), "test_size": len(texts["test"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", default="rotten-tomatoes-minilm,rotten-tomatoes-minilm-lora")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default="", help="extra overrides of every run, space-separated")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    out: dict[str, object] = {"seed": args.seed, "target": args.target}
    baseline = tfidf_baseline(recipes[0], args.seed)
    out["tfidf_logreg"] = baseline
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            overrides = [f"log.runs_dir={tmp}", "log.report=false", f"train.seed={args.seed}", *args.target.split()]
            start = time.perf_counter()
            run = ember.train(recipe, overrides, verbose=False)
            summary = json.loads(run.summary.read_text())
            acc = float(summary["test"]["accuracy"])
            out[recipe] = {"test_accuracy": round(acc, 4),
                           "gap_vs_tfidf_points": round(100 * (acc - baseline["test_accuracy"]), 2),
                           "trainable_params": summary.get("trainable_params"), "params": summary.get("params"),
                           "wall_s": round(time.perf_counter() - start, 1)}
    print(json.dumps(out, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))


if __name__ == "__main__":
    main()
