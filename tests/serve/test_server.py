"""The REST server: endpoints, micro-batching that answers each client with its own rows,
API key, body limit, malformed input as 4xx, streamed generation, Prometheus metrics."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import ember
from ember.serve import create_app
from tests.serve.helpers import free_port, serving, wait_healthy


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    common = [f"log.runs_dir={root}", "log.report=false"]
    return {
        "digits": ember.train("digits-cnn", ["train.epochs=2", "data.limit=300", *common], verbose=False).path,
        "iris": ember.train("iris-mlp", ["train.epochs=3", *common], verbose=False).path,
        "gpt": ember.train("stdlib-char-gpt", ["data.max_chars=120000", "data.block_size=32", "model.n_layer=1",
                                               "model.n_embd=32", "train.max_steps=5", *common], verbose=False).path,
    }


def _png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_endpoints_and_predict(runs: dict[str, Path]) -> None:
    with TestClient(create_app(runs["digits"])) as client:
        assert client.get("/health").json() == {"status": "ok"}
        meta = client.get("/v1/model").json()
        assert meta["task"] == "classification" and len(meta["classes"]) == 10
        img = _png(np.random.default_rng(0).integers(0, 255, (8, 8)))
        one = client.post("/v1/predict", json={"inputs": {"image": img}}).json()["predictions"]
        many = client.post("/v1/predict", json={"inputs": [{"image": img}, img]}).json()["predictions"]
        assert len(one) == 1 and len(many) == 2 and many[0] == one[0]
        assert "openapi" in client.get("/openapi.json").json()
        for bad in ({"inputs": {"image": "%%%"}}, {"inputs": [1, 2]}, {"wrong": 1}, {"inputs": []}):
            r = client.post("/v1/predict", json=bad)
            assert 400 <= r.status_code < 500 and r.json()["detail"]
        sal = client.post("/v1/explain", json={"inputs": {"image": img}}).json()
        assert sal["label"] == one[0]["label"] and np.asarray(sal["saliency"]).shape == (8, 8)
        assert np.asarray(sal["saliency"]).max() == 1.0
        assert Image.open(io.BytesIO(base64.b64decode(sal["input"]))).size == (8, 8)  # what the model saw
        assert client.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
        assert client.post("/v1/generate", json={"prompt": "x"}).status_code == 400
        text = client.get("/metrics").text
        assert "ember_requests_total" in text and "ember_batch_size_bucket" in text and "ember_errors_total" in text


def test_tabular_api_key_and_body_limit(runs: dict[str, Path]) -> None:
    with TestClient(create_app(runs["iris"], api_key="s3cret", max_body_bytes=2000)) as client:
        row = [5.1, 3.5, 1.4, 0.2]
        assert client.post("/v1/predict", json={"inputs": row}).status_code == 401
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/predict", json={"inputs": row}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == "setosa"
        named = client.post("/v1/predict", headers={"Authorization": "Bearer s3cret"},
                            json={"inputs": {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5,
                                             "petal length (cm)": 1.4, "petal width (cm)": 0.2}})
        assert named.json()["predictions"] == ok.json()["predictions"]
        big = client.post("/v1/predict", json={"inputs": [row] * 200}, headers={"X-API-Key": "s3cret"})
        assert big.status_code == 413
        short = client.post("/v1/predict", json={"inputs": [1.0]}, headers={"X-API-Key": "s3cret"})
        assert short.status_code == 400 and "expected 4 numbers" in short.json()["detail"]


def test_generate_and_stream(runs: dict[str, Path]) -> None:
    with TestClient(create_app(runs["gpt"])) as client:
        plain = client.post("/v1/generate", json={"prompt": "def ", "max_new_tokens": 12, "temperature": 0}).json()
        assert len(plain["text"]) == 12
        with client.stream("POST", "/v1/generate", json={"prompt": "def ", "max_new_tokens": 12, "temperature": 0,
                                                          "stream": True}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["text"] for e in events[:-1]) == plain["text"]
        assert client.post("/v1/generate", json={"prompt": "x", "top_p": 3}).status_code == 422  # schema violation
        pred = client.post("/v1/predict", json={"inputs": "import os"}).json()["predictions"][0]
        assert len(pred["next_token_ids"]) == 5


def test_concurrent_clients_get_their_own_answers(runs: dict[str, Path]) -> None:
    """A real uvicorn server on loopback; 64 concurrent requests, each checked against the model."""
    rng = np.random.default_rng(1)
    rows = [[float(v) for v in rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.7, 0.7])] for _ in range(64)]
    app = create_app(runs["iris"], max_batch=16, max_wait_ms=20)
    with serving(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client, \
            ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: client.post("/v1/predict", json={"inputs": r}).json(), rows))
        metrics = client.get("/metrics").text
    loaded = ember.load_run(runs["iris"])
    x = (torch.tensor(rows) - torch.tensor(loaded.info.mean)) / torch.tensor(loaded.info.std)
    with torch.no_grad():
        expected = loaded.task.predict(loaded.model(x))
    for got, want in zip(answers, expected):
        assert got["predictions"][0]["label"] == want["label"]
        for name, p in want["probabilities"].items():
            assert got["predictions"][0]["probabilities"][name] == pytest.approx(p, abs=1e-5)
    # batching happened: some model batch held more than one request
    counts = {line.split("le=")[1].split("}")[0].strip('"'): float(line.split()[-1])
              for line in metrics.splitlines() if line.startswith("ember_batch_size_bucket")}
    assert counts["1.0"] < counts["+Inf"]


def test_onnx_runtime_matches_torch(runs: dict[str, Path]) -> None:
    from ember.errors import ConfigError
    from ember.export import export_onnx

    with pytest.raises(ConfigError, match="ember export"):
        create_app(runs["iris"], runtime="onnx")
    export_onnx(runs["iris"])
    row = [6.3, 2.9, 5.6, 1.8]
    with TestClient(create_app(runs["iris"], runtime="onnx")) as onnx_client, TestClient(create_app(runs["iris"])) as torch_client:
        a = onnx_client.post("/v1/predict", json={"inputs": row}).json()["predictions"][0]
        b = torch_client.post("/v1/predict", json={"inputs": row}).json()["predictions"][0]
    assert a["label"] == b["label"]
    for name in a["probabilities"]:
        assert a["probabilities"][name] == pytest.approx(b["probabilities"][name], abs=1e-4)


def test_cli_serve_starts_and_stops_gracefully(runs: dict[str, Path]) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import run_cli

    bad = run_cli("serve", runs["iris"], "--runtime", "tensorrt")
    assert bad.returncode == 2 and "valid: torch, onnx" in bad.stderr
    bad = run_cli("serve", runs["iris"], "--drain-s", "0")
    assert bad.returncode == 2 and "--drain-s" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("serve", runs["iris"], "--header-timeout-s", "nan")
    assert bad.returncode == 2 and "--header-timeout-s" in bad.stderr and "Traceback" not in bad.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", str(runs["gpt"]), "--port", str(port),
                             "--drain-s", "600",  # finishing in flight is the point, not this machine's speed
                             "--header-timeout-s", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result: dict[str, httpx.Response] = {}
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        ready = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert ready[0].strip() == f"serving on http://127.0.0.1:{port}", ready
        assert f"http://127.0.0.1:{port}/" in ready[1] and f"http://127.0.0.1:{port}/docs" in ready[2], ready
        # The same port again: one line naming the port, exit 2, before any model loads.
        busy = run_cli("serve", runs["iris"], "--port", str(port))
        assert busy.returncode == 2 and f"--port {port}" in busy.stderr and "already in use" in busy.stderr
        assert "Traceback" not in busy.stderr and len(busy.stderr.strip().splitlines()) == 1, busy.stderr
        # A slowloris client: headers begun, never finished; the server closes it after 1 s.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow_client:
            slow_client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            assert slow_client.recv(1) == b""  # closed by the server, not by the 10 s client timeout
            assert time.monotonic() - t0 < 8
        # A long generation is in flight when SIGTERM arrives: it must still complete.
        slow = threading.Thread(target=lambda: result.setdefault("r", httpx.post(
            f"http://127.0.0.1:{port}/v1/generate", json={"prompt": "def ", "max_new_tokens": 3000, "temperature": 0},
            timeout=600)))
        slow.start()
        time.sleep(0.3)
        assert slow.is_alive()  # still generating
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    slow.join(timeout=600)
    assert result["r"].status_code == 200 and len(result["r"].json()["text"]) == 3000
    # uvicorn re-raises the signal after its graceful shutdown, so the exit is "terminated", not a crash
    assert proc.returncode in (0, -signal.SIGTERM), proc.stderr.read()


def test_texts_of_different_lengths_are_answered_each_as_alone(runs: dict[str, Path]) -> None:
    with TestClient(create_app(runs["gpt"]), raise_server_exceptions=False) as client:
        short, long = "def f", "import os\nimport sys\n"
        both = client.post("/v1/predict", json={"inputs": [short, long]})
        assert both.status_code == 200, both.text
        alone = [client.post("/v1/predict", json={"inputs": [x]}).json()["predictions"][0] for x in (short, long)]
    assert both.json()["predictions"] == alone
