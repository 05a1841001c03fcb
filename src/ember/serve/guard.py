"""What keeps the server up under abuse: body limit on the bytes received, bounded work
(429 when full, 503 while shutting down), API-key resolution and a constant-time check.

`BodyLimit` is a plain ASGI middleware: it counts the bytes of every body chunk as they
arrive, so a chunked upload (no Content-Length) cannot grow past the limit in memory.
`Admission` counts the work requests being served; when `max_pending` are already in,
the next one is answered 429 with `Retry-After` before its body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException

from ember.errors import ConfigError

__all__ = ["BodyLimit", "Admission", "AdmissionLimit", "KeyAndMetrics", "resolve_api_key", "key_matches",
           "exposure_warning", "WORK_PATHS", "validation_errors"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WORK_PATHS = frozenset({"/v1/predict", "/v1/explain", "/v1/generate"})


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def validation_errors(_: Any, exc: Any) -> Any:
    """422 for a body that fails its schema, naming each field; never echoes the value.

    FastAPI's own handler echoes the bad input, and a NaN or 2**70 in it made the JSON
    encoder raise, which the client saw as a 500.
    """
    from starlette.responses import JSONResponse

    errors = [{"loc": [str(p) for p in e.get("loc", ())], "field": _field(e.get("loc", ())),
               "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in exc.errors()]
    summary = "; ".join(f"{e['field']}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "error": summary}, status_code=422)


async def _json_response(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised from `receive` once the body passes the limit: a 413, whoever catches it.

    An HTTPException, because FastAPI's body parsing turns any other error into a 400.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"body over {max_bytes} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a body over `max_bytes`, declared or actually received."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"body over {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _json_response(send, 413, detail)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _json_response(send, 413, detail)
        except Exception:
            # Frameworks may wrap the error raised from `receive` (FastAPI's body parsing does).
            if received <= self.max_bytes or started:
                raise
            await _json_response(send, 413, detail)


class Admission:
    """A bound on work requests in progress, and the shutting-down state.

    Args:
        max_pending: requests to predict/explain/generate served at once, queued ones included.
        retry_after_s: what a 429 tells the client to wait.
    """

    def __init__(self, max_pending: int, retry_after_s: int = 1) -> None:
        if max_pending < 1:
            raise ConfigError(f"--max-pending: got {max_pending}; must be >= 1")
        self.max_pending = max_pending
        self.retry_after_s = retry_after_s
        self.pending = 0
        self.draining = False
        self.rejected = 0



class AdmissionLimit:
    """ASGI middleware applying an `Admission`: 429 over the bound, 503 while draining."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        adm = self.admission
        if scope["type"] != "http" or scope.get("path") not in WORK_PATHS:
            await self.app(scope, receive, send)
            return
        if adm.draining:
            await _json_response(send, 503, "server is shutting down; retry on another instance",
                                 {"Retry-After": str(adm.retry_after_s)})
            return
        if adm.pending >= adm.max_pending:
            adm.rejected += 1
            await _json_response(send, 429, f"server busy: {adm.pending} requests in progress; retry later",
                                 {"Retry-After": str(adm.retry_after_s)})
            return
        adm.pending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            adm.pending -= 1


class KeyAndMetrics:
    """ASGI middleware, outermost: 401 without the API key (`/health` and `/` stay open), and
    `observe(path, status, seconds)` once each response has been sent in full.

    A plain ASGI middleware rather than Starlette's `BaseHTTPMiddleware`: that one relays a
    streamed response through a memory channel in a second task, and when the client hung
    up mid-stream the endpoint's generator was not always told (the slot stayed busy).
    """

    def __init__(self, app: ASGIApp, api_key: str | None, observe: Callable[[str, int, float], None]) -> None:
        self.app = app
        self.api_key = api_key
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        start = time.perf_counter()
        if self.api_key and path not in ("/health", "/"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
            if not key_matches(headers, self.api_key):
                await _json_response(send, 401, "missing or wrong API key")
                self.observe(path, 401, time.perf_counter() - start)
                return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.observe(path, status, time.perf_counter() - start)


def resolve_api_key(given: str | None, key_file: Path | None, environ: MutableMapping[str, str] | None = None
                    ) -> str | None:
    """The key from `--api-key`, else `--api-key-file`, else `EMBER_API_KEY`; None for no key.

    Raises:
        ConfigError: the key file is missing, unreadable or empty, or both sources are given.
    """
    env = os.environ if environ is None else environ
    if given is not None and key_file is not None:
        raise ConfigError("give either --api-key or --api-key-file, not both")
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--api-key-file: cannot read '{key_file}' ({exc})") from None
        if not key:
            raise ConfigError(f"--api-key-file: '{key_file}' is empty; put the key on its first line")
        return key
    key = given if given is not None else env.get("EMBER_API_KEY")
    if key is not None and not key.strip():
        raise ConfigError("the API key is empty; give a non-empty --api-key, --api-key-file or EMBER_API_KEY")
    return key.strip() if key is not None else None


def key_matches(headers: MutableMapping[str, str], key: str) -> bool:
    """Whether `X-API-Key` or `Authorization: Bearer` (any case) carries `key`, compared in constant time."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key.encode("utf-8"))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A loud warning when the server would be reachable from other machines without a key."""
    if api_key is not None or _is_loopback(host):
        return None
    bar = "!" * 72
    return (f"{bar}\nWARNING: serving on {host} WITHOUT an API key: anyone who can reach this address can use "
            f"the model.\nSet EMBER_API_KEY or pass --api-key-file FILE, or bind --host 127.0.0.1.\n{bar}")
