"""The two peers as the call sees them. `TwilioStream` and `UpstreamConnection` are the socket
shells; tests also drive a call through in-memory ports with the same shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from .. import media_streams as ms
from ..dialects import Dialect
from ..realtime_events import ServerEvent


class TwilioPort(Protocol):
    stream_sid: str | None
    received_at: float  # perf_counter() when the last frame arrived
    stalled: bool  # a send or the close passed its deadline and the connection was cut
    on_stall: Callable[[], None] | None

    async def receive(self) -> ms.TwilioEvent: ...

    async def send_media(self, mulaw: bytes) -> None: ...

    async def send_mark(self, name: str) -> None: ...

    async def send_clear(self) -> None: ...

    async def close(self, code: int = ..., reason: str = "") -> None: ...


class ModelPort(Protocol):
    dialect: Dialect
    received_at: float  # perf_counter() when the last event arrived

    async def send(self, event: dict[str, Any] | str) -> None: ...

    def events(self) -> AsyncIterator[ServerEvent]: ...

    async def close(self) -> None: ...

    def abort(self) -> None: ...

    @property
    def close_code(self) -> int | None: ...
