"""LoRA (Hu et al. 2021) through peft, injected into any Ember model by module-name pattern.

peft's `inject_adapter_in_model` swaps each matched layer in place for a peft layer that
holds the frozen original (`<name>.base_layer`) plus the adapters (`lora_A`, `lora_B`); no
model class is copied or wrapped. After training, `merge` folds B·A into the original
weights and puts the plain layers back, so the run's `model.safetensors` has the model's own
names and every tool loads it unchanged. The adapters alone are kept as `adapter.safetensors`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ember.errors import ConfigError
from ember.models.common import LoraSpec
from ember.transfer.names import check_patterns, clean_name, matches

__all__ = ["inject", "merge", "adapter_state", "has_adapters", "INSTALL"]

INSTALL = "pip install 'ember[transfer]' (peft)"
_SUPPORTED = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ConfigError(f"model.lora needs the 'peft' package: {INSTALL}") from None
    return peft


def inject(model: nn.Module, spec: LoraSpec) -> list[str]:
    """Add adapters to the layers matching `spec.targets`; freeze everything else.

    Parameters matching `spec.also_train` stay trainable in full (a new head).

    Returns:
        The names of the adapted modules.

    Raises:
        ConfigError: peft missing, a pattern matching nothing, or a matched layer of a kind
            LoRA does not support.
    """
    peft = _peft()
    modules = {name: m for name, m in model.named_modules() if name}
    check_patterns(spec.targets, list(modules), "model.lora.targets")
    chosen = [n for n, m in modules.items() if any(matches(n, p) for p in spec.targets)
              and not any(n.startswith(c + ".") for c in modules if c != n and any(matches(c, p) for p in spec.targets))]
    for name in chosen:
        if not isinstance(modules[name], _SUPPORTED):
            kinds = ", ".join(k.__name__ for k in _SUPPORTED)
            raise ConfigError(f"model.lora.targets: '{name}' is a {type(modules[name]).__name__}; LoRA adapts "
                              f"{kinds} layers: name those (e.g. '{name}.*')")
    config = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=chosen)
    peft.inject_adapter_in_model(config, model)
    names = [clean_name(n) for n, _ in model.named_parameters()]
    check_patterns(spec.also_train, names, "model.lora.also_train")
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
        else:
            p.requires_grad_(any(matches(clean_name(name), pat) for pat in spec.also_train))
    return chosen


def has_adapters(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' tensors and the fully trained (`also_train`) ones, by name."""
    return {clean_name(n): p.detach() for n, p in model.named_parameters() if p.requires_grad or "lora_" in n}


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and put the plain layer back (in place)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = layer.get_base_layer()
        for p in base.parameters():
            p.requires_grad_(True)
        setattr(parent, child, base)
    return model
