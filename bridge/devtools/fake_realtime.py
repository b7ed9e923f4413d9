"""One fake Realtime server for tests and benchmarks: the shell (listen on loopback, accept
sessions, parse the client's events, send server events, record what was received and each
handshake, refuse handshakes with an HTTP status, stall by not reading) with the behaviour of each
session given as a script (`async def script(session: FakeSession) -> None`).

tests/scripted_upstream.py and tests/handshake_upstream.py are thin names over it; the local agent
(`bridge.devtools.agent`) and the replay upstream (`bridge.devtools.replay.upstream`) still run their
own servers (see the notes of issue 15).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

Script = Callable[["FakeSession"], Awaitable[None]]


class FakeSession:
    """One upstream connection as the script sees it: what the client sent, and ways to answer."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, kind: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, "event_id": f"evt_{len(self.received)}", **fields}))

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next client event of type `kind` (others are recorded and skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await self.ws.recv())
                self.received.append(event)
                if event.get("type") == kind:
                    return event

    async def drain(self) -> None:
        """Record everything the client sends until it closes the session."""
        try:
            async for raw in self.ws:
                self.received.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    async def greet(self, pcm: bytes) -> None:
        """A GA session opened as the bridge expects it, then `pcm` spoken as the greeting (resp_1, item_1)."""
        await self.send("session.created", session={"type": "realtime"})
        await self.expect("session.update")
        await self.send("session.updated", session={"type": "realtime"})
        await self.expect("response.create")
        await self.speak("resp_1", "item_1", pcm)

    async def speak(self, response_id: str, item_id: str, pcm: bytes, delta_bytes: int = 4800) -> None:
        """A whole audio response in GA event names."""
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send("response.created", response={"id": response_id, "status": "in_progress"})
        await self.send(
            "response.output_item.added",
            response_id=response_id,
            output_index=0,
            item={"id": item_id, "type": "message", "role": "assistant"},
        )
        for offset in range(0, len(pcm), delta_bytes):
            delta = base64.b64encode(pcm[offset : offset + delta_bytes]).decode()
            await self.send("response.output_audio.delta", **where, delta=delta)
        await self.send("response.output_audio.done", **where)
        await self.send("response.done", response={"id": response_id, "status": "completed"})


async def wait_for_close(session: FakeSession) -> None:
    """A script that only holds the session open until the client closes it."""
    await session.ws.wait_closed()


class FakeRealtime:
    """Serves `script` for every connection on a loopback port.

    `port`: 0 for a free one (or a fixed one, e.g. to come back on after a restart);
    `refuse_with`: HTTP statuses the first handshakes are refused with, in turn;
    `receive_buffer`: SO_RCVBUF of the listening socket (accepted ones inherit it), so a script
    that stops reading stalls the client's sends within kilobytes;
    `hold_until_client_closes`: after the script returns, wait for the client to close (and record
    its close code) instead of closing the session from this side;
    `serve_options` go to websockets' `serve` (e.g. `max_queue`).
    """

    def __init__(
        self,
        script: Script = wait_for_close,
        *,
        port: int = 0,
        refuse_with: list[int] | None = None,
        receive_buffer: int | None = None,
        hold_until_client_closes: bool = False,
        **serve_options: Any,
    ) -> None:
        self.script = script
        self.port = port
        self.refuse_with = list(refuse_with or [])
        self.receive_buffer = receive_buffer
        self.hold_until_client_closes = hold_until_client_closes
        self.serve_options = serve_options
        self.requests: list[Request] = []  # every opening handshake, refused ones too
        self.sessions: list[FakeSession] = []
        self.close_codes: list[int | None] = []  # with hold_until_client_closes
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime" if self._server is not None else ""

    @property
    def origin(self) -> str:
        """What an endpoint setting would say: `http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def headers(self, index: int = -1) -> Headers:
        return self.requests[index].headers

    async def start(self) -> FakeRealtime:
        options: dict[str, Any] = {"process_request": self._process_request, "compression": None, **self.serve_options}
        if self.receive_buffer is None:
            self._server = await serve(self._handle, "127.0.0.1", self.port, **options)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            sock.bind(("127.0.0.1", self.port))
            self._server = await serve(self._handle, sock=sock, **options)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeRealtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.refuse_with:
            return connection.respond(self.refuse_with.pop(0), "not now\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = FakeSession(ws)
        self.sessions.append(session)
        try:
            await self.script(session)
        finally:
            if self.hold_until_client_closes:
                await ws.wait_closed()
                self.close_codes.append(ws.close_code)
