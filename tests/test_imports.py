"""The layering of DESIGN.md, checked: no import cycle among Ember's modules, and a light CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ember

SRC = Path(ember.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> Ember modules it imports, at any depth (function-level imports count too)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = owner(name) if name.split(".")[0] == "ember" else None
                # A package's own submodules and its parents are not edges (importing
                # ember.data.bundle runs ember/data/__init__ first by Python's rules).
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_cli_help_does_not_import_torch() -> None:
    code = ("import sys; from ember.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'pydantic', 'yaml', 'rich') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_recipes_lists_without_torch() -> None:
    """`ember recipes` reads YAML only: no torch, pydantic or model code is imported to list them."""
    code = ("import sys; from ember.cli import main\n"
            "main(['recipes'])\n"
            "print('HEAVY', [m for m in ('torch', 'numpy', 'pydantic') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "digits-cnn " in out and "HEAVY []" in out, out


def test_predict_imports_neither_torchmetrics_nor_matplotlib(tmp_path: Path) -> None:
    """`ember predict` and `ember.predict` skip the metric and plotting libraries (seconds of import)."""
    code = ("import sys, ember.api, ember.loading, ember.tasks, ember.serve.app; "
            "print(sorted(m for m in ('torchmetrics', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
