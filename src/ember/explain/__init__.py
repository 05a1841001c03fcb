"""`ember explain`: attributions for a finished run, as pictures, an HTML page and a report section.

    ember explain runs/digits-cnn-... [IMAGE ...] [--method integrated_gradients] [--target 3]

Without inputs a few test examples are explained, misclassified ones first.
"""

from __future__ import annotations

import base64
import html
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ember import data as data_mod
from ember.compress import require_float
from ember.errors import ConfigError
from ember.explain.attribute import Attribution, attribute
from ember.explain.methods import METHODS, applicable, check_methods, forward_fn
from ember.explain.render import (
    attention_grid,
    bars,
    image_row,
    series_plot,
    summary_bars,
    token_html,
)
from ember.formatting import Progress, silent
from ember.inputs import read_inputs
from ember.loading import load_run, load_tokenizer
from ember.report.build import render_run
from ember.runs import atomic_write_text
from ember.safe_paths import read_bytes

__all__ = ["explain", "METHODS", "applicable", "attribute"]


def _pick_examples(loaded: Any, bundle: Any, n: int) -> list[tuple[str, torch.Tensor]]:
    """Test examples, misclassified first (for classifiers)."""
    test = bundle.test
    f = forward_fn(loaded.model, loaded.info)
    with torch.no_grad():
        scores = f(test.x[:512])
    order = torch.arange(len(scores))
    if loaded.info.task == "classification":
        wrong = scores.argmax(-1) != test.y[: len(scores)]
        order = torch.cat([order[wrong], order[~wrong]])
    return [(f"test #{int(i)}", test.x[int(i): int(i) + 1]) for i in order[:n]]


def _img(path: Path) -> str:
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{base64.b64encode(read_bytes(path)).decode()}">'


def _tokens_of(tokenizer: Any, ids: list[int], pad_id: Any) -> list[str]:
    return [tokenizer.decode([i]) if i != pad_id and i < tokenizer.vocab_size else "" for i in ids]


def explain(run_dir: str | Path, inputs: list[str | Path] | None = None, methods: list[str] | None = None,
            target: str | None = None, texts: list[str] | None = None, examples: int = 4,
            seed: int = 0, progress: Progress = silent) -> Path:
    """Explain a run's predictions; writes RUN_DIR/explain/ and refreshes report.html.

    `progress` receives a line per phase and per example (the CLI prints them: SHAP and LIME
    take seconds per example). Returns the path of `explain/index.html`.
    """
    loaded = load_run(run_dir)
    info, model = loaded.info, loaded.model
    require_float(model, loaded.run.path, "has no gradients to attribute with")
    chosen = check_methods(methods, info, model)
    tokenizer = None
    if info.input_kind == "tokens":
        tokenizer = load_tokenizer(loaded.run.path)
    bundle = data_mod.build(loaded.config.data, loaded.config.train.seed)
    if inputs or texts:
        items = read_inputs([Path(p) for p in inputs or []], info, tokenizer, texts)
        items = [(name, x[i: i + 1]) for name, x in items for i in range(len(x))]
    else:
        items = _pick_examples(loaded, bundle, examples)
    out_dir = loaded.run.tool_dir("explain")
    out_dir.mkdir(exist_ok=True)
    f = forward_fn(model, info)
    progress(f"{len(items)} example(s), method(s) {', '.join(chosen)}")
    background = bundle.train.x[torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(seed))[:32]]
    record: list[dict[str, Any]] = []
    body: list[str] = []
    feature_rows: list[np.ndarray] = []
    for n, (name, x) in enumerate(items):
        with torch.no_grad():
            scores = f(x)
        tgt = _resolve_target(target, info, scores)
        label = info.class_names[tgt] if info.class_names and tgt < len(info.class_names) else str(tgt)
        text = tokenizer.decode([i for i in x[0].tolist() if i != info.extra.get("pad_id")]) if tokenizer else None
        attrs: list[Attribution] = []
        for method in chosen:
            progress(f"example {n + 1}/{len(items)} ({name}): {method}")
            bg = background[:16] if info.input_kind == "tabular" else background
            attrs.append(attribute(method, model, info, x, tgt, background=bg, text=text, tokenizer=tokenizer,
                                   seed=seed))
        title = f"{name}: target {label}"
        body.append(f"<h3>{html.escape(title)}</h3>")
        body.append(_render(n, x, attrs, info, bundle, tokenizer, title, out_dir))
        if info.input_kind == "tabular":
            feature_rows += [a.values for a in attrs if a.method == "shap"]
        record.append({"input": name, "target": tgt, "label": label,
                       "methods": {a.method: {k: v for k, v in a.extra.items() if k != "matrix"} for a in attrs}})
    if feature_rows:
        summary = summary_bars(list(info.feature_names), np.stack(feature_rows), out_dir / "shap_summary.png")
        body.insert(0, "<h3>SHAP summary</h3>" + _img(summary))
    atomic_write_text(out_dir / "explain.json", json.dumps({"methods": chosen, "examples": record}, indent=2))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>explanations</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2rem auto}img{max-width:100%}"
            "pre.tokens{white-space:pre-wrap;font-size:.8rem;background:#fafafa;padding:.5rem}</style></head><body>"
            f"<h1>Explanations — {html.escape(loaded.run.path.name)}</h1>"
            + "".join(f"<p><b>{html.escape(m)}</b>: {html.escape(METHODS[m])}</p>" for m in chosen)
            + "\n".join(body) + "</body></html>\n")
    atomic_write_text(out_dir / "index.html", page)
    atomic_write_text(out_dir / "section.html", "\n".join(body))
    progress("refreshing the run's report")
    render_run(loaded.run.path)  # the report picks up explain/section.html
    return out_dir / "index.html"


