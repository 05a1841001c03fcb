"""docs/textbook.md's map: every row links a reference, a module, a recipe and a test that exist."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "textbook.md"
MODULES = ["dense", "activations", "losses", "optim", "conv", "pooling", "lstm", "attention", "positional", "xor"]
LINK = re.compile(r"\[([^\]]*)\]\(([^)]+)\)")


def _rows() -> list[list[str]]:
    lines = [ln for ln in DOC.read_text().splitlines() if ln.startswith("| ") and not ln.startswith("| Concept")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]


def _links(cell: str) -> list[tuple[list[str], Path]]:
    """(names in backticks in the link text, the resolved target) for every link of a cell."""
    return [(re.findall(r"`([^`]+)`", text), (DOC.parent / target).resolve()) for text, target in LINK.findall(cell)]


def test_map_has_a_row_per_topic() -> None:
    assert len(_rows()) >= 16


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r[0][:40])
def test_every_row_is_linked_and_every_link_resolves(row: list[str]) -> None:
    concept, reference, module, recipe, test = row
    for cell, folder, suffix in [(reference, "src/ember/textbook", ".py"), (module, "src/ember", ".py"),
                                 (recipe, "src/ember/recipes", ".yaml"), (test, "tests/textbook", ".py")]:
        links = _links(cell)
        assert links, f"{concept}: a cell without a link: {cell}"
        for names, target in links:
            assert target.is_file(), f"{concept}: broken link {target}"
            if target.suffix == suffix and str(target.relative_to(ROOT)).startswith(folder):
                source = target.read_text()
                for name in names:  # the named functions, classes and tests exist in the linked file
                    assert re.search(rf"^(def|class) {re.escape(name)}\b", source, re.M), f"{name} not in {target}"
        assert any(str(t.relative_to(ROOT)).startswith(folder) for _, t in links), f"{concept}: no link under {folder}"


def test_every_public_reference_is_on_the_map() -> None:
    mapped = {name for row in _rows() for names, _ in _links(row[1]) for name in names}
    for mod_name in MODULES:
        mod = importlib.import_module(f"ember.textbook.{mod_name}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or (inspect.isclass(obj) and not dataclasses.is_dataclass(obj)):
                assert name in mapped, f"ember.textbook.{mod_name}.{name} is missing from {DOC.name}"
