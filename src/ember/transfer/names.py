"""Parameter and module names as the user writes them, and pattern matching on them."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from ember.errors import ConfigError

__all__ = ["clean_name", "matches", "check_patterns"]

# Wrappers that put a segment into names: DDP ("module."), torch.compile ("_orig_mod."),
# peft's LoRA layers (".base_layer"). Patterns are written against the plain model's names.
_PREFIXES = ("module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """`name` as in the unwrapped model without adapters (`blocks.0.attn.c_attn.weight`)."""
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".base_layer.", ".")


def matches(name: str, pattern: str) -> bool:
    """fnmatch, where a pattern naming a module also covers everything under it ('head')."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def check_patterns(patterns: Iterable[str], names: list[str], field: str) -> None:
    """Raise `ConfigError` naming the first pattern that matches none of `names`.

    Raises:
        ConfigError: with a few of the valid names, so the user can correct the pattern.
    """
    for pattern in patterns:
        if not any(matches(n, pattern) for n in names):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ConfigError(f"{field}: '{pattern}' matches no name of this model; names look like: {shown}")
