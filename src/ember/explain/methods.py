"""Which attribution methods apply to which model family, and the forward functions they use.

Everything here wraps a trained model from outside; no model class knows about attribution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ember.data.bundle import DataInfo
from ember.errors import ConfigError, did_you_mean
from ember.models.attention import has_attention

__all__ = ["METHODS", "applicable", "check_methods", "forward_fn", "embedding_layer", "last_conv"]

# method -> one-line description (the CLI's --help and the page show it)
METHODS: dict[str, str] = {
    "saliency": "|d output / d input| (Simonyan et al. 2014)",
    "integrated_gradients": "path integral of gradients from a baseline, 50 steps (Sundararajan et al. 2017)",
    "gradcam": "class activation of the last convolution, weighted by its gradients (Selvaraju et al. 2017)",
    "occlusion": "output drop when a patch/window is replaced by the baseline (Zeiler & Fergus 2014)",
    "shap": "Shapley values: GradientExplainer for images, KernelExplainer for tables (Lundberg & Lee 2017)",
    "lime": "a local linear surrogate over superpixels or words (Ribeiro et al. 2016)",
    "attention": "attention weights per layer and head",
    "rollout": "attention rollout through the layers (Abnar & Zuidema 2020)",
}


def applicable(info: DataInfo, model: nn.Module) -> list[str]:
    """The methods that make sense for this run's inputs and model."""
    kind = info.input_kind
    if kind == "image":
        methods = ["saliency", "integrated_gradients", "occlusion", "shap", "lime"]
        if last_conv(model) is not None:
            methods.insert(2, "gradcam")
        return methods
    if kind == "tokens":
        methods = ["integrated_gradients", "lime"]
        if has_attention(model):
            methods += ["attention", "rollout"]
        return methods
    if kind == "tabular":
        return ["shap", "integrated_gradients", "saliency"]
    if kind == "series":
        return ["integrated_gradients", "saliency", "occlusion"]
    if kind == "audio":  # over the log-mel spectrogram
        methods = ["saliency", "integrated_gradients"]
        return methods + (["gradcam"] if last_conv(model) is not None else [])
    return []


def check_methods(requested: list[str] | None, info: DataInfo, model: nn.Module) -> list[str]:
    valid = applicable(info, model)
    if not requested:
        return valid
    for m in requested:
        if m not in METHODS:
            raise ConfigError(f"--method: unknown method '{m}'; {did_you_mean(m, METHODS)}")
        if m not in valid:
            raise ConfigError(f"--method: '{m}' does not apply to this {info.input_kind} "
                              f"{type(model).__name__} model; applicable: {', '.join(valid)}")
    return list(requested)


def forward_fn(model: nn.Module, info: DataInfo) -> Callable[[Tensor], Tensor]:
    """Model outputs as (B, K) scores: class logits, regression outputs, or a GPT's next-token logits."""
    if info.task == "lm":
        vocab = int(info.extra.get("vocab_size", info.num_outputs))
        return lambda x: model(x)[:, -1, :vocab]
    return model


def embedding_layer(model: nn.Module) -> nn.Module:
    for name in ("wte", "embed_tokens", "embed"):  # GPT, Llama, the transformer classifier
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Embedding):
            return layer
    raise ConfigError("integrated_gradients for text needs a model with a token embedding layer")


def last_conv(model: nn.Module) -> nn.Module | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def default_target(scores: Tensor) -> Tensor:
    return scores.argmax(-1)


def rollout(maps: list[Tensor]) -> Tensor:
    """Attention rollout: average heads, add the residual identity, renormalise, multiply layers.

    maps: per layer (H, T, T) -> (T, T) flow of attention from inputs to each position.
    """
    t = maps[0].shape[-1]
    eye = torch.eye(t)
    flow = eye
    for layer in maps:
        a = layer.mean(0) + eye
        a = a / a.sum(-1, keepdim=True)
        flow = a @ flow
    return flow
