"""MkDocs hook: the CLI reference page is written from `ember`'s own argparse parser at build
time, so it cannot drift from the code. The page `reference/cli.md` holds the marker
`<!-- cli-reference -->`; this hook replaces it with one section per subcommand.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

MARKER = "<!-- cli-reference -->"
PAGE = "reference/cli.md"
SRC = Path(__file__).resolve().parents[2] / "src"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _section(name: str, parser: argparse.ArgumentParser, summary: str, level: int) -> list[str]:
    out = [f"{'#' * level} `{name}`", ""]
    if summary:
        out += [summary[0].upper() + summary[1:] + ".", ""]
    out += ["```text", parser.format_help().rstrip(), "```", ""]
    helps = _help_lines(parser)
    for sub_name, sub in _subcommands(parser).items():
        out += _section(f"{name} {sub_name}", sub, helps.get(sub_name, ""), min(level + 1, 6))
    return out


def cli_reference() -> str:
    """The Markdown of every `ember` subcommand's help, as argparse prints it."""
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))  # document this checkout, not an installed copy
    from ember.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it for a stable page
    parser, commands = build_parser()
    helps = _help_lines(parser)
    out = ["```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.items():
        out += _section(f"ember {name}", sub, helps.get(name, ""), 2)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_path == PAGE and MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
