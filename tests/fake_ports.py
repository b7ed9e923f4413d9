"""In-memory ports for driving a `CallSession` without sockets (the same shapes as
`TwilioStream` and `UpstreamConnection`: bridge/call/ports.py). What the call sends is recorded;
what the peers say is pushed by the test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from bridge import media_streams as ms
from bridge.dialects import Dialect, GADialect
from bridge.realtime_events import ServerEvent
from bridge.twilio_stream import StreamClosed


class FakeTwilio:
    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.received_at = 0.0
        self.stalled = False
        self.on_stall: Callable[[], None] | None = None
        self.sent: list[tuple[str, Any]] = []  # ("media", bytes) | ("mark", name) | ("clear", None)
        self.closed: tuple[int, str] | None = None
        self._inbox: asyncio.Queue[ms.TwilioEvent | None] = asyncio.Queue()

    # what Twilio says
    def say(self, event: ms.TwilioEvent) -> None:
        self._inbox.put_nowait(event)

    def hang_up_socket(self) -> None:
        self._inbox.put_nowait(None)

    # the port
    async def receive(self) -> ms.TwilioEvent:
        event = await self._inbox.get()
        if event is None or self.closed is not None:
            raise StreamClosed(1000)
        return event

    async def send_media(self, mulaw: bytes) -> None:
        self.sent.append(("media", mulaw))

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", name))

    async def send_clear(self) -> None:
        self.sent.append(("clear", None))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self._inbox.put_nowait(None)

    # questions
    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]

    def marks(self) -> list[str]:
        return [name for kind, name in self.sent if kind == "mark" and not name.startswith("rtt.")]

    def media_bytes(self) -> int:
        return sum(len(payload) for kind, payload in self.sent if kind == "media")


class FakeModel:
    def __init__(self, dialect: Dialect | None = None) -> None:
        self.dialect = dialect or GADialect()
        self.received_at = 0.0
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.aborted = False
        self._close_code: int | None = None
        self._events: asyncio.Queue[ServerEvent | int] = asyncio.Queue()

    def say(self, *events: ServerEvent) -> None:
        for event in events:
            self._events.put_nowait(event)

    def end_session(self, code: int) -> None:
        self._events.put_nowait(code)

    async def send(self, event: dict[str, Any] | str) -> None:
        self.sent.append(json.loads(event) if isinstance(event, str) else event)

    async def events(self) -> AsyncIterator[ServerEvent]:
        while True:
            event = await self._events.get()
            if isinstance(event, int):
                self._close_code = event
                return
            yield event

    async def close(self) -> None:
        self.closed = True
        self._close_code = self._close_code or 1000

    def abort(self) -> None:
        self.aborted = True

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def sent_types(self) -> list[str]:
        return [str(event.get("type")) for event in self.sent]
