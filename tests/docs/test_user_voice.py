"""User docs speak of the project: no issue numbers, sessions, helpers or internal budgets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
INTERNAL = re.compile(r"issue #\d+|\bthis session\b|\bsession's\b|\bthe lead\b|\bhelpers? (?:agent|wrote)|"
                      r"closing note|was lent|device budget", re.IGNORECASE)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_carry_no_internal_notes(page: Path) -> None:
    hits = [f"{page.name}:{n}: {line.strip()[:100]}" for n, line in enumerate(page.read_text().splitlines(), 1)
            if INTERNAL.search(line)]
    assert not hits, "\n".join(hits)
