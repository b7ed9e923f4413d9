"""The upstream side of a replayed call: a loopback server that answers the bridge as the recording did.

Connection attempts get what they got in the recording (accepted, or refused with the recorded
HTTP status); the n-th accepted connection plays the n-th recorded session. A session plays its
recorded server events (and a close or drop by the upstream) in order, each one:

- not before its recorded time, counted from the session's opening, or, for events the bridge
  read after the Twilio stream started, from the replayed stream's `start` (so the model speaks
  at the same moment of the caller's audio as it did);
- not before the bridge has sent the event that preceded it in the recording (matched on event
  type and order: the 2nd `response.create`, the 1st `conversation.item.truncate`, ...; caller
  audio appends are not waited for), plus the delay the recording shows after it. A missing one
  is waited for `TRIGGER_TIMEOUT_S`, then the script goes on: the comparison reports it.

Recorded times are divided by `speed`; the bridge must run on the same scaled clock. A
`conversation.item.truncated` carries the `audio_end_ms` of the truncate the bridge sent in this
replay, as the real service would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from websockets import ConnectionClosed
from websockets.asyncio.server import ServerConnection

from ...logs import get_logger
from ...recording_format import APPEND_TYPE, IN, OUT, TWILIO, UPSTREAM, RecordedEvent, Recording
from ..fake_realtime import FakeRealtime, FakeSession

log = get_logger("bridge.replay")

TRIGGER_TIMEOUT_S = 3.0  # real seconds to wait for an event the bridge should have sent
CLOSE_DROPPED = 1006


class StreamTimeline:
    """When the replayed Twilio stream started (set by the phone); the upstream keeps time by it."""

    def __init__(self) -> None:
        self.started_at: float | None = None
        self._started = asyncio.Event()

    def mark_started(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
            self._started.set()

    async def wait_started(self, timeout: float) -> float | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._started.wait()
        return self.started_at


@dataclass(frozen=True, slots=True)
class _Trigger:
    kind: str  # the client event type
    ordinal: int  # 1 for the first of its type in the session
    t: float  # when the recorded bridge sent it


@dataclass(frozen=True, slots=True)
class _Step:
    event: RecordedEvent  # a server event (`in`) or the upstream's `close`
    trigger: _Trigger | None


def _steps(recording: Recording, session: int) -> list[_Step]:
    steps: list[_Step] = []
    seen: dict[str, int] = defaultdict(int)
    trigger: _Trigger | None = None
    for event in recording.of(UPSTREAM, session):
        if event.direction == OUT and event.msg is not None:
            kind = event.kind
            seen[kind] += 1
            if kind != APPEND_TYPE:
                trigger = _Trigger(kind, seen[kind], event.t)
        elif event.direction == IN and event.msg is not None:
            steps.append(_Step(event, trigger))
        elif event.direction == "close" and event.fields.get("by") == "upstream":
            steps.append(_Step(event, trigger))
            break
    return steps


@dataclass(slots=True)
class _Received:
    """What the bridge has sent in this replayed session, by type, with arrival times."""

    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    truncates: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type"))
        self.times[kind].append(time.monotonic())
        if kind == "conversation.item.truncate":
            self.truncates.append(int(message.get("audio_end_ms", 0)))
        self.changed.set()

    async def arrival(self, trigger: _Trigger, timeout: float) -> float | None:
        try:
            async with asyncio.timeout(timeout):
                while len(self.times[trigger.kind]) < trigger.ordinal:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return None
        return self.times[trigger.kind][trigger.ordinal - 1]


class _SessionPlayer:
    def __init__(
        self, ws: ServerConnection, recording: Recording, session: int, speed: float, timeline: StreamTimeline
    ) -> None:
        self.ws = ws
        self.recording = recording
        self.session = session
        self.speed = speed
        self.timeline = timeline
        self.opened_at = time.monotonic()
        events = list(recording.of(UPSTREAM, session))
        self.recorded_open = next((e.t for e in events if e.direction == "open"), events[0].t if events else 0.0)
        self.recorded_start = next(
            (e.t for e in recording.of(TWILIO) if e.direction == IN and e.kind == "start"), None
        )
        self.received = _Received()
        self.missing_triggers: list[str] = []

    async def run(self) -> None:
        reading = asyncio.create_task(self._read(), name=f"replay_upstream_read_{self.session}")
        try:
            for step in _steps(self.recording, self.session):
                await self._wait_for(step)
                if step.event.direction == "close":
                    await self._close(step.event)
                    return
                await self.ws.send(json.dumps(self._message(step)))
            await reading  # until the bridge closes the session
        except ConnectionClosed:
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                with contextlib.suppress(ValueError):
                    message = json.loads(raw)
                    if isinstance(message, dict):
                        self.received.add(message)

    async def _wait_for(self, step: _Step) -> None:
        t = step.event.t
        at = self.opened_at + (t - self.recorded_open) / self.speed
        if self.recorded_start is not None and t >= self.recorded_start:
            started = await self.timeline.wait_started(TRIGGER_TIMEOUT_S)
            if started is not None:
                at = max(at, started + (t - self.recorded_start) / self.speed)
        if step.trigger is not None:
            arrived = await self.received.arrival(step.trigger, TRIGGER_TIMEOUT_S)
            if arrived is None:
                self.missing_triggers.append(f"{step.trigger.kind} #{step.trigger.ordinal}")
                log.warning(
                    "replay.trigger_missing", session=self.session, waited_for=step.trigger.kind, ordinal=step.trigger.ordinal
                )
            else:
                at = max(at, arrived + (t - step.trigger.t) / self.speed)
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _message(self, step: _Step) -> dict[str, Any]:
        message = self.recording.inline(step.event)
        trigger = step.trigger
        answers_truncate = trigger is not None and trigger.kind == "conversation.item.truncate"
        if message.get("type") == "conversation.item.truncated" and answers_truncate:
            assert trigger is not None
            if len(self.received.truncates) >= trigger.ordinal:
                message["audio_end_ms"] = self.received.truncates[trigger.ordinal - 1]
        return message

    async def _close(self, event: RecordedEvent) -> None:
        code = event.fields.get("code")
        if code in (None, CLOSE_DROPPED):
            self.ws.transport.abort()  # the connection was lost: no close frame
            return
        await self.ws.close(int(code), str(event.fields.get("reason") or ""))


@dataclass(frozen=True, slots=True)
class _Attempt:
    status: int | None  # None: accepted


def _attempts(recording: Recording) -> list[_Attempt]:
    attempts = []
    for event in recording.of(UPSTREAM):
        if event.direction == "open":
            attempts.append(_Attempt(None))
        elif event.direction == "connect_failed":
            # A refused or timed-out TCP connection cannot be played back by a listening server:
            # it is answered 503, which the bridge retries the same way.
            attempts.append(_Attempt(event.fields.get("status") or 503))
    return attempts


class ReplayUpstream:
    """Serves a recording's upstream side on a loopback port, for one replayed call: a script on the
    shared fake Realtime server, each session's state its own `_SessionPlayer`."""

    def __init__(self, recording: Recording, speed: float = 1.0, timeline: StreamTimeline | None = None) -> None:
        self.recording = recording
        self.speed = speed
        self.timeline = timeline or StreamTimeline()
        self.players: list[_SessionPlayer] = []
        self._attempts = _attempts(recording)
        self._sessions = [s for s in recording.sessions if any(e.direction == "open" for e in recording.of(UPSTREAM, s))]
        self._fake = FakeRealtime(
            self._play, answer=self._answer, refusal_text="refused as recorded\n", compression=None, max_size=None
        )

    @property
    def port(self) -> int:
        return self._fake.port

    @property
    def handshakes(self) -> int:
        return self._fake.attempts

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path_and_query: str = "/v1/realtime") -> str:
        return f"ws://127.0.0.1:{self.port}{path_and_query}"

    @property
    def missing_triggers(self) -> list[str]:
        return [f"session {p.session}: {what}" for p in self.players for what in p.missing_triggers]

    async def __aenter__(self) -> ReplayUpstream:
        await self._fake.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for player in self.players:
            player.ws.transport.abort()
        await self._fake.aclose()

    def _answer(self, attempt: int) -> int | None:
        planned = self._attempts[min(attempt, len(self._attempts) - 1)] if self._attempts else _Attempt(None)
        return planned.status

    async def _play(self, session: FakeSession) -> None:
        ws = session.ws
        index = len(self.players)
        if index >= len(self._sessions):
            # The bridge opened more sessions than the recorded one did: listen, say nothing.
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            return
        player = _SessionPlayer(ws, self.recording, self._sessions[index], self.speed, self.timeline)
        self.players.append(player)
        await player.run()
