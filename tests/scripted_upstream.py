"""A scripted GA Realtime server for tests: records what the bridge sends, answers as told."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

Script = Callable[["ScriptedSession"], Awaitable[None]]


class ScriptedSession:
    """One upstream connection as the script sees it."""

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
        """Record everything the bridge sends until it closes the session."""
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
            await self.send("response.output_audio.delta", **where, delta=base64.b64encode(pcm[offset : offset + delta_bytes]).decode())
        await self.send("response.output_audio.done", **where)
        await self.send("response.done", response={"id": response_id, "status": "completed"})


class ScriptedUpstream:
    """Serves `script` for every connection on a loopback port."""

    def __init__(self, script: Script, receive_buffer: int | None = None, **serve_options: Any) -> None:
        """`receive_buffer`: SO_RCVBUF of the listening socket (accepted ones inherit it), set
        before listen, so that a script that stops reading stalls the bridge's sends for real;
        `serve_options` go to websockets' `serve` (e.g. `max_queue`)."""
        self.script = script
        self.receive_buffer = receive_buffer
        self.serve_options = serve_options
        self.sessions: list[ScriptedSession] = []
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedUpstream:
        if self.receive_buffer is None:
            self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, **self.serve_options)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            sock.bind(("127.0.0.1", 0))
            self._server = await serve(self._handle, sock=sock, compression=None, **self.serve_options)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        session = ScriptedSession(ws)
        self.sessions.append(session)
        await self.script(session)
