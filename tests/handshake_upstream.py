"""Loopback upstreams for connect tests: one that records every opening handshake (and can refuse
the first ones with an HTTP status), and one that accepts TCP but never answers the upgrade."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from scripted_upstream import ScriptedSession
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

Script = Callable[[ScriptedSession], Awaitable[None]]


def free_port() -> int:
    """A loopback port nothing listens on (connecting to it is refused until someone does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_close(session: ScriptedSession) -> None:
    await session.ws.wait_closed()


class HandshakeUpstream:
    """Records each handshake's path and headers; refuses the first ones with `refuse_with` statuses."""

    def __init__(self, script: Script = wait_for_close, refuse_with: list[int] | None = None, port: int = 0) -> None:
        self.script = script
        self.refuse_with = list(refuse_with or [])
        self.port = port
        self.requests: list[Request] = []
        self.sessions: list[ScriptedSession] = []
        self.close_codes: list[int | None] = []
        self._server: Server | None = None

    @property
    def origin(self) -> str:
        """What an endpoint setting would say: `http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def headers(self, index: int = -1) -> Headers:
        return self.requests[index].headers

    async def start(self) -> HandshakeUpstream:
        self._server = await serve(
            self._handle, "127.0.0.1", self.port, process_request=self._process_request, compression=None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> HandshakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.refuse_with:
            return connection.respond(self.refuse_with.pop(0), "not now\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = ScriptedSession(ws)
        self.sessions.append(session)
        try:
            await self.script(session)
        finally:
            await ws.wait_closed()
            self.close_codes.append(ws.close_code)


class SilentUpstream:
    """Accepts TCP connections and never answers: an opening handshake that never completes."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> SilentUpstream:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._writers:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await reader.read()  # until the client gives up
