"""Read the runnable examples out of a Markdown page (README.md, docs/*.md).

The conventions (also in docs/contributing-docs.md):

- Every fenced block tagged `bash`, `console` or `python` runs, in page order, in one temporary
  working directory per page (later blocks use the runs earlier ones made). Other tags (`yaml`,
  `json`, `text`, `toml`, untagged) are shown, never run.
- `<!-- test: skip (reason) -->` right above a block: not run; the reason is required.
- `<!-- test: ... -->` right above a block, with anything else after `test:`: what the suite
  runs *instead* of the block, in the block's language (a shorter training, say), so the reader
  still sees the real command. It may span several lines.
- `<!-- test-setup: ... -->` on its own (shell lines), or `<!-- test-setup python: ... -->`:
  a hidden step run at that point of the page (make an input file, say); the reader sees nothing.
- `<!-- test-requires: espeak-ng python:recbole -->` anywhere on a page: the page's examples
  run only where those programs (or, with `python:`, modules) are installed, as the suite's
  own tests for those parts do; elsewhere the page is skipped with a message saying why.
- A `console` block: each `$ ` line is a command, the lines under it its expected output
  (stdout and stderr together); `...` in the expected text matches anything, and runs of
  spaces compare equal.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = ("bash", "console", "python")

_FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Markers start a line (so a page may quote one in `code` without it acting).
_MARKER = re.compile(r"^[ \t]*<!--\s*test(-setup)?(?:\s+(python))?\s*:(.*?)-->", re.S | re.M)
_REQUIRES = re.compile(r"^[ \t]*<!--\s*test-requires\s*:(.*?)-->", re.S | re.M)


class MarkerError(ValueError):
    """A page's test marker is malformed (a skip without a reason, say)."""


@dataclass(frozen=True)
class Step:
    """One thing the suite does for a page: a block (or its stand-in) or a hidden setup step.

    Attributes:
        lang: "bash", "console" or "python".
        code: what runs (the block's text, or the marker's stand-in).
        line: the line of the page where the block (or marker) starts.
        skip: the reason this block is not run, or None when it runs.
        shown: the block's own text as the reader sees it.
    """

    lang: str
    code: str
    line: int
    skip: str | None = None
    shown: str = ""

    @property
    def where(self) -> str:
        return f"line {self.line} ({self.lang})"


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_page(text: str) -> list[Step]:
    """The steps of one page, in order.

    Args:
        text: the Markdown source.

    Returns:
        One Step per runnable block and per hidden setup marker, in page order.

    Raises:
        MarkerError: a skip marker has no reason, or a stand-in marker is not above a
            runnable block.
    """
    steps: list[Step] = []
    fences = list(_FENCE.finditer(text))
    fence_spans = [(m.start(), m.end()) for m in fences]
    markers = [m for m in _MARKER.finditer(text)
               if not any(a <= m.start() < b for a, b in fence_spans)]
    events = sorted([(m.start(), "marker", m) for m in markers] + [(m.start(), "fence", m) for m in fences],
                    key=lambda e: e[0])
    pending: re.Match[str] | None = None  # a stand-in/skip marker waiting for its block
    for pos, kind, m in events:
        if kind == "marker":
            if pending is not None:
                raise MarkerError(f"line {_line_of(text, pending.start())}: test marker not followed by a block")
            if m.group(1):  # test-setup
                steps.append(Step(m.group(2) or "bash", textwrap.dedent(m.group(3)).strip(), _line_of(text, pos)))
            else:
                pending = m
            continue
        lang, body = m.group(1), m.group(2)
        if pending is not None:
            between = text[pending.end():pos]
            if between.strip():
                raise MarkerError(f"line {_line_of(text, pending.start())}: a test marker must stand right "
                                  "above its block")
            if lang not in RUNNABLE:
                raise MarkerError(f"line {_line_of(text, pending.start())}: test marker above a "
                                  f"'{lang or 'untagged'}' block, which never runs")
            spec = pending.group(3).strip()
            pending = None
            skip = re.fullmatch(r"skip\s*(?:\((.*)\))?", spec, re.S)
            if skip:
                if not (skip.group(1) or "").strip():
                    raise MarkerError(f"line {_line_of(text, pos)}: 'test: skip' needs a reason in brackets")
                steps.append(Step(lang, body, _line_of(text, pos), skip=skip.group(1).strip(), shown=body))
            else:
                steps.append(Step(lang, spec, _line_of(text, pos), shown=body))
        elif lang in RUNNABLE:
            steps.append(Step(lang, body, _line_of(text, pos), shown=body))
    if pending is not None:
        raise MarkerError(f"line {_line_of(text, pending.start())}: test marker not followed by a block")
    return steps


def shell_commands(code: str) -> list[str]:
    """Split shell text into commands: comments and blank lines dropped, `\\` continuations
    joined, a here-document kept whole with the command that opens it."""
    lines = code.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1].rstrip() + " " + lines[i].strip()
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)'?\"?", line)
        if heredoc:
            end = heredoc.group(1)
            body = []
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line, *body, end])
        out.append(line)
    return out


def console_pairs(code: str) -> list[tuple[str, str]]:
    """A console block as (command, expected output) pairs; text before the first `$ ` is an error."""
    pairs: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        elif pairs:
            pairs[-1][1].append(line)
        elif line.strip():
            raise MarkerError(f"console block: output '{line[:40]}' before any '$ ' command")
    return [(cmd, "\n".join(expected)) for cmd, expected in pairs]


def output_matches(expected: str, got: str) -> bool:
    """Whether printed output matches a page's shown output: `...` matches anything (timings,
    paths, long lists), runs of spaces compare equal, leading/trailing blank lines ignored."""
    def norm(s: str) -> str:
        return "\n".join(re.sub(r"[ \t]+", " ", ln).rstrip() for ln in s.strip().splitlines())

    pattern = "".join(".*?" if part == "..." else re.escape(part)
                      for part in re.split(r"(\.\.\.)", norm(expected)))
    return re.fullmatch(pattern, norm(got), re.S) is not None


def requirements(text: str) -> list[str]:
    """What a page's examples need installed (`test-requires` markers): program names, or
    `python:module` for a Python module."""
    return [name for m in _REQUIRES.finditer(text) for name in m.group(1).split()]


def pages(root: Path) -> list[Path]:
    """README.md and every page under docs/ (the site's sources)."""
    return [root / "README.md", *sorted(p for p in (root / "docs").rglob("*.md"))]
