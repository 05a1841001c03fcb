"""Section HTML planted in a run folder reaches report.html only through the allow-list:
no script, event handler, javascript: link, iframe, object or remote image survives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ember.cli import main
from ember.report.sanitize import clean_section

PNG = "data:image/png;base64,iVBORw0KGgo="
PLANTED = (f'<p class="muted">kept text</p><table><tr><td>kept cell</td></tr></table><img alt="ok" src="{PNG}">'
           '<script>alert("planted")</script><img src="x" onerror="alert(1)"><a href="javascript:alert(2)">l</a>'
           '<iframe src="https://evil.example"></iframe><object data="evil.swf"></object>'
           '<p onmouseover="alert(3)" style="background:url(javascript:alert(4))">hover</p>'
           '<img src="https://evil.example/track.png"><svg><script>alert(5)</script></svg>')


def test_clean_section_keeps_ember_markup_and_drops_active_content() -> None:
    out = clean_section(PLANTED)
    for kept in ("kept text", "<td>kept cell</td>", f'src="{PNG}"', 'class="muted"'):
        assert kept in out
    for dropped in ("<script", "alert", "onerror", "onmouseover", "javascript:", "<iframe", "<object", "evil",
                    "style=", "<svg"):
        assert dropped not in out, dropped


@pytest.mark.parametrize("tool", ["explain", "compression", "audit"])
def test_report_pastes_no_planted_script(tool: str, iris_run: Path, copy_run: Callable[[Path], Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(iris_run)
    (run / tool).mkdir(exist_ok=True)
    (run / tool / "section.html").write_text(PLANTED)
    assert main(["report", str(run)]) == 0, capsys.readouterr().err
    page = (run / "report.html").read_text()
    assert "kept cell" in page
    for dropped in ("alert", "onerror", "onmouseover", "javascript:", "<iframe", "<object", "evil.example"):
        assert dropped not in page, dropped
