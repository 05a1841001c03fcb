"""Pruning: unstructured (zeros under a mask) and structured (layers really shrink).

Unstructured: global L1-magnitude pruning (`torch.nn.utils.prune.global_unstructured`) over
the weights of every Linear, Conv, RNN/LSTM/GRU and Embedding layer, biases and norms
excluded. The re-parametrisation `weight = weight_orig * weight_mask` stays in place, so
fine-tuning with the ordinary loop keeps the zeros at zero; `make_permanent` then leaves
plain weights with zeros, under the original names.

Structured: whole channels, neurons, hidden units and heads are removed, so the model gets
smaller and faster, not just sparser. Input and output sizes (data shape, classes,
vocabulary) never change:

    family       removed                                          by
    mlp          neurons of hidden Linear layers (with BatchNorm)  torch-pruning
    cnn          Conv2d channels (with BatchNorm), head neurons    torch-pruning
    rnn          hidden units, every layer and direction           prune_units
    transformer  attention heads, feed-forward neurons             prune_units
    gpt          attention heads, MLP neurons                      prune_units

`ratio` is the fraction removed in each layer; units are ranked by the L2 norm of all the
weights tied to them (group norm). The returned record names every resized module and its
new sizes, so `rebuild_structure` turns a fresh model from the run's config into the
pruned architecture and the saved weights load into it.

Example:
    >>> small, record = prune_structured(model, 0.5, example=x)
    >>> save_weights(small, path); json.dump(record, f)
    >>> again = rebuild_structure(build(cfg, info), record); load_weights(again, path)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from ember.compress.prune_units import prune_heads, prune_hidden, prune_rnn_units
from ember.errors import ConfigError, EmberError
from ember.models.cnn import CNN
from ember.models.common import count_parameters
from ember.models.gpt import GPT
from ember.models.mlp import MLP
from ember.models.rnn import RNNModel
from ember.models.transformer import TransformerClassifier

__all__ = ["prune_unstructured", "make_permanent", "sparsity_of", "prune_structured", "rebuild_structure"]

RECORD_FORMAT = "ember.prune.structured/1"
PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase, nn.Embedding)


def _check_fraction(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name}: must be a fraction in [0, 1), got {value!r}")


# ----------------------------------------------------------------------------- unstructured


def _weight_names(module: nn.Module) -> list[str]:
    if isinstance(module, nn.RNNBase):  # weight_ih_l0, weight_hh_l0, ..._reverse; not biases
        return [n for n in module._flat_weights_names if n.startswith("weight")]
    return ["weight"]


def _owners(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Every prunable weight once, with all (module, name) that use it (tied weights: several).

    Works before and after `prune_unstructured`, when the parameter is `<name>_orig`.
    """
    groups: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        if not isinstance(module, PRUNABLE):
            continue
        for name in _weight_names(module):
            param = module._parameters.get(f"{name}_orig", module._parameters.get(name))
            if param is not None:
                groups.setdefault(id(param), []).append((module, name))
    return list(groups.values())


def _effective(module: nn.Module, name: str) -> Tensor:
    """The weight the forward pass uses: orig * mask under pruning (current, not last forward's)."""
    mask = module._buffers.get(f"{name}_mask")
    if mask is None:
        return getattr(module, name).detach()
    return module._parameters[f"{name}_orig"].detach() * mask


def sparsity_of(model: nn.Module) -> float:
    """Fraction of zeros over the prunable weights (tied weights counted once)."""
    zeros = total = 0
    for (module, name), *_ in _owners(model):
        w = _effective(module, name)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def _masked_count(model: nn.Module) -> int:
    return sum(int((m._buffers[f"{n}_mask"] == 0).sum())
               for (m, n), *_ in _owners(model) if f"{n}_mask" in m._buffers)


def prune_unstructured(model: nn.Module, sparsity: float) -> dict[str, Any]:
    """Zero the smallest-magnitude weights, globally, until `sparsity` of them are zero.

    Works in place and can be repeated (gradual pruning): the target is the total fraction
    masked, so 0.5 then 0.75 ends at 0.75. Tied weights (GPT's embedding and head) get one
    mask, shared by both users, and stay tied.

    Args:
        model: any module; its Linear/Conv/RNN/Embedding weights are pruned.
        sparsity: target fraction of masked weights, in [0, 1).
    Returns:
        {"sparsity": achieved fraction of zeros, "pruned": masked weights, "total": prunable weights}.
    Raises:
        ConfigError: `sparsity` out of range, below what is already masked, or nothing to prune.
    """
    _check_fraction("sparsity", sparsity)
    owners = _owners(model)
    if not owners:
        raise ConfigError(f"sparsity: {type(model).__name__} has no Linear/Conv/RNN/Embedding weights to prune")
    total = sum(_effective(m, n).numel() for (m, n), *_ in owners)
    already = _masked_count(model)
    extra = round(float(sparsity) * total) - already  # an absolute count: exact, and global across layers
    if extra < 0:
        raise ConfigError(f"sparsity: {sparsity} is below the {already / total:.4f} already masked; "
                          "masks only grow (call make_permanent and prune a fresh copy to start over)")
    firsts = [group[0] for group in owners]
    # The current effective weights rank the candidates: a stale `module.weight` (last
    # forward's) would miss the optimizer's updates since.
    scores = {(m, n): _effective(m, n).abs() for m, n in firsts}
    prune.global_unstructured(firsts, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=extra)
    for (first, first_name), *others in owners:
        for module, name in others:  # the same Parameter: give it the same mask
            prune.custom_from_mask(module, name, first._buffers[f"{first_name}_mask"])
    pruned = _masked_count(model)
    return {"sparsity": sparsity_of(model), "pruned": pruned, "total": total}


