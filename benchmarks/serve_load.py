"""Load on the REST server over loopback: requests/s and p50/p99 latency at several
concurrency levels, torch vs ONNX runtime, micro-batching on (max_batch 32) vs off (1).

    python benchmarks/serve_load.py [--requests 400] [--concurrency 1 8 32]

Trains a small digits CNN first (a few seconds), exports it, then serves it from a uvicorn
server in this process; clients are threads with their own httpx connections. Bounded in
requests and time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import uvicorn
from PIL import Image

import ember
from ember.export import export_onnx
from ember.serve import create_app


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _payloads(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).save(buf, format="PNG")
        out.append({"inputs": {"image": base64.b64encode(buf.getvalue()).decode()}})
    return out


def measure(run_path, runtime: str, max_batch: int, concurrency: int, requests: int) -> dict:  # noqa: ANN001
    app = create_app(run_path, runtime=runtime, max_batch=max_batch, max_wait_ms=2.0 if max_batch > 1 else 0.0)
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    payloads = _payloads(requests)
    latencies: list[float] = []
    local = threading.local()

    def one(body: dict) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        t = time.perf_counter()
        r = local.client.post("/v1/predict", json=body)
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, payloads[: min(20, requests)]))  # warm-up
            latencies.clear()
            start = time.perf_counter()
            list(pool.map(one, payloads))
            elapsed = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    lat = sorted(latencies)
    return {"runtime": runtime, "batching": max_batch > 1, "concurrency": concurrency,
            "requests_per_s": round(requests / elapsed, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = ember.train("digits-cnn", ["train.epochs=2", f"log.runs_dir={tmp}", "log.report=false"], verbose=False)
        export_onnx(run.path)
        results = [measure(run.path, runtime, batch, c, args.requests)
                   for runtime in ("torch", "onnx") for batch in (32, 1) for c in args.concurrency]
    print(json.dumps({"model": "digits-cnn (53K params)", "requests": args.requests, "results": results}, indent=1))


if __name__ == "__main__":
    main()
