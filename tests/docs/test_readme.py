"""The README stays a front page: short, and linking every guide of the site's navigation."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _guides() -> list[str]:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    [section] = [item["Guides"] for item in nav if isinstance(item, dict) and "Guides" in item]
    return [next(iter(entry.values())) for entry in section]


def test_readme_is_short_and_links_every_guide() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    linked = set(re.findall(r"\]\(docs/([^)#]+)\)", text))
    guides = _guides()
    assert len(guides) >= 15
    assert not [g for g in guides if g not in linked], "README.md misses a link to a guide"
    assert {"getting-started.md", "measured.md"} <= linked
    for page in linked:
        assert (ROOT / "docs" / page).is_file(), page
