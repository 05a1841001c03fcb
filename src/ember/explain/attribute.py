"""Attributions for one input: a map over pixels, tokens, features or time steps.

Each function returns an `Attribution` whose `values` has the input's layout without the
channel/embedding axis: (H, W) for images, (T,) for tokens and series, (F,) for tables.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.explain.methods import embedding_layer, forward_fn, last_conv, rollout
from ember.models.attention import record_attention

__all__ = ["Attribution", "attribute"]


@dataclass
class Attribution:
    method: str
    values: np.ndarray
    target: int
    extra: dict[str, Any] = field(default_factory=dict)


def _baseline(x: Tensor, info: DataInfo) -> Tensor:
    if info.input_kind == "tokens":
        pad = info.extra.get("pad_id")
        return torch.full_like(x, int(pad) if pad is not None else 0)
    return torch.zeros_like(x)  # the normalised mean: "an average input"


def _reduce(attr: Tensor, info: DataInfo) -> np.ndarray:
    a = attr.detach().float()[0]
    if info.input_kind in ("image", "audio"):
        return a.sum(0).numpy()  # (C, H, W) -> (H, W); audio: (1, mels, frames) -> (mels, frames)
    if info.input_kind == "series":
        return a.sum(-1).numpy()  # (T, F) -> (T,)
    if a.ndim == 2:  # token embeddings (T, E) -> (T,)
        return a.sum(-1).numpy()
    return a.numpy()


def _integrated_gradients(model: nn.Module, info: DataInfo, x: Tensor, target: int, steps: int) -> Attribution:
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    f = forward_fn(model, info)
    start = time.perf_counter()
    if info.input_kind == "tokens":
        ig = LayerIntegratedGradients(f, embedding_layer(model))
        attr, delta = ig.attribute(x, baselines=_baseline(x, info), target=target, n_steps=steps,
                                   return_convergence_delta=True)
    else:
        ig = IntegratedGradients(f)
        attr, delta = ig.attribute(x, baselines=_baseline(x, info), target=target, n_steps=steps,
                                   return_convergence_delta=True)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        gap = float(f(x)[0, target] - f(_baseline(x, info))[0, target])
    return Attribution("integrated_gradients", _reduce(attr, info), target,
                       {"convergence_delta": float(delta.abs().max()), "steps": steps, "seconds": seconds,
                        "sum": float(attr.sum()), "output_difference": gap})


def _saliency(model: nn.Module, info: DataInfo, x: Tensor, target: int) -> Attribution:
    from captum.attr import Saliency

    attr = Saliency(forward_fn(model, info)).attribute(x, target=target, abs=True)
    return Attribution("saliency", _reduce(attr, info), target)


def _gradcam(model: nn.Module, info: DataInfo, x: Tensor, target: int) -> Attribution:
    from captum.attr import LayerAttribution, LayerGradCam

    attr = LayerGradCam(model, last_conv(model)).attribute(x, target=target, relu_attributions=True)
    up = LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return Attribution("gradcam", up.detach()[0, 0].numpy(), target)


def _occlusion(model: nn.Module, info: DataInfo, x: Tensor, target: int) -> Attribution:
    from captum.attr import Occlusion

    if info.input_kind == "image":
        c, h, _ = x.shape[1:]
        k = max(1, h // 4)
        window, strides = (c, k, k), (c, max(1, k // 2), max(1, k // 2))
    else:  # series (T, F): windows over time
        t, f = x.shape[1:]
        window, strides = (max(1, t // 8), f), (1, f)
    attr = Occlusion(forward_fn(model, info)).attribute(x, target=target, sliding_window_shapes=window,
                                                        strides=strides, baselines=0.0)
    return Attribution("occlusion", _reduce(attr, info), target)


def _shap(model: nn.Module, info: DataInfo, x: Tensor, target: int, background: Tensor) -> Attribution:
    with warnings.catch_warnings():
        # shap's colormap module calls matplotlib's set_bad/set_over/set_under at import, which
        # matplotlib marks pending deprecation: shap's to fix, and nothing a user can act on.
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=r"shap\.")
        import shap

    if info.input_kind == "image":
        explainer = shap.GradientExplainer(model, background)
        values = explainer.shap_values(x, ranked_outputs=None)
        arr = np.asarray(values)
        # shap returns (B, C, H, W, K) in recent releases, a list of K arrays in older ones
        per_class = arr[0, ..., target] if arr.ndim == 5 else arr[target][0]
        return Attribution("shap", per_class.sum(0), target, {"explainer": "GradientExplainer"})

    def f(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = forward_fn(model, info)(torch.as_tensor(rows, dtype=torch.float32))
            return torch.softmax(out, -1).numpy() if info.task == "classification" else out.numpy()

    explainer = shap.KernelExplainer(f, background.numpy())
    values = explainer.shap_values(x.numpy(), nsamples=min(2 ** x.shape[1] + 64, 512), silent=True)
    arr = np.asarray(values)
    per_class = arr[0, :, target] if arr.ndim == 3 else (arr[target][0] if arr.ndim == 3 else arr[0])
    return Attribution("shap", np.asarray(per_class), target,
                       {"explainer": "KernelExplainer", "expected_value": np.asarray(explainer.expected_value).tolist()})


def _lime_image(model: nn.Module, info: DataInfo, x: Tensor, target: int, seed: int) -> Attribution:
    from lime import lime_image

    c, h, w = x.shape[1:]
    block = max(2, h // 8)  # superpixels of a few pixels: 16 on 8x8 digits, 64 on CIFAR
    seg = (np.arange(h)[:, None] // block) * (w // block + 1) + (np.arange(w)[None, :] // block)  # grid superpixels

    def classify(images: np.ndarray) -> np.ndarray:  # (N, H, W, 3) -> probabilities
        batch = torch.as_tensor(images[..., :c], dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(model(batch), -1).numpy()

    image = x[0].permute(1, 2, 0).numpy().astype(np.float64)
    if c == 1:
        image = np.repeat(image, 3, axis=-1)
    with contextlib.redirect_stderr(io.StringIO()):  # lime draws a tqdm bar; keep the CLI quiet
        explanation = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            image, classify, labels=(target,), top_labels=None, hide_color=0.0, num_samples=1000,
            batch_size=100, segmentation_fn=lambda _img: seg, random_seed=seed)
    heat = np.zeros((h, w))
    for segment, weight in explanation.local_exp[target]:
        heat[seg == segment] = weight
    return Attribution("lime", heat, target, {"samples": 1000, "superpixel": block})


def _lime_text(model: nn.Module, info: DataInfo, text: str, target: int, tokenizer: Any, seed: int) -> Attribution:
    from lime.lime_text import LimeTextExplainer

    from ember.inputs import encode_text

    f = forward_fn(model, info)

    def classify(texts: list[str]) -> np.ndarray:
        batch = torch.cat([encode_text(t, info, tokenizer) for t in texts])
        with torch.no_grad():
            return torch.softmax(f(batch).float(), -1).numpy()

    names = list(info.class_names) or None
    explanation = LimeTextExplainer(class_names=names, random_state=seed).explain_instance(
        text, classify, labels=(target,), num_features=12, num_samples=300)
    words = explanation.as_list(label=target)
    return Attribution("lime", np.array([w for _, w in words]), target, {"words": [w for w, _ in words]})


def _attention(model: nn.Module, x: Tensor, method: str, target: int) -> Attribution:
    maps = [m[0] for m in record_attention(model, x)]  # (H, T, T) per layer
    if method == "attention":
        return Attribution("attention", np.stack([m.numpy() for m in maps]), target)
    flow = rollout(maps)
    return Attribution("rollout", flow[-1].numpy(), target, {"matrix": flow.numpy().tolist()})


def attribute(method: str, model: nn.Module, info: DataInfo, x: Tensor, target: int, *,
              background: Tensor | None = None, text: str | None = None, tokenizer: Any = None,
              seed: int = 0, steps: int = 50) -> Attribution:
    """Attribution of `method` for the single input `x` (batch of 1) toward output `target`."""
    model.eval()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*required_grads has been set automatically.*")
        return _dispatch(method, model, info, x, target, background, text, tokenizer, seed, steps)


def _dispatch(method: str, model: nn.Module, info: DataInfo, x: Tensor, target: int, background: Tensor | None,
              text: str | None, tokenizer: Any, seed: int, steps: int) -> Attribution:
    if method == "integrated_gradients":
        return _integrated_gradients(model, info, x, target, steps)
    if method == "saliency":
        return _saliency(model, info, x, target)
    if method == "gradcam":
        return _gradcam(model, info, x, target)
    if method == "occlusion":
        return _occlusion(model, info, x, target)
    if method == "shap":
        assert background is not None
        return _shap(model, info, x, target, background)
    if method == "lime":
        if info.input_kind == "tokens":
            return _lime_text(model, info, text or "", target, tokenizer, seed)
        return _lime_image(model, info, x, target, seed)
    return _attention(model, x, method, target)
