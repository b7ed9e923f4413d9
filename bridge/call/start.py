"""The start handshake: Twilio's `connected` and `start`, checked, and the call's setup prepared."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from structlog.stdlib import BoundLogger

from .. import media_streams as ms
from ..telemetry import Metrics
from ..twilio_stream import StreamClosed, close_code_for
from .ports import TwilioPort
from .setup import CallSetup
from .state import EndReason, Lifecycle, StartRefused

START_TIMEOUT_S = 10.0
TWILIO_MEDIA_FORMAT = ("audio/x-mulaw", 8000, 1)


@dataclass(frozen=True, slots=True)
class Started:
    start: ms.Start
    setup: CallSetup


class StartHandshake:
    def __init__(
        self, twilio: TwilioPort, prepare: Callable[[ms.Start], CallSetup], life: Lifecycle, metrics: Metrics, log: BoundLogger
    ) -> None:
        self.twilio = twilio
        self.prepare = prepare
        self.life = life
        self.metrics = metrics
        self.log = log

    async def run(self) -> Started | None:
        """The accepted start and its setup; None when the stream was refused or is gone (ended)."""
        try:
            start = await self._receive_start()
        except TimeoutError:
            await self.reject("no_start_event", EndReason.NO_START)
            return None
        except StreamClosed:
            self.life.end(EndReason.CALLER_HANGUP)
            return None
        except ms.ProtocolError as exc:
            await self.reject(exc.reason, EndReason.PROTOCOL_ERROR, detail=exc.detail)
            return None
        fmt = start.media_format
        if (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != TWILIO_MEDIA_FORMAT:
            await self.reject("unsupported_media_format", EndReason.PROTOCOL_ERROR, detail=str(fmt))
            return None
        try:
            setup = self.prepare(start)
        except StartRefused as exc:
            await self.reject(exc.reason, EndReason.UNAUTHORIZED, call_sid=start.call_sid)
            return None
        return Started(start, setup)

    async def _receive_start(self) -> ms.Start:
        async with asyncio.timeout(START_TIMEOUT_S):
            while True:
                event = await self.twilio.receive()
                if isinstance(event, ms.Start):
                    return event
                if not isinstance(event, ms.Connected):
                    raise ms.ProtocolError("event_before_start", type(event).__name__)

    async def reject(self, reason: str, end: EndReason, **fields: str) -> None:
        """Refuse the stream before anything reaches the upstream."""
        self.log.warning("call.rejected", reason=reason, **fields)
        self.metrics.rejections.labels(reason=reason).inc()
        self.life.end(end)
        await self.twilio.close(close_code_for(reason), reason)
