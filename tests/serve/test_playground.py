"""The playground end to end in headless Chromium (Debian's, driven by Playwright): draw a
digit, submit, read the label shown; the screenshot is kept as a test artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import ember
from ember.serve import create_app
from tests.serve.helpers import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_page_is_served_without_a_key(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    run = ember.train("iris-mlp", ["train.epochs=2", f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    with TestClient(create_app(run.path, api_key="k")) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="send"' in page.text and "petal length" in page.text
        assert "http://" not in page.text and "<script src" not in page.text


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_draw_a_digit_in_chromium(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")

    run = ember.train("digits-cnn", ["train.epochs=4", f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    with serving(create_app(run.path)) as port, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                    ignore_default_args=["--headless"], headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        box = page.locator("#pad").bounding_box()
        x0, y0 = box["x"], box["y"]
        # a "1": one vertical stroke down the middle
        page.mouse.move(x0 + 140, y0 + 40)
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(x0 + 140, y0 + 40 + step * 20)
        page.mouse.up()
        page.click("#send")
        page.wait_for_selector("#label", timeout=20000)
        label = page.inner_text("#label")
        page.wait_for_selector("#saliency[data-ready='1']", timeout=20000)  # the saliency overlay
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground.png"))
        browser.close()
    assert label == "1"  # one vertical stroke
    assert (ARTIFACTS / "playground.png").stat().st_size > 1000
