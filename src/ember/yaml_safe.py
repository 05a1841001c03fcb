"""YAML as data: the safe loader, with anchors and aliases bounded.

`yaml.safe_load` never runs code, but an "alias bomb" (a few lines whose anchors refer to
each other nine times per level) expands to billions of nodes once anything walks it: a
config validator, `yaml.safe_dump`, an error message that prints the value. The loader here
counts the nodes a document would expand to (sharing counted once per use, as a walk sees
them) and refuses one over `MAX_NODES` before anything walks it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ember.errors import ConfigError

__all__ = ["MAX_NODES", "YamlTooLarge", "load_yaml", "read_utf8"]

MAX_NODES = 1_000_000  # far above any config, far below what stalls a walk


class YamlTooLarge(yaml.YAMLError):
    """The document expands (through aliases) to more than MAX_NODES nodes."""


def _expanded_size(root: yaml.Node) -> int:
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if depth > 200:
            raise YamlTooLarge("nested more than 200 levels deep")
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        total = min(total, MAX_NODES + 1)  # enough to know it is too large
        sizes[id(node)] = total
        return total

    return size(root, 0)


class _BoundedLoader(yaml.SafeLoader):
    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None and _expanded_size(node) > MAX_NODES:
            raise YamlTooLarge(f"expands to more than {MAX_NODES:,} values through anchors and aliases "
                               "(a YAML alias bomb?); write the values out")
        return node


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, refusing documents that expand past MAX_NODES (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def read_utf8(path: Path, what: str) -> str:
    """The text of `path`, or a ConfigError naming the file when it is unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} '{path}': not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{what} '{path}': cannot read it ({exc.strerror or exc})") from None