def make_permanent(model: nn.Module) -> None:
    """Fold every pruning mask into its weight (`prune.remove`): plain parameters with zeros.

    Names and shapes are the original model's again, so the state dict loads into a model
    built from the config. Tied weights stay tied.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)


# ------------------------------------------------------------------------------- structured


def _sizes(module: nn.Module) -> dict[str, Any] | None:
    """The constructor sizes pruning can change, for the module types rebuild can resize."""
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"in_channels": module.in_channels, "out_channels": module.out_channels, "groups": module.groups}
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {"num_features": module.num_features}
    if isinstance(module, nn.RNNBase):
        return {"input_size": module.input_size, "hidden_size": module.hidden_size}
    if isinstance(module, nn.LayerNorm):
        return {"normalized_shape": list(module.normalized_shape)}
    if isinstance(module, nn.Embedding):
        return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    return None


def _describe(model: nn.Module) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """({path: {"type", sizes...}}, {path: {"n_head": h}}) for every sizable module."""
    shapes, attributes = {}, {}
    for path, module in model.named_modules():
        sizes = _sizes(module)
        if sizes is not None:
            shapes[path] = {"type": type(module).__name__, **sizes}
        if isinstance(getattr(module, "n_head", None), int):
            attributes[path] = {"n_head": module.n_head}
    return shapes, attributes


def _resized(module: nn.Module, spec: dict[str, Any]) -> nn.Module:
    """A new module of `module`'s type and settings with the sizes in `spec` (fresh weights)."""
    p = next(module.parameters(), None)
    kw: dict[str, Any] = {"device": p.device, "dtype": p.dtype} if p is not None else {}
    m = module
    if isinstance(m, nn.Linear):
        new: nn.Module = type(m)(spec["in_features"], spec["out_features"], bias=m.bias is not None, **kw)
    elif isinstance(m, nn.modules.conv._ConvNd):
        new = type(m)(spec["in_channels"], spec["out_channels"], m.kernel_size, stride=m.stride,
                      padding=m.padding, dilation=m.dilation, groups=spec["groups"],
                      bias=m.bias is not None, padding_mode=m.padding_mode, **kw)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        new = type(m)(spec["num_features"], eps=m.eps, momentum=m.momentum, affine=m.affine,
                      track_running_stats=m.track_running_stats, **kw)
    elif isinstance(m, nn.RNNBase):
        extra = {"nonlinearity": m.nonlinearity} if isinstance(m, nn.RNN) else {}
        new = type(m)(spec["input_size"], spec["hidden_size"], num_layers=m.num_layers, bias=m.bias,
                      batch_first=m.batch_first, dropout=m.dropout, bidirectional=m.bidirectional, **extra, **kw)
    elif isinstance(m, nn.LayerNorm):
        new = type(m)(spec["normalized_shape"], eps=m.eps, elementwise_affine=m.elementwise_affine,
                      bias=m.bias is not None, **kw)
    elif isinstance(m, nn.Embedding):
        new = type(m)(spec["num_embeddings"], spec["embedding_dim"], padding_idx=m.padding_idx, **kw)
    else:
        raise ConfigError(f"prune record: cannot resize a {type(m).__name__}")
    new.train(m.training)
    return new


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _output_layer(model: nn.Module) -> nn.Linear:
    """The Linear producing an MLP's or CNN's outputs: it keeps its out_features."""
    last = (model.net if isinstance(model, MLP) else model.head)[-1]
    assert isinstance(last, nn.Linear), type(last)
    return last


def _prune_torch_pruning(model: nn.Module, ratio: float, example: Tensor) -> None:
    """Channels and neurons via torch-pruning's dependency graph (conv -> BN -> flatten -> Linear)."""
    try:
        import torch_pruning as tp  # optional: the `compress` extra
    except ImportError:
        raise EmberError("structured pruning of mlp/cnn needs torch-pruning: "
                         "pip install 'ember[compress]' (or torch-pruning)") from None
    with torch.enable_grad():  # the dependency graph is traced through autograd, even if the caller is in no_grad
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[_output_layer(model)])
        pruner.step()


