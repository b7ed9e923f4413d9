"""The Twilio side of one call: a Starlette WebSocket carrying the Media Streams protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import media_streams as ms
from .logs import get_logger
from .recording import WireTap
from .serving import ABORT_EXTENSION

log = get_logger("bridge.twilio")

# Deadlines towards Twilio (module constants: tests lower them). Twilio reads its socket all the
# time, so a send that cannot complete in SEND_TIMEOUT_S means it stopped reading: the transport
# is aborted, the call ends as `twilio_stalled` and its admission slot is freed. A close gets
# less: the call is over either way, it only decides between a clean close and an abort.
SEND_TIMEOUT_S = 3.0
CLOSE_TIMEOUT_S = 0.5

# Close codes (RFC 6455) we use towards Twilio.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

# Malformed content is 1007; a binary frame 1003; everything else (order, identity, flooding) 1008.
_CLOSE_CODES = {
    "invalid_json": CLOSE_INVALID_PAYLOAD,
    "invalid_base64": CLOSE_INVALID_PAYLOAD,
    "invalid_field": CLOSE_INVALID_PAYLOAD,
    "binary_frame": CLOSE_UNSUPPORTED_DATA,
    "no_room": CLOSE_TRY_AGAIN,  # a stream whose reservation lapsed, with the process full
}


def close_code_for(reason: str) -> int:
    """The close code for a protocol violation named `reason`."""
    return _CLOSE_CODES.get(reason, CLOSE_POLICY)


class StreamClosed(Exception):
    """The Twilio socket is gone; `code` is the peer's (or the server's) close code."""

    def __init__(self, code: int | None = None) -> None:
        super().__init__(f"stream closed ({code})")
        self.code = code


class TwilioStalled(StreamClosed):
    """Twilio did not take a frame (or the close) within its deadline; the connection was aborted."""


class TwilioStream:
    """Receives typed events and sends media, marks and clears for one stream."""

    def __init__(self, websocket: WebSocket, tap: WireTap | None = None) -> None:
        self._ws = websocket
        self.stream_sid: str | None = None
        self.tap = tap  # the call recorder's, when recording is on
        self.received_at = 0.0  # perf_counter() when the last frame arrived (relay latency)
        self.stalled = False  # a send or the close passed its deadline and the connection was aborted
        self.on_stall: Callable[[], None] | None = None  # the call's metric, counted once per stream

    async def receive(self) -> ms.TwilioEvent:
        """The next known event; unknown events are logged and skipped; bad frames raise ProtocolError."""
        while True:
            message = await self._ws.receive()
            self.received_at = time.perf_counter()
            if message["type"] == "websocket.disconnect":
                code = message.get("code")
                if self.tap is not None:
                    self.tap.closed(code, by="twilio")
                if code == CLOSE_TOO_BIG:
                    # uvicorn refused a frame over the size limit and closed the socket itself.
                    log.warning("twilio.bad_frame", reason="frame_too_large", close_code=code)
                raise StreamClosed(code)
            text = message.get("text")
            if text is None:
                raise ms.ProtocolError("binary_frame", "Twilio sends text frames only")
            if self.tap is not None:
                self.tap.received(text)
            event = ms.parse_twilio_message(text)
            if event is None:
                log.info("twilio.unknown_event_ignored")
                continue
            return event

    async def send_media(self, mulaw: bytes) -> None:
        await self._send(ms.media_message(self._sid(), mulaw))

    async def send_mark(self, name: str) -> None:
        await self._send(ms.mark_message(self._sid(), name))

    async def send_clear(self) -> None:
        await self._send(ms.clear_message(self._sid()))

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self._ws.application_state == WebSocketState.DISCONNECTED:
            return
        if self._ws.client_state == WebSocketState.DISCONNECTED:
            return
        if self.stalled:
            return  # already aborted
        if self.tap is not None:
            self.tap.closed(code, by="bridge", reason=reason)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close(code=code, reason=reason)
        except TimeoutError:
            self._abort("close", CLOSE_TIMEOUT_S)
        except (RuntimeError, WebSocketDisconnect, OSError):
            pass  # the peer went away first: nothing left to close

    def _sid(self) -> str:
        if self.stream_sid is None:
            raise RuntimeError("no stream yet: wait for the start event")
        return self.stream_sid

    def _abort(self, what: str, timeout_s: float) -> None:
        """Cut the TCP connection: a peer that does not read cannot be closed politely."""
        if self.stalled:
            return
        self.stalled = True
        abort = self._ws.scope.get("extensions", {}).get(ABORT_EXTENSION)
        log.warning("twilio.stalled", during=what, timeout_s=timeout_s, aborted=abort is not None)
        if self.on_stall is not None:
            self.on_stall()
        if abort is not None:
            abort()  # uvicorn then reports the disconnect and frees its side

    async def _send(self, text: str) -> None:
        if self.stalled:
            raise TwilioStalled()
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self._ws.send_text(text)
        except TimeoutError as exc:
            self._abort("send", SEND_TIMEOUT_S)
            raise TwilioStalled() from exc
        except (RuntimeError, WebSocketDisconnect, OSError) as exc:
            raise StreamClosed() from exc
        if self.tap is not None:
            self.tap.sent(text)
