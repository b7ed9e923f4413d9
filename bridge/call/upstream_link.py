"""The call's side of the model session: one sender through a bounded queue, send and close
deadlines, and replacing a lost session.

Caller audio never waits for the model: `send()` queues (at most `audio_events` appends, 1 s at
the default 20 ms appends) and one sender task drains the queue, each send with a deadline. A send
blocked past `deadlines.upstream_send_s` means the model stopped reading: the connection is cut
(`upstream.stalled`) and `run_sender()` returns, for the call to take the fallback path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import websockets
from structlog.stdlib import BoundLogger

from ..deadlines import PeerDeadlines
from ..outbound import FrameWindow, OutboundQueue, Outgoing
from ..telemetry import Metrics
from .ports import ModelPort

UPSTREAM_QUEUE_AUDIO_EVENTS = 50
UPSTREAM_QUEUE_CONTROL_EVENTS = 256  # cancels, truncations, tool outputs, keypad text: few per turn
LEAD_IN_FRAMES = 15  # caller audio (300 ms) sent the old session that a new one hears again on a switch
# Caller audio held while a lost session is replaced (at most 5 s of 20 ms frames), for the new one.
HELD_FRAMES = 250
UPSTREAM_FAILURES = (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI, websockets.ConnectionClosed)

Event = dict[str, Any] | str


class UpstreamLink:
    def __init__(self, metrics: Metrics, deadlines: PeerDeadlines, log: BoundLogger) -> None:
        self.metrics = metrics
        self.deadlines = deadlines
        self.log = log
        self.connection: ModelPort | None = None
        self._queue = OutboundQueue(UPSTREAM_QUEUE_AUDIO_EVENTS, UPSTREAM_QUEUE_CONTROL_EVENTS)
        self._ready = asyncio.Event()
        self._replacing = False
        self._send_blocked = False  # a send is under way (still true if cancelled in it)
        self._relay_in = metrics.relay.labels(direction="caller_to_model")
        self._front: deque[Outgoing] = deque()  # sent before the queue: a new session's seed and lead-in
        self._recent_audio = FrameWindow()  # the last LEAD_IN_FRAMES of caller audio sent
        self._held = FrameWindow()  # caller audio for the session that replaces a lost one

    def _dropped(self, reason: str, frames: int) -> None:
        self.metrics.dropped_frames.labels(reason=reason).inc(frames)

    def send(self, event: Event, frames: int = 0, completed_at: float | None = None) -> bool:
        """Queue `event` for the model, never waiting. Dropped, not fatal, while the session is not
        there yet or being replaced, or when the model has stopped reading and the queue is full.

        `frames` is how many caller frames the event carries (0: a control event); True if queued.
        """
        if self.connection is None:
            self._dropped("upstream_connecting", max(frames, 1))
            return False
        if self._replacing:
            return self._hold(Outgoing(event, frames, None))
        if not self._queue.offer(Outgoing(event, frames, completed_at)):
            self._dropped("upstream_stalled", max(frames, 1))
            return False
        self._ready.set()
        return True

    async def run_sender(self) -> None:
        """The one sender to the model; returns only when the model stopped reading (cut by then)."""
        while True:
            item = self._front.popleft() if self._front else self._queue.pop()
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            connection = self.connection
            assert connection is not None
            self._send_blocked = True
            try:
                async with asyncio.timeout(self.deadlines.upstream_send_s):
                    await connection.send(item.event)
            except TimeoutError:
                dropped = item.frames + self._queue.clear()
                self.log.error("upstream.stalled", timeout_s=self.deadlines.upstream_send_s, dropped_frames=dropped)
                self.metrics.peer_stalls.labels(peer="upstream").inc()
                self._dropped("upstream_stalled", dropped)
                connection.abort()
                return
            except websockets.ConnectionClosed:
                if connection is not self.connection and not self._replacing:
                    # A planned switch closed the old session under this send: the new one gets it,
                    # after the lead-in (nothing is held for a replacement that will not come).
                    self._front.append(item)
                else:
                    # The model pump sees the same closure and decides: reconnect (this audio is
                    # held for the new session), or end the call.
                    self._hold(item, closed=True)
            else:
                if item.completed_at is not None:
                    self._relay_in.observe(time.perf_counter() - item.completed_at)
                if item.frames:
                    self._recent_audio.keep_last(item, LEAD_IN_FRAMES)
            self._send_blocked = False

    def _hold(self, item: Outgoing, closed: bool = False) -> bool:
        """Keep caller audio for the session replacing a lost one (bounded); control events for the
        lost session are dropped. True if held."""
        if item.frames and self._held.add(item, HELD_FRAMES):
            return True
        self._dropped("upstream_closed" if closed else "upstream_reconnecting", max(item.frames, 1))
        return False

    def switch(self, new: ModelPort, preamble: Iterable[Event]) -> ModelPort:
        """Planned rollover, at once: from now on everything goes to `new`, first `preamble` (the seed),
        then the last caller audio the old session heard (an utterance just begun reaches the new
        one whole), then what is queued. Returns the old session (for the caller to close)."""
        old, self.connection = self.connection, new
        assert old is not None
        self._front.extend(Outgoing(event, 0, None) for event in preamble)
        self._front.extend(self._recent_audio.take())
        self._ready.set()
        return old

    @contextlib.asynccontextmanager
    async def replacing(self) -> AsyncIterator[None]:
        """While a lost session is replaced: control events queued for it are dropped, the old
        session closed, and nothing is sent until the block ends. Caller audio is held for the new
        session: the last 300 ms the old one was sent (it may not have heard it), what was queued,
        and what arrives meanwhile (at most HELD_FRAMES; `open_seeded` sends it after the seed)."""
        assert self.connection is not None
        self._replacing = True
        lead_in = self._recent_audio.take()
        if not self._held:
            for sent in lead_in:
                self._held.add(sent, HELD_FRAMES)
        while (item := self._queue.pop()) is not None:
            self._hold(item)
        self._front.clear()
        try:
            await self.close_quietly(self.connection)
            yield
        finally:
            self._replacing = False

    async def open_seeded(
        self, opener: Callable[[], Awaitable[ModelPort]], seed: Callable[[ModelPort], Iterable[Event]]
    ) -> ModelPort:
        """A new session (the current one replaced) told the conversation so far; a session that
        does not read fails here."""
        connection = await opener()
        try:
            async with asyncio.timeout(self.deadlines.upstream_send_s):
                for event in seed(connection):
                    await connection.send(event)
        except BaseException:
            await self.close_quietly(connection)
            raise
        self.connection = connection
        self._front.extend(self._held.take())  # the caller's audio since the loss, after the seed
        self._ready.set()
        return connection

    async def close_quietly(self, connection: ModelPort) -> None:
        """Close a session; if its closing handshake stalls, cut the connection."""
        try:
            async with asyncio.timeout(self.deadlines.upstream_close_s):
                await connection.close()
        except (TimeoutError, OSError):
            self.log.warning("upstream.close_timeout")
            connection.abort()

    async def close(self) -> None:
        """At the end of the call: a model not taking what we sent gets no closing handshake."""
        if self.connection is None:
            return
        if self._send_blocked:
            self.connection.abort()
        await self.close_quietly(self.connection)
