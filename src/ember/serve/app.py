"""The REST server: a FastAPI app over a finished run, with dynamic micro-batching.

    GET  /health          liveness (no key needed)
    GET  /v1/model        task, classes, input schema, run
    POST /v1/predict      {"inputs": item | [items]}: numbers, base64 images, base64 WAV/FLAC or text
    POST /v1/generate     language models: text, or server-sent events with "stream": true
    POST /v1/recommend    recommendation runs: {"user": "42", "k": 10} -> the top-k unseen items
    GET  /metrics         Prometheus text: requests, errors, latency, batch sizes

Request items become tensors in `ember.serve.request_inputs`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    StreamingResponse,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ember.errors import ConfigError, EmberError
from ember.serve.batcher import MicroBatcher
from ember.serve.guard import Admission, AdmissionLimit, BodyLimit, KeyAndMetrics, validation_errors
from ember.serve.request_inputs import PixelBudget, parse_item

__all__ = ["create_app"]


class PredictRequest(BaseModel):
    inputs: Any = Field(..., description="one item or a list: numbers, {'image': base64}, or text")


class ErrorBody(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed input; the message says what was expected"},
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    413: {"model": ErrorBody, "description": "request body, item count or image pixels over the limit"},
    429: {"model": ErrorBody, "description": "too many requests in progress; retry after `Retry-After` s"},
    503: {"model": ErrorBody, "description": "the server is shutting down"},
}


class GenerateRequest(BaseModel):
    prompt: str = ""
    max_new_tokens: int = Field(100, ge=1, le=4096)
    # allow_inf_nan=False: NaN passes every ge/le comparison and reached torch as a 500.
    temperature: float = Field(0.8, ge=0, le=100, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    stop: list[str] | None = None
    repetition_penalty: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    stream: bool = False


class RecommendRequest(BaseModel):
    user: str | int = Field(..., description="a user id as in the run's interactions file")
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True


def _runner(loaded: Any, runtime: str) -> Any:
    if runtime == "torch":
        model = loaded.model.eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x).float()

        return run
    path = loaded.run.path / "export" / "model.onnx"
    if not path.is_file():
        raise ConfigError(f"--runtime onnx: '{loaded.run.path}' has no export/model.onnx; run: ember export {loaded.run.path}")
    from ember.export.onnx import onnx_session

    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])




def create_app(run_dir: str | Path, runtime: str = "torch", api_key: str | None = None, max_batch: int = 32,
               max_wait_ms: float = 5.0, max_body_bytes: int = 2 * 2**20, max_pending: int = 64,
               max_image_pixels: int = 4096 * 4096, max_request_pixels: int = 32 * 2**20) -> FastAPI:
    """Build the app for a run (loaded once).

    Args:
        max_body_bytes: request bodies over this (counted as received) get 413.
        max_pending: work requests (predict, explain, generate) in progress at once; more get 429.
        max_image_pixels, max_request_pixels: pixel budgets checked from image headers before
            decoding; over either, 413.
    """
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from ember.loading import load_run, load_tokenizer

    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"--runtime: got '{runtime}'; valid: torch, onnx")
    if max_batch < 1 or max_wait_ms < 0:
        raise ConfigError("--max-batch must be >= 1 and --max-wait-ms >= 0")
    loaded = load_run(run_dir)
    tokenizer = None
    if loaded.info.input_kind == "tokens":
        tokenizer = load_tokenizer(loaded.run.path)
    registry = CollectorRegistry()
    requests = Counter("ember_requests_total", "HTTP requests", ["path"], registry=registry)
    errors = Counter("ember_errors_total", "HTTP responses with status >= 400", ["path", "status"], registry=registry)
    latency = Histogram("ember_request_seconds", "request latency", ["path"], registry=registry)
    batch_sizes = Histogram("ember_batch_size", "rows per model batch", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    batcher = MicroBatcher(_runner(loaded, runtime), max_batch, max_wait_ms, batch_sizes.observe)
    admission = Admission(max_pending)
    decoders = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="ember-decode")
    schedulers: list[Any] = []  # the OpenAI routes' continuous-batching scheduler, for LM runs

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        for s in schedulers:
            s.start()
        yield
        admission.draining = True  # new requests get 503 while the batches in flight finish
        await batcher.stop()
        for s in schedulers:
            await run_in_threadpool(s.stop)
        decoders.shutdown(wait=False)

    app = FastAPI(title="Ember model server", version="1", description=f"Serving {loaded.run.path.name}",
                  lifespan=lifespan)
    app.state.admission = admission
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(RequestValidationError, validation_errors)
    # Added innermost first: the API-key/metrics guard (added below) wraps the admission
    # bound, which wraps the body limit, so a 429 is answered before any body is read.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(AdmissionLimit, admission=admission)

    if loaded.info.task == "lm" and runtime == "torch" and hasattr(loaded.model, "new_cache"):
        from ember.serve.openai_api import mount_openai

        schedulers.append(mount_openai(app, loaded, tokenizer, max_batch, max_pending))
        app.state.scheduler = schedulers[0]

    def budget() -> PixelBudget:
        return PixelBudget(max_image_pixels, max_request_pixels)

    def observe(path: str, status: int, seconds: float) -> None:
        known = path if path in {r.path for r in app.routes} else "other"  # bounded label values
        requests.labels(known).inc()
        latency.labels(known).observe(seconds)
        if status >= 400:
            errors.labels(known, str(status)).inc()

    app.add_middleware(KeyAndMetrics, api_key=api_key, observe=observe)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> str:
        from ember.serve.playground import playground_html

        return playground_html(loaded.info, loaded.run.path.name)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", responses={401: ERRORS[401]})
    async def model_info() -> dict[str, Any]:
        info = loaded.info
        return {"run": loaded.run.path.name, "recipe": loaded.config.recipe, "task": info.task,
                "input_kind": info.input_kind, "input_shape": list(info.input_shape),
                "classes": list(info.class_names), "features": list(info.feature_names), "runtime": runtime,
                "parent": json.loads((loaded.run.path / "compression.json").read_text()).get("parent")
                if (loaded.run.path / "compression.json").is_file() else None}

    @app.post("/v1/predict", responses=ERRORS)
    async def predict(body: PredictRequest) -> dict[str, Any]:
        items = body.inputs if isinstance(body.inputs, list) and not (
            loaded.info.input_kind in ("tabular", "series") and body.inputs and not isinstance(body.inputs[0], (list, dict))
        ) else [body.inputs]
        if not items:
            raise HTTPException(400, "inputs is empty")
        if len(items) > 1024:
            raise HTTPException(413, "at most 1024 items per request")
        pixels = budget()
        # Decoding is CPU work: off the event loop, in a pool no wider than the machine, so the
        # loop thread is not starved of the GIL and /health stays fast under a burst.
        parts = await asyncio.get_running_loop().run_in_executor(
            decoders, lambda: [parse_item(i, loaded, tokenizer, pixels) for i in items])
        # Texts of different lengths run each alone, so no padding changes an answer (and a
        # language model's per-position outputs, of different lengths, are never concatenated).
        groups = [torch.cat(parts)] if len({tuple(p.shape[1:]) for p in parts}) == 1 else parts
        predictions: list[Any] = []
        for group in groups:
            out = await batcher.submit(group)
            if not torch.isfinite(out).all():  # never a label with null probabilities
                raise HTTPException(422, "inputs: the model's output is not finite for these values; "
                                         "use numbers near the training range")
            predictions += loaded.task.predict(out)
        return {"predictions": predictions}

    @app.post("/v1/generate", response_model=None, responses=ERRORS)
    async def generate(body: GenerateRequest) -> Any:
        if loaded.info.task != "lm" or runtime != "torch":
            raise HTTPException(400, "generate needs a language-model run served with --runtime torch")
        from starlette.concurrency import iterate_in_threadpool

        from ember.models.decoding import generate_text

        pieces = generate_text(loaded.model, tokenizer, loaded.info, body.prompt, body.max_new_tokens,
                               body.temperature, body.top_k, body.top_p, body.seed, body.stop,
                               repetition_penalty=body.repetition_penalty,
                               presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty)
        if not body.stream:
            text = "".join([p async for p in iterate_in_threadpool(pieces)])
            return {"prompt": body.prompt, "text": text}

        async def events() -> Any:
            async for piece in iterate_in_threadpool(pieces):
                yield f"data: {json.dumps({'text': piece})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/explain", responses=ERRORS)
    async def explain(body: PredictRequest) -> dict[str, Any]:
        """Saliency (|d score / d pixel|) for one image, toward the predicted class, and the input
        tensor the model was given (de-normalised, as a PNG at the model's input size)."""
        if loaded.info.input_kind != "image" or runtime != "torch":
            raise HTTPException(400, "explain serves saliency for image models with --runtime torch")
        item = body.inputs[0] if isinstance(body.inputs, list) and body.inputs else body.inputs
        from ember.data.images import display_png
        from ember.explain import attribute

        def saliency() -> dict[str, Any]:
            x = parse_item(item, loaded, tokenizer, budget())
            with torch.no_grad():
                target = int(loaded.model(x).argmax(-1)[0])
            attr = attribute("saliency", loaded.model, loaded.info, x, target)
            peak = float(attr.values.max()) or 1.0
            label = loaded.info.class_names[target] if loaded.info.class_names else str(target)
            return {"label": label, "saliency": (attr.values / peak).round(4).tolist(),
                    "input": display_png(x, loaded.info)}

        return await run_in_threadpool(saliency)

    recommender: list[Any] = []  # built on the first request: it reads the run's interactions

    @app.post("/v1/recommend", responses=ERRORS)
    async def recommend(body: RecommendRequest) -> dict[str, Any]:
        """The `k` best items for a user that the user has not interacted with yet."""
        if loaded.info.input_kind != "interactions" or runtime != "torch":
            raise HTTPException(400, "recommend needs a recommendation run served with --runtime torch")
        from starlette.concurrency import run_in_threadpool

        from ember.recommend.topk import Recommender

        def top() -> list[dict[str, Any]]:
            if not recommender:
                recommender.append(Recommender(loaded))
            return recommender[0].top_k(body.user, body.k, body.exclude_seen)

        try:
            items = await run_in_threadpool(top)
        except EmberError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"user": str(body.user), "items": items}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, 401: ERRORS[401]})
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    return app
