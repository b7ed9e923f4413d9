"""The WebSocket client to the upstream Realtime service; events come out in the bridge's vocabulary."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .dialects import Dialect, UpstreamProtocolError
from .logs import get_logger
from .realtime_events import ServerEvent

log = get_logger("bridge.upstream")

OPEN_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a long response's audio can arrive in large deltas


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    url: str
    dialect: Dialect
    headers: Mapping[str, str] = field(default_factory=dict)


class UpstreamConnection:
    """One Realtime session for one call."""

    def __init__(self, ws: ClientConnection, dialect: Dialect) -> None:
        self._ws = ws
        self.dialect = dialect

    @classmethod
    async def open(cls, target: UpstreamTarget) -> UpstreamConnection:
        ws = await connect(
            target.url,
            additional_headers=dict(target.headers),
            open_timeout=OPEN_TIMEOUT_S,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,  # audio is incompressible and deflate costs CPU on the hot path
            proxy=None,
        )
        return cls(ws, target.dialect)

    async def send(self, event: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(event))

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Server events until the upstream closes; unreadable ones are logged and skipped."""
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    log.warning("upstream.bad_event", reason="binary_frame", size=len(raw))
                    continue
                try:
                    message = json.loads(raw)
                    if not isinstance(message, dict):
                        raise UpstreamProtocolError("event is not a JSON object")
                    yield self.dialect.parse(message)
                except (json.JSONDecodeError, UpstreamProtocolError) as exc:
                    log.warning("upstream.bad_event", reason=str(exc))
        except websockets.ConnectionClosedError as exc:
            log.warning("upstream.dropped", code=exc.rcvd.code if exc.rcvd else None)

    async def close(self) -> None:
        await self._ws.close()

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code