def _resolve_target(target: str | None, info: Any, scores: torch.Tensor) -> int:
    if target is None:
        return int(scores.argmax(-1)[0]) if info.task in ("classification", "lm") else 0
    if info.class_names and target in info.class_names:
        return info.class_names.index(target)
    if target.isdigit() and int(target) < scores.shape[-1]:
        return int(target)
    valid = ", ".join(info.class_names) if info.class_names else f"0..{scores.shape[-1] - 1}"
    raise ConfigError(f"--target: got '{target}'; valid: {valid}")


def _render(n: int, x: torch.Tensor, attrs: list[Attribution], info: Any, bundle: Any, tokenizer: Any,
            title: str, out_dir: Path) -> str:
    if info.input_kind == "image":
        mean = torch.tensor(info.mean).view(-1, 1, 1)
        std = torch.tensor(info.std).view(-1, 1, 1)
        image = (x[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        return _img(image_row(image[..., 0] if image.shape[-1] == 1 else image, attrs, title,
                              out_dir / f"example_{n}.png"))
    if info.input_kind == "audio":  # the spectrogram scaled to [0, 1], low frequencies at the bottom
        from dataclasses import replace

        spec = x[0, 0].numpy()
        spec = (spec - spec.min()) / max(float(spec.max() - spec.min()), 1e-6)
        flipped = [replace(a, values=np.flipud(a.values)) for a in attrs]
        return _img(image_row(np.flipud(spec), flipped, title, out_dir / f"example_{n}.png"))
    if info.input_kind == "series":
        window = x[0, :, 0].numpy() * info.std[0] + info.mean[0] if info.mean else x[0, :, 0].numpy()
        return _img(series_plot(window, attrs, title, out_dir / f"example_{n}.png"))
    if info.input_kind == "tabular":
        return "".join(_img(bars(list(info.feature_names), a.values, f"{title} — {a.method}",
                                 out_dir / f"example_{n}_{a.method}.png")) for a in attrs)
    parts = []
    tokens = _tokens_of(tokenizer, x[0].tolist(), info.extra.get("pad_id"))
    for a in attrs:
        if a.method == "integrated_gradients":
            parts.append(f"<p>integrated gradients (Δ={a.extra['convergence_delta']:.1e})</p>"
                         + token_html(tokens, a.values))
        elif a.method == "rollout":
            parts.append("<p>attention rollout (from the last position)</p>" + token_html(tokens, a.values))
        elif a.method == "lime":
            words = a.extra["words"]
            parts.append("<p>LIME words</p>" + token_html([f" {w} " for w in words], a.values))
        elif a.method == "attention":
            parts.append(_img(attention_grid(a.values, tokens, out_dir / f"example_{n}_attention.png")))
    return "\n".join(parts)


class _CallableModule(types.ModuleType):
    """`ember.explain(...)` calls `explain` (the package took the function's name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
