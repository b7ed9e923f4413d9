"""The Twilio side of one call: a Starlette WebSocket carrying the Media Streams protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from . import media_streams as ms
from .deadlines import PeerDeadlines
from .logs import get_logger
from .recording import WireTap
from .serving import ABORT_EXTENSION

log = get_logger("bridge.twilio")
DISCONNECTED = WebSocketState.DISCONNECTED


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

    def __init__(self, websocket: WebSocket, tap: WireTap | None = None, deadlines: PeerDeadlines | None = None) -> None:
        self._ws = websocket
        self.deadlines = deadlines or PeerDeadlines()  # sends and closes (bridge/deadlines.py)
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
        if self.stalled:
            return  # already aborted
        closed = DISCONNECTED in (self._ws.application_state, self._ws.client_state)
        if not closed:
            if self.tap is not None:
                self.tap.closed(code, by="bridge", reason=reason)
            try:
                async with asyncio.timeout(self.deadlines.twilio_close_s):
                    await self._ws.close(code=code, reason=reason)
            except TimeoutError:
                self._abort("close", self.deadlines.twilio_close_s)
                return
            except (RuntimeError, WebSocketDisconnect, OSError):
                pass  # the peer went away first: nothing left to close
        # Whoever closed first, the last frames (our close, or the echo of the peer's) may wait
        # behind audio the peer does not read: past the linger the connection is cut (a no-op if
        # the handshake is done by then). The timer keeps this call's log context.
        linger = self.deadlines.twilio_close_linger_s
        asyncio.get_running_loop().call_later(linger, self._abort, "linger", linger, False)

    def _sid(self) -> str:
        if self.stream_sid is None:
            raise RuntimeError("no stream yet: wait for the start event")
        return self.stream_sid

    def _abort(self, what: str, timeout_s: float, connected: bool = True) -> None:
        """Cut the TCP connection: a peer that does not read cannot be closed politely.

        `connected` False: the connection may well be gone already (after the close's linger);
        then only a connection that was still there is logged and counted as a stall.
        """
        if self.stalled:
            return
        abort = self._ws.scope.get("extensions", {}).get(ABORT_EXTENSION)
        cut = abort() if abort is not None else None  # uvicorn then reports the disconnect and frees its side
        if not connected and not cut:
            return
        self.stalled = True
        log.warning("twilio.stalled", during=what, timeout_s=timeout_s, aborted=abort is not None)
        if self.on_stall is not None:
            self.on_stall()

    async def _send(self, text: str) -> None:
        if self.stalled:
            raise TwilioStalled()
        try:
            async with asyncio.timeout(self.deadlines.twilio_send_s):
                await self._ws.send_text(text)
        except TimeoutError as exc:
            self._abort("send", self.deadlines.twilio_send_s)
            raise TwilioStalled() from exc
        except (RuntimeError, WebSocketDisconnect, OSError) as exc:
            raise StreamClosed() from exc
        if self.tap is not None:
            self.tap.sent(text)
