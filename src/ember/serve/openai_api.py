"""OpenAI-compatible endpoints for language-model runs, over the continuous-batching scheduler.

    GET  /v1/models             the run, as one model
    POST /v1/completions        {"prompt": ..., "stream": bool, ...}
    POST /v1/chat/completions   {"messages": [...], "stream": bool, ...}

Streaming answers are server-sent events in OpenAI's chunk format ending with `data: [DONE]`.
Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from ember.chat_format import (
    FALLBACK_ROLES,
    TEMPLATE_FILES,
    end_of_turn_ids,
    find_chat_template,
    format_chat,
)
from ember.chat_format import message_text as _text
from ember.serve.continuous import GenRequest, QueueFull, Scheduler

# format_chat and find_chat_template live in ember.chat_format (shared with `ember chat`).
__all__ = ["format_chat", "find_chat_template", "mount_openai", "OPENAI_PATHS", "FALLBACK_ROLES",
           "TEMPLATE_FILES"]

OPENAI_PATHS = frozenset({"/v1/completions", "/v1/chat/completions"})


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)  # NaN passes ge/le otherwise
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    # Beyond OpenAI's fields, as vLLM and llama.cpp's servers accept them:
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    repetition_penalty: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)


class CompletionRequest(_Sampling):
    prompt: str | list[str] = ""


class ChatRequest(_Sampling):
    messages: list[Message] = Field(..., min_length=1)


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response in OpenAI's error shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def mount_openai(app: FastAPI, loaded: Any, tokenizer: Any, max_batch: int, max_queue: int) -> Scheduler:
    """Add the OpenAI routes for an LM run; returns the scheduler (start/stop it in the lifespan)."""
    info = loaded.info
    vocab = int(info.extra.get("vocab_size", info.num_outputs))
    max_len = int(getattr(loaded.model, "block_size", info.input_shape[0]))
    template = find_chat_template(loaded.run.path)
    ends = end_of_turn_ids(template, tokenizer) if template else None  # ChatML's <|im_end|> decodes to nothing
    sched = Scheduler(loaded.model, tokenizer, vocab, max_len, max_batch=max_batch, max_queue=max_queue,
                      eos_ids=ends)
    model_id = loaded.run.path.name
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path not in OPENAI_PATHS:  # the rest of the server keeps FastAPI's 422
            return await request_validation_exception_handler(request, exc)
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}", param=where)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                            "owned_by": "ember", "active_slots": sched.active,
                                            "max_batch": sched.max_batch}]}

    async def serve(request: Request, body: _Sampling, prompt: str, chat: bool) -> Any:
        if getattr(request.app.state, "admission", None) is not None and request.app.state.admission.draining:
            return error(503, "server is shutting down; retry on another instance", "server_error")
        if body.n != 1:
            return error(400, f"n={body.n}: this server returns one choice per request; send n=1", param="n")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4:
            return error(400, f"stop: at most 4 sequences, got {len(stop)}", param="stop")
        try:
            ids = tokenizer.encode(prompt)
        except (KeyError, ValueError) as exc:
            return error(400, f"the prompt has text this model's tokenizer cannot encode ({exc})", param="prompt")
        req = GenRequest(list(ids), body.max_completion_tokens or body.max_tokens or 16, body.temperature,
                         body.top_p, body.seed, stop, body.top_k, body.repetition_penalty,
                         body.presence_penalty, body.frequency_penalty)
        try:
            sched.submit(req)
        except QueueFull:
            return error(429, f"server busy: {sched.max_batch} slots and {sched.max_queue} queued requests; "
                         "retry later", "rate_limit_exceeded", headers={"Retry-After": "1"})
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        obj = "chat.completion" if chat else "text_completion"

        def usage() -> dict[str, int]:
            p, c = len(req.prompt_ids), len(req.completion_ids)
            return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        if not body.stream:
            parts: list[str] = []
            try:
                while True:
                    kind, value = await req.events.get()
                    if kind == "text":
                        parts.append(value)
                    elif kind == "error":
                        return error(500, f"generation failed: {value}", "server_error")
                    else:
                        break
            finally:
                req.cancel()  # a client gone before the end frees its slot
            text = "".join(parts)
            choice: dict[str, Any] = {"index": 0, "finish_reason": value, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            return {"id": rid, "object": obj, "created": int(time.time()), "model": model_id,
                    "choices": [choice], "usage": usage()}

        include_usage = bool((body.stream_options or {}).get("include_usage"))
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
            c: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                c["delta"] = ({"role": "assistant", "content": ""} if first else
                              ({"content": delta} if delta is not None else {}))
            else:
                c["text"] = delta or ""
            payload: dict[str, Any] = {"id": rid, "object": chunk_obj, "created": int(time.time()),
                                       "model": model_id, "choices": [c]}
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                if chat:
                    yield chunk(None, None, first=True)
                while True:
                    kind, value = await req.events.get()
                    if kind == "text":
                        yield chunk(value, None)
                    elif kind == "error":
                        yield f"data: {json.dumps({'error': {'message': value, 'type': 'server_error'}})}\n\n"
                        break
                    else:
                        yield chunk(None, value)
                        break
                if include_usage:
                    yield f"data: {json.dumps({'id': rid, 'object': chunk_obj, 'created': int(time.time()), 'model': model_id, 'choices': [], 'usage': usage()})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                req.cancel()  # the client closed the stream: the slot is freed at the next step

        # The background task frees the slot too: a disconnect that cancels the response while
        # it is sending (not waiting on the generator) leaves the generator's `finally` unrun.
        return StreamingResponse(events(), media_type="text/event-stream", background=BackgroundTask(req.cancel),
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Any:
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            return error(400, "prompt: give one string (batches of prompts are not supported)", param="prompt")
        prompt = body.prompt[0] if isinstance(body.prompt, list) else body.prompt
        return await serve(request, body, prompt, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatRequest) -> Any:
        messages = [{**m.model_dump(exclude_none=True), "content": _text(m.content)} for m in body.messages]
        try:
            prompt = format_chat(messages, template, getattr(tokenizer, "bos_token", "") or "",
                                 getattr(tokenizer, "eos_token", "") or "")
        except Exception as exc:  # noqa: BLE001  (a template error is the run's, reported as such)
            return error(400, f"the run's chat template failed on these messages: {exc}", param="messages")
        return await serve(request, body, prompt, chat=True)

    return sched
