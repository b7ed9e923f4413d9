"""Running the app under uvicorn: the shared config, and an in-process server for demos and tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

MAX_TWILIO_FRAME_BYTES = 64 * 1024  # Twilio's frames are small; anything bigger is not Twilio


def uvicorn_config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=MAX_TWILIO_FRAME_BYTES,
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