def _prune_family(model: nn.Module, ratio: float, example: Tensor) -> str:
    """Prune `model` in place; returns the family name."""
    if isinstance(model, MLP | CNN):
        _prune_torch_pruning(model, ratio, example)
        return "mlp" if isinstance(model, MLP) else "cnn"
    if isinstance(model, RNNModel):
        prune_rnn_units(model, ratio)
        return "rnn"
    if isinstance(model, TransformerClassifier):
        for block in model.blocks:
            prune_heads(block.attn, "qkv", "proj", ratio)
            prune_hidden(block.ff, "0", "2", ratio)  # Linear(C, d_ff), GELU, Linear(d_ff, C)
        return "transformer"
    if isinstance(model, GPT):
        for block in model.blocks:  # every layer keeps the same head count: one KV-cache shape
            prune_heads(block.attn, "c_attn", "c_proj", ratio)
            prune_hidden(block.mlp, "c_fc", "c_proj", ratio)
        return "gpt"
    raise ConfigError(f"structured pruning supports Ember's mlp, cnn, rnn, transformer and gpt models, "
                      f"not {type(model).__name__}")


def prune_structured(model: nn.Module, ratio: float, example: Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """Remove a fraction `ratio` of each layer's prunable units; the input model is left as is.

    Args:
        model: an Ember model (mlp, cnn, rnn, transformer, gpt) without pruning masks.
        ratio: fraction of channels / neurons / hidden units / heads removed per layer, in
            [0, 1); each layer keeps floor(n (1 - ratio)) units, at least one.
        example: a batch of inputs (on the model's device), used to trace the graph for
            torch-pruning and to check the pruned model's output shape.
    Returns:
        (pruned copy with the kept weights, JSON-able record for `rebuild_structure`): the
        record has "format", "family", "ratio", "params_before", "params_after",
        "modules" {path: {"type", new sizes..., "was": {old sizes}}} and "attributes"
        {path: {"n_head": h}}.
    Raises:
        ConfigError: `ratio` out of range, masks present, or a model family it cannot prune.
    """
    _check_fraction("ratio", ratio)
    if any(k.endswith("_mask") for k in model.state_dict()):
        raise ConfigError("ratio: the model carries unstructured-pruning masks; call make_permanent first")
    pruned = copy.deepcopy(model)
    training = pruned.training
    pruned.eval()  # tracing in train mode would update BatchNorm statistics
    shapes, attributes = _describe(pruned)
    params_before = count_parameters(pruned)
    with torch.no_grad():
        out_shape = pruned(example).shape
    family = _prune_family(pruned, float(ratio), example)
    with torch.no_grad():
        new_shape = pruned(example).shape
    if new_shape != out_shape:
        raise RuntimeError(f"structured pruning changed the output shape {tuple(out_shape)} -> {tuple(new_shape)}")
    new_shapes, new_attributes = _describe(pruned)
    if set(new_shapes) != set(shapes):
        raise RuntimeError("structured pruning added or removed modules; only resizing is recorded")
    modules = {}
    for path, spec in new_shapes.items():
        if spec != shapes[path]:
            was = {k: v for k, v in shapes[path].items() if spec.get(k) != v}
            modules[path] = {**spec, "was": was}
    pruned.train(training)
    record = {
        "format": RECORD_FORMAT,
        "family": family,
        "ratio": float(ratio),
        "params_before": params_before,
        "params_after": count_parameters(pruned),
        "modules": modules,
        "attributes": {p: a for p, a in new_attributes.items() if a != attributes.get(p)},
    }
    return pruned, record


def rebuild_structure(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Give a freshly built model the pruned architecture described by `record`.

    Each recorded module is replaced by one of the same type and settings with the recorded
    sizes (fresh weights: load the pruned state dict afterwards), and attributes such as
    `n_head` are set. Works in place and returns `model`.

    Raises:
        ConfigError: a record of another format, or one that does not fit this model.
    """
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ConfigError(f"prune record: expected format '{RECORD_FORMAT}', got "
                          f"{record.get('format') if isinstance(record, dict) else type(record).__name__!r}")
    for path, spec in record["modules"].items():
        try:
            old = model.get_submodule(path)
        except AttributeError:
            raise ConfigError(f"prune record: the model has no module '{path}'") from None
        if type(old).__name__ != spec["type"]:
            raise ConfigError(f"prune record: '{path}' is a {type(old).__name__}, the record says {spec['type']}")
        _set_submodule(model, path, _resized(old, spec))
    for path, attrs in record["attributes"].items():
        module = model.get_submodule(path)
        for name, value in attrs.items():
            setattr(module, name, value)
    return model
