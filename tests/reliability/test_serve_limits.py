"""The server under abuse: bodies counted as received, bounded work, pixel budgets, big
integers, API keys from the environment or a file, compared in constant time."""

from __future__ import annotations

import asyncio
import base64
import io
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import ember.serve.app as serve_app
import ember.serve.guard as guard
from ember.errors import ConfigError
from ember.serve import create_app
from ember.serve.guard import BodyLimit, exposure_warning, key_matches, resolve_api_key
from tests.reliability.images import png_header_claiming
from tests.serve.helpers import free_port, serving

ROW = [5.1, 3.5, 1.4, 0.2]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _png(side: int) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side)).astype(np.uint8)).save(buf, "PNG")
    return _b64(buf.getvalue())


def test_chunked_body_over_the_limit_is_refused(iris_run: Path) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the old check never saw a size
        yield b'{"inputs": [' + b"1.0, " * 2000
        yield b"1.0]}"

    with TestClient(create_app(iris_run, max_body_bytes=4000)) as client:
        r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "body over 4000 bytes" in r.json()["detail"]
        assert client.post("/v1/predict", json={"inputs": ROW}).status_code == 200


def test_body_limit_stops_reading_once_over() -> None:
    """An endless chunked body: the middleware stops pulling chunks just past the limit."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def app(scope: dict, receive_: object, send: object) -> None:
        while True:  # a framework reading the whole body
            await receive_()  # type: ignore[operator]

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodyLimit(app, max_bytes=10 * 1024)({"type": "http", "headers": []}, receive, send))
    assert pulled == 11
    assert sent[0]["status"] == 413


def test_bounded_work_429_with_retry_after_and_503_while_draining(iris_run: Path) -> None:
    app = create_app(iris_run, max_pending=2)
    with TestClient(app) as client:
        app.state.admission.pending = 2  # two requests in progress already
        busy = client.post("/v1/predict", json={"inputs": ROW})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200  # never queued behind work
        app.state.admission.pending = 0
        assert client.post("/v1/predict", json={"inputs": ROW}).status_code == 200
        app.state.admission.draining = True
        closing = client.post("/v1/predict", json={"inputs": ROW})
        assert closing.status_code == 503 and "retry-after" in closing.headers
        app.state.admission.draining = False


def test_burst_gets_429s_and_health_stays_up(digits_run: Path) -> None:
    """A real server: 48 concurrent requests of 16 images against a bound of 4."""
    body = {"inputs": [{"image": _png(64)}] * 16}
    health: list[int] = []
    with serving(create_app(digits_run, max_pending=4)) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client, ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(client.post, "/v1/predict", json=body) for _ in range(48)]
        while not all(f.done() for f in futures):
            health.append(client.get("/health").status_code)
        codes = [f.result().status_code for f in futures]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0
    assert health and set(health) == {200}


def test_decoding_runs_off_the_event_loop(digits_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop: list[bool] = []
    real = serve_app.parse_item

    def spy(*args: object) -> object:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(serve_app, "parse_item", spy)
    with TestClient(create_app(digits_run)) as client:
        assert client.post("/v1/predict", json={"inputs": {"image": _png(8)}}).status_code == 200
        assert client.post("/v1/explain", json={"inputs": {"image": _png(8)}}).status_code == 200
    assert on_loop == [False, False]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bombs are the point
@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_image_bombs_and_pixel_budgets_are_4xx(digits_run: Path, path: str) -> None:
    bomb = _b64(png_header_claiming(40000, 40000))  # Pillow's DecompressionBombError
    big = _b64(png_header_claiming(13000, 13000))  # under Pillow's limit, ~170 MB to decode
    with TestClient(create_app(digits_run, max_image_pixels=64 * 64, max_request_pixels=3 * 64 * 64)) as client:
        for image in (bomb, big):
            r = client.post(path, json={"inputs": {"image": image}})
            assert r.status_code == 413, r.text
            assert "limit" in r.json()["detail"]
        garbage = client.post(path, json={"inputs": {"image": _b64(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)}})
        assert garbage.status_code == 400
        if path == "/v1/predict":
            ok = client.post(path, json={"inputs": [{"image": _png(64)}] * 3})
            assert ok.status_code == 200
            over = client.post(path, json={"inputs": [{"image": _png(64)}] * 4})
            assert over.status_code == 413 and "pixel budget" in over.json()["detail"]


def test_huge_integer_in_a_table_row_is_400(iris_run: Path) -> None:
    body = b'{"inputs": [1' + b"0" * 400 + b', 3.5, 1.4, 0.2]}'
    with TestClient(create_app(iris_run)) as client:
        r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "too large" in r.json()["detail"]
        named = client.post("/v1/predict", content=b'{"inputs": {"sepal length (cm)": 1' + b"0" * 400 + b"}}",
                            headers={"content-type": "application/json"})
        assert 400 <= named.status_code < 500


def test_api_key_sources(tmp_path: Path) -> None:
    assert resolve_api_key(None, None, {"EMBER_API_KEY": "from-env"}) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key(None, key_file, {"EMBER_API_KEY": "from-env"}) == "from-file"
    assert resolve_api_key("flag", None, {"EMBER_API_KEY": "from-env"}) == "flag"
    assert resolve_api_key(None, None, {}) is None
    for bad in (lambda: resolve_api_key(None, tmp_path / "missing", {}),
                lambda: resolve_api_key("a", key_file, {}),
                lambda: resolve_api_key(None, None, {"EMBER_API_KEY": "  "})):
        with pytest.raises(ConfigError):
            bad()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_api_key(None, tmp_path / "empty", {})


def test_key_is_compared_in_constant_time_and_bearer_any_case(iris_run: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = guard.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", spy)
    assert key_matches({"authorization": "bearer s3cret"}, "s3cret")
    assert key_matches({"authorization": "BEARER  s3cret "}, "s3cret")
    assert not key_matches({"authorization": "Basic s3cret"}, "s3cret")
    assert not key_matches({}, "s3cret")
    assert calls and all(isinstance(a, bytes) for a, _ in calls)
    with TestClient(create_app(iris_run, api_key="s3cret")) as client:
        for scheme in ("bearer", "Bearer", "BEARER"):
            r = client.post("/v1/predict", json={"inputs": ROW}, headers={"Authorization": f"{scheme} s3cret"})
            assert r.status_code == 200
        assert client.post("/v1/predict", json={"inputs": ROW},
                           headers={"Authorization": "bearer wrong"}).status_code == 401


def test_exposed_without_key_warns_loudly(iris_run: Path, tmp_path: Path) -> None:
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("localhost", None) is None
    assert exposure_warning("0.0.0.0", "k") is None
    assert "WITHOUT an API key" in (exposure_warning("0.0.0.0", None) or "")
    assert "WITHOUT an API key" in (exposure_warning("::", None) or "")
    # The CLI prints it before serving; the key never has to be on the command line.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", str(iris_run), "--host", "0.0.0.0",
                             "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline() + proc.stderr.readline()  # type: ignore[union-attr]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "WITHOUT an API key" in first
