"""Running the app under uvicorn: the shared config, and an in-process server for demos and tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from .logs import get_logger

log = get_logger("bridge.serving")

MAX_TWILIO_FRAME_BYTES = 64 * 1024  # Twilio's frames are small; anything bigger is not Twilio


def uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=MAX_TWILIO_FRAME_BYTES,
        # μ-law audio does not compress; deflate would only cost CPU on every frame of every call.
        ws_per_message_deflate=False,
        proxy_headers=True,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


@contextlib.asynccontextmanager
async def serving(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` in this event loop on loopback; yields the base URL `http://host:port`."""
    server = uvicorn.Server(uvicorn_config(app, host, port))
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


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the bridge before the server shuts down.

    uvicorn's own shutdown closes WebSockets at once (close 1012), which would cut live calls;
    here readiness turns false and new calls are refused first, active calls get `drain_s` to
    finish and then a spoken goodbye. A second signal stops at once.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain
        self._draining: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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
