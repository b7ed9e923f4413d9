"""Running the app under uvicorn: the shared config, and an in-process server for demos and tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .logs import get_logger
from .transports import reset

log = get_logger("bridge.serving")

MAX_TWILIO_FRAME_BYTES = 64 * 1024  # Twilio's frames are small; anything bigger is not Twilio
HEADER_TIMEOUT_S = 10.0  # a request's head (request line + headers) must arrive within this
_TOO_MANY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


# The ASGI scope extension through which the app can cut a WebSocket's TCP connection at once
# (ASGI has no way to: a send to a peer that stopped reading waits for good, and so would a close).
ABORT_EXTENSION = "voice_bridge.abort"


class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with `scope["extensions"][ABORT_EXTENSION]`: a callable that
    aborts the connection's transport (used when a send or close to Twilio passes its deadline, or
    when the peer has not finished the closing handshake by its deadline); it returns True when
    it cut a connection that was still there, False when the connection was already gone.

    `send_buffer_bytes` is a test hook: when set, the kernel send buffer of every accepted
    WebSocket is shrunk to it, so a peer that stops reading blocks the bridge's sends after a
    few kilobytes rather than after megabytes of loopback buffer.
    """

    send_buffer_bytes: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.send_buffer_bytes is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the app task has been created but has not run yet: it sees this
            scope["extensions"][ABORT_EXTENSION] = self.abort_connection

    def abort_connection(self) -> bool:
        """Cut the TCP connection now (unsent data is dropped); False if it was already lost."""
        if self.disconnected:
            return False
        reset(self.transport)  # uvicorn then reports the disconnect and frees its side
        return True


def default_limit_concurrency(max_calls: int) -> int:
    """Open connections `serve` allows by default: each call holds one WebSocket; the rest is
    webhooks (milliseconds each), probes and metrics scrapes, with room for bursts."""
    return 4 * max_calls + 100


class _EdgeGuard:
    """What the guarded HTTP protocol of one server shares: its limits and a throttled log."""

    def __init__(self, header_timeout_s: float, max_connections: int | None, count: Callable[[str], None] | None) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._count = count
        self._refused_since_log = 0
        self._last_log = -1.0

    def refused(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        if self._count is not None:
            self._count(reason)
        # A flood is logged once a second with its size, not once per connection.
        self._refused_since_log += 1
        if loop.time() - self._last_log >= 1.0:
            log.warning("http.refused", reason=reason, connections=self._refused_since_log, max_connections=self.max_connections)
            self._refused_since_log = 0
            self._last_log = loop.time()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two guards uvicorn lacks (uvicorn has no timeout on a
    request that is still arriving, and `limit_concurrency` is only checked once the headers are
    complete, so half-sent requests are held for good):

    - a request head that has not fully arrived `header_timeout_s` after the connection opened
      (or, on a kept-alive connection, after its first byte) gets 408 and the connection closes;
    - a connection accepted while `max_connections` are open gets 503 and is closed at once.

    A request body is not covered here: the app reads webhook bodies with its own deadline.
    """

    guard: _EdgeGuard  # set on the per-server subclass made by `uvicorn_config`
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.guard.max_connections
        if limit is not None and len(self.connections) > limit:
            self.guard.refused("too_many_connections", self.loop)
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self.guard.refused("header_timeout", self.loop)
        if self.cycle is None or self.cycle.response_complete:  # never write into a response in progress
            self.transport.write(_TIMED_OUT)
        self.transport.close()


def _guarded_protocol(guard: _EdgeGuard) -> type[GuardedHttpProtocol]:
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


def _refusal_counter(app: Starlette) -> Callable[[str], None] | None:
    bridge = getattr(app.state, "bridge", None)
    metrics = getattr(bridge, "metrics", None)
    if metrics is None:
        return None
    return lambda reason: metrics.http_refused.labels(reason=reason).inc()


def uvicorn_config(
    app: Starlette,
    host: str,
    port: int,
    *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    limit_concurrency: int | None = None,
    forwarded_allow_ips: str | None = None,
    lifespan: Literal["auto", "on", "off"] = "on",
) -> uvicorn.Config:
    """uvicorn for the bridge. `forwarded_allow_ips` None: uvicorn's default, FORWARDED_ALLOW_IPS
    or else 127.0.0.1 and ::1 (X-Forwarded-Proto/-For from other peers are ignored)."""
    guard = _EdgeGuard(header_timeout_s, limit_concurrency, _refusal_counter(app))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_guarded_protocol(guard),
        ws=AbortableWebSocketProtocol,
        ws_max_size=MAX_TWILIO_FRAME_BYTES,
        # μ-law audio does not compress; deflate would only cost CPU on every frame of every call.
        ws_per_message_deflate=False,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        limit_concurrency=limit_concurrency,
        log_config=None,
        access_log=False,
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def serving(app: Starlette, host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[str]:
    """Serve `app` in this event loop on loopback; yields the base URL `http://host:port`.
    `options` go to `uvicorn_config` (header_timeout_s, limit_concurrency, forwarded_allow_ips, lifespan)."""
    server = uvicorn.Server(uvicorn_config(app, host, port, **options))
    task = asyncio.create_task(server.serve(), name="uvicorn")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during start-up")
        await asyncio.sleep(0.01)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        await task


class _SideServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals alone (the main server owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # type: ignore[override]
        yield


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the bridge before the server shuts down.

    uvicorn's own shutdown closes WebSockets at once (close 1012), which would cut live calls;
    here readiness turns false and new calls are refused first, active calls get `drain_s` to
    finish and then a spoken goodbye. A second signal stops at once.
    """

    def __init__(
        self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]], internal: uvicorn.Config | None = None
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The internal port (VOICE_BRIDGE_METRICS_PORT): same loop, stops when this server stops.
        self._internal = _SideServer(internal) if internal is not None else None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        internal = asyncio.create_task(self._internal.serve(), name="internal_port") if self._internal else None
        try:
            await super().serve(sockets)
        finally:
            if internal is not None and self._internal is not None:
                self._internal.should_exit = True
                await asyncio.gather(internal, return_exceptions=True)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is None and self._loop is not None and not self.should_exit:
            # The drain is handed over first, logged after: whatever logging does (stderr a broken
            # pipe, a full disk), the drain has started. A signal handler may interrupt the loop
            # anywhere: hand over through the thread-safe door.
            self._loop.call_soon_threadsafe(self._start_draining)
            with contextlib.suppress(Exception):
                log.info("bridge.signal", signal=signal.Signals(sig).name, action="drain")
            return
        super().handle_exit(sig, frame)

    def _start_draining(self) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain_then_exit(), name="drain")

    async def _drain_then_exit(self) -> None:
        try:
            await self._drain()
        finally:
            self.should_exit = True
