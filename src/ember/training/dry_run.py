"""One forward pass on two training samples before a run folder exists: a user's model that cannot take
the data fails with one line, and one that returns probabilities is pointed at its softmax.

It runs in eval mode under `no_grad` on samples read without augmentation, so it draws no random
numbers and changes no weights or statistics: the run that follows is exactly the run without it.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ember.data.bundle import DataBundle
from ember.errors import ConfigError

__all__ = ["dry_forward"]


def _ends_in_softmax(model: nn.Module) -> bool:
    last = list(model.modules())[-1]
    return isinstance(last, nn.Softmax | nn.Softmax2d)


def dry_forward(model: nn.Module, bundle: DataBundle, device: torch.device) -> None:
    """Run `model` on two training samples; raise ConfigError naming the shapes if it fails.

    Warns when a classifier's outputs are probabilities (non-negative rows that sum to 1, or a
    final `nn.Softmax`): cross-entropy expects logits, and softmax applied twice trains badly.
    """
    name = type(model).__name__
    x, _ = bundle.train.batch(torch.arange(min(2, len(bundle.train))), 0, train=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as exc:  # noqa: BLE001  (any failure in user code is reported as one line)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model {name} cannot take this data: on a batch of inputs shaped "
                          f"{tuple(x.shape)} it raised {type(exc).__name__}: {first}") from None
    finally:
        model.train(was_training)
    if bundle.info.task != "classification" or not isinstance(out, torch.Tensor) or out.ndim != 2:
        return
    rows_are_probabilities = bool((out >= 0).all()) and torch.allclose(out.sum(-1), torch.ones_like(out.sum(-1)), atol=1e-4)
    if _ends_in_softmax(model) or (out.shape[-1] > 1 and rows_are_probabilities):
        warnings.warn(f"model {name} returns probabilities (its outputs are softmaxed); Ember's cross-entropy "
                      "expects logits: drop the final softmax (Ember applies it where probabilities are shown)",
                      UserWarning, stacklevel=2)
