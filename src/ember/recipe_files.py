"""The recipe files shipped with Ember, read without building any config (no torch import).

`ember recipes` lists them from here, so it starts as fast as `ember --help`.
"""

from __future__ import annotations

from importlib import resources

from ember.yaml_safe import load_yaml

__all__ = ["list_recipes", "recipe_text", "recipe_description"]


def list_recipes() -> list[str]:
    """Names of the recipes shipped with Ember."""
    folder = resources.files("ember") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_text(name: str) -> str:
    """The YAML text of a shipped recipe."""
    return (resources.files("ember") / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")


def recipe_description(name: str) -> str:
    """A shipped recipe's `description` line (safe loader: a tag is an error, never code)."""
    raw = load_yaml(recipe_text(name))
    return str(raw.get("description", "")) if isinstance(raw, dict) else ""
