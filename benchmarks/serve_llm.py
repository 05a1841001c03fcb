"""Continuous batching under load: 8 concurrent streaming clients vs the same 8 requests
one after another, against a real `ember serve` (OpenAI /v1/completions, stream=true).

    python benchmarks/serve_llm.py [--clients 8] [--tokens 64] [--run runs/<imported SmolLM2 run>]

Trains a small char GPT first (a few seconds) unless --run is given; an imported SmolLM2
run is benchmarked too when runs/ holds one (a folder whose name contains "smollm2"),
skipped otherwise. Prints JSON: aggregate completion tokens/s each way and their ratio.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

import ember


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stream(url: str, prompt: str, tokens: int) -> int:
    """One streamed completion; returns its completion_tokens (from the usage chunk)."""
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0.8, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}
    used = 0
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    used = int(usage["completion_tokens"])
    return used


def bench(run: Path, clients: int, tokens: int) -> dict[str, Any]:
    port = _port()
    env = {**os.environ, "PYTHONPATH": str(Path(ember.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "ember", "serve", str(run), "--port", str(port),
                             "--max-batch", str(clients)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        prompts = [f"def f{i}(x):\n    " for i in range(clients)]
        _stream(url, prompts[0], 4)  # warm-up
        t0 = time.perf_counter()
        seq = sum(_stream(url, p, tokens) for p in prompts)
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            conc = sum(pool.map(lambda p: _stream(url, p, tokens), prompts))
        t_conc = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"run": run.name, "clients": clients, "tokens_per_request": tokens,
            "sequential_tokens_per_s": round(seq / t_seq, 1), "concurrent_tokens_per_s": round(conc / t_conc, 1),
            "ratio": round((conc / t_conc) / (seq / t_seq), 2), "sequential_s": round(t_seq, 2),
            "concurrent_s": round(t_conc, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--run", type=Path, default=None)
    args = ap.parse_args()
    runs = [args.run] if args.run else []
    if not runs:
        root = Path(tempfile.mkdtemp())
        runs.append(ember.train("stdlib-char-gpt", ["data.max_chars=200000", "data.block_size=256", "model.n_layer=6",
                                                    "model.n_embd=384", "train.max_steps=5", f"log.runs_dir={root}",
                                                    "log.report=false"], verbose=False).path)
        runs += sorted(p for p in Path("runs").glob("*") if "smollm2" in p.name.lower() and p.is_dir())[:1]
    results = [bench(r, args.clients, args.tokens) for r in runs]
    if len(results) == 1 and not args.run:
        results.append({"run": "smollm2", "skipped": "no imported SmolLM2 run under runs/"})
    print(json.dumps({"benchmark": "serve_llm", "results": results}, indent=2))


if __name__ == "__main__":
    main()
