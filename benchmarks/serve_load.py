"""Load on the REST server over loopback: requests/s and p50/p99 latency at several
concurrency levels, torch vs ONNX runtime, micro-batching on (max_batch 32) vs off (1).

    python benchmarks/serve_load.py [--requests 400] [--concurrency 1 8 32]
    python benchmarks/serve_load.py --burst [--burst-requests 200] [--burst-images 16]

The burst scenario starts `ember serve` in a child process (so its memory is its own),
fires every request at once, polls /health meanwhile, and reports the 429s, /health p99
under load and the server's peak RSS (VmHWM).

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
from pathlib import Path

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


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def burst(run_path, requests: int, images: int, max_pending: int) -> dict:  # noqa: ANN001
    """`requests` posts of `images` 28x28 images, all at once, against `ember serve --max-pending`."""
    import subprocess
    import sys

    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "ember", "serve", str(run_path), "--port", str(port),
                               "--max-pending", str(max_pending)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        rss_idle = _peak_rss_mb(server.pid)
        rng = np.random.default_rng(0)
        body = {"inputs": []}
        for _ in range(images):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (28, 28)).astype(np.uint8)).save(buf, format="PNG")
            body["inputs"].append({"image": base64.b64encode(buf.getvalue()).decode()})
        health: list[float] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          limits=httpx.Limits(max_connections=requests + 8)) as client, \
                ThreadPoolExecutor(requests) as pool:
            start = time.perf_counter()
            futures = [pool.submit(client.post, "/v1/predict", json=body) for _ in range(requests)]
            while not all(f.done() for f in futures):
                t = time.perf_counter()
                client.get("/health").raise_for_status()
                health.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - start
            codes = [f.result().status_code for f in futures]
        lat = sorted(health) or [float("nan")]
        return {"scenario": "burst", "requests": requests, "images_per_request": images, "max_pending": max_pending,
                "ok": codes.count(200), "429": codes.count(429), "other": len(codes) - codes.count(200) - codes.count(429),
                "seconds": round(elapsed, 2), "health_polls": len(health),
                "health_p50_ms": round(statistics.median(lat) * 1000, 2),
                "health_p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2),
                "server_rss_idle_mb": rss_idle, "server_peak_rss_mb": _peak_rss_mb(server.pid)}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--burst", action="store_true", help="run only the burst scenario")
    p.add_argument("--burst-requests", type=int, default=200)
    p.add_argument("--burst-images", type=int, default=16)
    p.add_argument("--max-pending", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = ember.train("digits-cnn", ["train.epochs=2", f"log.runs_dir={tmp}", "log.report=false"], verbose=False)
        if args.burst:
            result = burst(run.path, args.burst_requests, args.burst_images, args.max_pending)
            print(json.dumps({"model": "digits-cnn (53K params)", **result}, indent=1))
            return
        export_onnx(run.path)
        results = [measure(run.path, runtime, batch, c, args.requests)
                   for runtime in ("torch", "onnx") for batch in (32, 1) for c in args.concurrency]
    print(json.dumps({"model": "digits-cnn (53K params)", "requests": args.requests, "results": results}, indent=1))


if __name__ == "__main__":
    main()
