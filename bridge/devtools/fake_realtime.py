"""One fake Realtime server for tests and benchmarks: the shell (listen on loopback, accept
sessions, parse the client's events, send server events, record what was received and each
handshake, refuse handshakes with an HTTP status, stall by not reading) with the behaviour of each
session given as a script (`async def script(session: FakeSession) -> None`).

Every fake upstream is a script on it: tests/scripted_upstream.py, tests/handshake_upstream.py and
tests/dialect_upstream.py (the scripted model in either dialect), tests/chaos_harness.py's hostile
model, the benchmarks' models (bargein, prewarm, relay_floor's sink), fixtures/calls/record_fixtures.py's
Voice Live model, the replay upstream (`bridge.devtools.replay.upstream`) and the local agent
(`bridge.devtools.agent.server`). A script with state of its own per session builds it from the
`FakeSession` it is given (its `ws`, `handshake`, `index`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

Script = Callable[["FakeSession"], Awaitable[None]]
Answer = Callable[[int], "int | None"]  # the n-th handshake attempt (0-based) → refuse with status, or None


@dataclass(frozen=True, slots=True)
class Handshake:
    """One opening handshake as it arrived."""

    path: str  # with the query string
    headers: Headers
    at: float  # time.monotonic() when the upgrade request arrived


class FakeSession:
    """One upstream connection as the script sees it: what the client sent, and ways to answer.

    `handshake` is the upgrade that opened it; `index` counts the accepted sessions from 0."""

    def __init__(self, ws: ServerConnection, handshake: Handshake | None = None, index: int = 0) -> None:
        self.ws = ws
        self.handshake = handshake
        self.index = index
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
    `host`: the address to listen on (loopback unless told);
    `refuse_with`: HTTP statuses the first handshakes are refused with, in turn;
    `answer`: instead, a policy: the n-th attempt (from 0) → the status to refuse it with, or None to
    accept; `refusal_text` is the body of a refusal (`{attempt}` is the attempt's number, from 1);
    `handshake_delay_s`: hold every accepted upgrade that long before answering (may be changed live);
    `receive_buffer`: SO_RCVBUF of the listening socket (accepted ones inherit it), so a script
    that stops reading stalls the client's sends within kilobytes;
    `hold_until_client_closes`: after the script returns, wait for the client to close (and record
    its close code) instead of closing the session from this side;
    `abort_open_on_close`: on `aclose`, cut the connections still open (no close handshake: a client
    that reads nothing cannot hold the exit up);
    `record`: keep every handshake and session (`requests`, `handshakes`, `sessions`); a long-running
    server (the local agent) turns it off and keeps only counts;
    `serve_options` go to websockets' `serve` (e.g. `max_queue`).
    """

    def __init__(
        self,
        script: Script = wait_for_close,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refuse_with: list[int] | None = None,
        answer: Answer | None = None,
        refusal_text: str = "not now\n",
        handshake_delay_s: float = 0.0,
        receive_buffer: int | None = None,
        hold_until_client_closes: bool = False,
        abort_open_on_close: bool = False,
        record: bool = True,
        **serve_options: Any,
    ) -> None:
        self.script = script
        self.host = host
        self.port = port
        self.refuse_with = list(refuse_with or [])
        self.answer = answer
        self.refusal_text = refusal_text
        self.handshake_delay_s = handshake_delay_s
        self.receive_buffer = receive_buffer
        self.hold_until_client_closes = hold_until_client_closes
        self.abort_open_on_close = abort_open_on_close
        self.record = record
        self.serve_options = serve_options
        self.requests: list[Request] = []  # every opening handshake, refused ones too
        self.handshakes: list[Handshake] = []  # the same, with arrival times
        self.sessions: list[FakeSession] = []
        self.close_codes: list[int | None] = []  # with hold_until_client_closes
        self.attempts = 0  # handshakes seen
        self.accepted = 0  # sessions opened
        self.open_now = 0  # sessions not yet over
        self._server: Server | None = None
        self._accepted: dict[int, Handshake] = {}
        self._open: set[ServerConnection] = set()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime" if self._server is not None else ""

    @property
    def origin(self) -> str:
        """What an endpoint setting would say: `http://127.0.0.1:<port>`."""
        return f"http://{self.host}:{self.port}"

    def headers(self, index: int = -1) -> Headers:
        return self.requests[index].headers

    async def start(self) -> FakeRealtime:
        options: dict[str, Any] = {"process_request": self._process_request, "compression": None, **self.serve_options}
        if self.receive_buffer is None:
            self._server = await serve(self._handle, self.host, self.port, **options)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            sock.bind((self.host, self.port))
            self._server = await serve(self._handle, sock=sock, **options)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            if self.abort_open_on_close:
                for ws in list(self._open):
                    ws.transport.abort()
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeRealtime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        attempt, self.attempts = self.attempts, self.attempts + 1
        handshake = Handshake(request.path, request.headers, time.monotonic())
        if self.record:
            self.requests.append(request)
            self.handshakes.append(handshake)
        status = self.answer(attempt) if self.answer is not None else (self.refuse_with.pop(0) if self.refuse_with else None)
        if status is not None:
            return connection.respond(status, self.refusal_text.format(attempt=attempt + 1))
        if self.handshake_delay_s:
            await asyncio.sleep(self.handshake_delay_s)
        self._accepted[id(connection)] = handshake
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = FakeSession(ws, self._accepted.pop(id(ws), None), self.accepted)
        self.accepted += 1
        self.open_now += 1
        self._open.add(ws)
        if self.record:
            self.sessions.append(session)
        try:
            await self.script(session)
        finally:
            try:
                if self.hold_until_client_closes:
                    await ws.wait_closed()
                    self.close_codes.append(ws.close_code)
            finally:
                self.open_now -= 1
                self._open.discard(ws)
