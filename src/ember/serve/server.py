"""`ember serve`'s HTTP server: uvicorn on a socket bound here, with a header deadline.

Binding the socket before uvicorn starts turns a busy or forbidden port into one clear line
(exit 2) instead of uvicorn's log and exit 3. The protocol closes a connection whose request
headers do not arrive within `header_timeout_s` (a slowloris client would otherwise hold a
socket for ever: uvicorn's keep-alive timer only runs between requests). The ready lines
are printed once the server accepts connections, so a script can wait for them.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ember.errors import ConfigError

__all__ = ["bind_socket", "run_server", "ready_lines"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`.

    Raises:
        ConfigError: the port is in use, not ours to bind, or the host is not an address here.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host: cannot resolve '{host}' ({exc.strerror}); use an address of this "
                          "machine such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: {host}:{port} is already in use; stop the process using it "
                              "or choose another --port") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"--port {port}: not allowed to bind {host}:{port} (ports below 1024 need "
                              "privileges); choose a --port from 1024 to 65535") from None
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def ready_lines(host: str, port: int) -> list[str]:
    """What `ember serve` prints once it accepts connections: where to point a browser or client."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    lines = [f"serving on {base}" + (f" (listening on all interfaces, {host})" if shown != host else ""),
             f"  playground  {base}/",
             f"  API docs    {base}/docs",
             f"  health      {base}/health",
             "  stop with Ctrl+C (requests in flight are finished first)"]
    return lines


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are too slow."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()  # type: ignore[union-attr]
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # the headers never came: no request to answer

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a request's headers are in
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def run_server(app: Any, sock: socket.socket, drain_s: float = 30.0, header_timeout_s: float = 10.0) -> None:
    """Serve `app` on `sock` (from `bind_socket`) until SIGINT/SIGTERM.

    Work requests get 503 from the moment the signal arrives; uvicorn finishes the requests
    in flight (up to `drain_s` seconds) before it exits.
    """
    import uvicorn

    host, port = sock.getsockname()[:2]

    class Protocol(HeaderDeadline):
        pass

    Protocol.header_timeout_s = header_timeout_s

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.admission.draining = True
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print("\n".join(ready_lines(host, port)), flush=True)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=drain_s, http=Protocol)
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    sys.stdout.flush()
