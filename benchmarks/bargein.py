"""Barge-in exactness: what the bridge tells the model the caller heard, against what the phone played.

    .venv/bin/python benchmarks/bargein.py            # one-way 0, 10, 30, 60 ms; 2 calls x 80 rounds each (~4 min)
    .venv/bin/python benchmarks/bargein.py --direct   # no network at all (the simulator before issue 14)
    .venv/bin/python benchmarks/bargein.py --calls 3 --rounds 100 --seed 7 --delays 30

Since issue 14 the phone simulator sits behind a simulated network (`bridge.devtools.phone.network`): each
delay d runs with jitter ±d/3 (`--jitter-ratio`), a 60 ms playout start delay
(`--playout-delay-ms`) and a 40 ms stall about every 10 s each way (`--no-bursts` to drop them).
"Heard" is what played until the `clear` reached the phone. Per delay it prints ours beside the
wall-clock method (whose media timestamps are those the bridge received, after the uplink delay):
|err| p50/p95/max, bias (claimed - heard), over-claims (> 1 ms; > 20 ms), truncate errors, items
being heard that were deleted, and the time from speech_started to silence at the phone.
`--no-network-model` holds the bridge's round-trip estimate cold (the accounting before issue 14);
`--no-media-clock` places echoes by their arrival only, not among the caller's media frames
(`bridge.uplink_clock`); `--no-clear-echo` keeps each truncate at the estimate made when the `clear` left (before the
clear's echo placed it); `--pace 1` streams the model in real time (outbound pacing).

Everything runs in this process on loopback: the real app under uvicorn (`bridge.devtools.local_bridge.served_bridge`,
`bridge.serving.serving`), the phone simulator as Twilio (`bridge.devtools.phone.place_call`, real time,
5 ms playout steps), and a scripted GA Realtime upstream defined here that enforces the real
service's truncate rules (`audio_end_ms` > 0 and <= the item's audio, assistant audio items only).

Each round the upstream sends one response of 1-3 items (audio items cut from
fixtures/audio/agent_*.wav, sometimes after a function_call item), streamed in 100 ms deltas 4x
faster than real time, and at a randomised moment sends `input_audio_buffer.speech_started`:

- `pre`       0-30 ms after the first audio delta was sent (often nothing heard yet);
- `pre_delta` after `response.created`/`output_item.added`, before the first delta (nothing heard);
- `mid`       at a random offset inside the first audio item;
- `across`    inside the second or third audio item (a third of them 0-30 ms past an item boundary);
- `double`    like `mid`, then a new response starts right after the clear and is interrupted
              15-50 ms after the first speech_started.

Ground truth is the simulator's own playback clock: `CallReport.clear_log` gives, for each
`clear`, the samples of the interrupted playback the caller had heard. The round's audio items
play back to back, and their 8 kHz lengths are known exactly (the same transcoder the bridge uses,
flushed at each item's end), so the heard samples say which item was being heard and how far in.

Measured side by side for the same interruptions:

- ours: the `conversation.item.truncate` the bridge actually sent (marks + clock, bridge/playback.py);
- wall-clock: what Twilio's sample (speech-assistant-openai-realtime-api, the OpenAI Realtime
  Twilio demo) would have sent, computed, not run: on a response's first audio delta it remembers
  the latest inbound media timestamp (`responseStartTimestampTwilio`); at speech_started,
  `audio_end_ms` = the latest media timestamp - that start, for the item of the newest delta
  (`lastAssistantItem`). Timestamps are those the bridge had received (after the uplink delay).
  Interruptions before the response's first delta send nothing (the sample's mark queue is empty).
  The sample was written for one audio item per response: on a response with several, it names
  the newest item with the time since the response began, so the table also shows the
  single-item responses on their own ("1 item").

Scoring, per interruption (one `clear` each): the error is |claimed - heard| on the interrupted
response's playback timeline (items back to back), so naming the wrong item counts as the distance
between the two positions. Under 1 ms heard, no truncate is the right answer (`audio_end_ms` is a
whole number > 0) and a truncate is "spurious". No truncate at all leaves the item whole, as if
heard to its end: that counts as an error of what was left of it, and as "missing" past 20 ms;
deleting it tells the service none of it was heard, an error of what was heard. A
truncate of an item of an earlier response is "item of another response". Audio items after the
one being heard that the service already holds (and the heard item itself when under 1 ms of it
was heard) are "unheard items left whole" unless deleted: the bridge sends
`conversation.item.delete` for them; the wall-clock method of the samples leaves them.

And the clear latency: from the upstream's send of speech_started to the simulator's receipt of
`clear`. The simulator's media timestamps and clear receipts are observed by wrapping two
`bridge.media_streams` helpers it calls (instrumentation only; nothing of the bridge is changed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
from machine import cpu_model
from websockets.asyncio.server import ServerConnection

from bridge.devtools.fake_realtime import FakeRealtime, FakeSession

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "fixtures" / "audio"
AUTH_TOKEN = "bargein-benchmark-token-0123456789abcdef"
MODEL_RATE = 24000
TWILIO_RATE = 8000
DELTA_MS = 100
DELTA_BYTES = MODEL_RATE * DELTA_MS // 1000 * 2  # 100 ms of 24 kHz PCM16
# Sending no truncate says "heard to the end of the item": a miss when more than this was left.
MISSING_MS = 20.0
OVER_CLAIM_MS = 1.0  # claimed - heard beyond this (audio_end_ms is whole ms) is an over-claim


# --- what a round is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemPlan:
    item_id: str
    kind: str  # "audio" or "function_call"
    pcm: bytes = b""  # 24 kHz PCM16 LE

    @property
    def samples_24k(self) -> int:
        return len(self.pcm) // 2

    def deltas(self) -> list[bytes]:
        return [self.pcm[i : i + DELTA_BYTES] for i in range(0, len(self.pcm), DELTA_BYTES)]


@dataclass(frozen=True)
class ResponsePlan:
    response_id: str
    items: tuple[ItemPlan, ...]

    @property
    def audio_items(self) -> list[ItemPlan]:
        return [item for item in self.items if item.kind == "audio"]

    @property
    def audio_ms(self) -> float:
        return sum(item.samples_24k for item in self.audio_items) * 1000 / MODEL_RATE


@dataclass(frozen=True)
class RoundPlan:
    index: int
    kind: str  # pre, pre_delta, mid, across, double, none
    response: ResponsePlan
    at_ms: float | None = None  # speech_started this long after the first delta was sent
    before_audio: bool = False  # speech_started after the item was added, before its first delta
    followup: ResponsePlan | None = None  # double: started right after the first clear
    second_after_ms: float = 0.0  # double: the second speech_started, after the first

    @property
    def interrupts(self) -> int:
        if self.kind == "none":
            return 0
        return 2 if self.followup is not None else 1


def load_clips() -> list[np.ndarray]:
    clips = []
    for path in sorted(AUDIO.glob("agent_*.wav")):
        with wave.open(str(path), "rb") as wav:
            if wav.getframerate() != MODEL_RATE or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise SystemExit(f"{path}: expected 24 kHz mono PCM16")
            clips.append(np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"))
    return clips


def audio_slice(rng: random.Random, clips: list[np.ndarray], ms: float) -> bytes:
    samples = int(ms * MODEL_RATE / 1000)
    clip = rng.choice(clips)
    start = rng.randrange(0, len(clip) - samples)
    return clip[start : start + samples].tobytes()


def random_rounds(rng: random.Random, count: int, tag: str, clips: list[np.ndarray]) -> list[RoundPlan]:
    """`count` randomised rounds (see the module docstring for the mix)."""
    rounds = []
    for index in range(count):
        kind = rng.choices(["pre", "mid", "across", "double"], weights=[20, 35, 25, 20])[0]
        prefix = f"{tag}_r{index}"

        def response(
            suffix: str, n_audio: int, tool_first: bool, first_ms: tuple[float, float], prefix: str = prefix
        ) -> ResponsePlan:
            items: list[ItemPlan] = []
            if tool_first:
                items.append(ItemPlan(f"item_{prefix}{suffix}_fc", "function_call"))
            for n in range(n_audio):
                span = first_ms if n == 0 else (250.0, 600.0)
                items.append(ItemPlan(f"item_{prefix}{suffix}_a{n}", "audio", audio_slice(rng, clips, rng.uniform(*span))))
            return ResponsePlan(f"resp_{prefix}{suffix}", tuple(items))

        if kind == "across":
            plan = response("", rng.choice([2, 3]), rng.random() < 0.5, (300.0, 600.0))
        else:
            n_audio = rng.choice([1, 1, 2, 3])
            plan = response("", n_audio, n_audio > 1 and rng.random() < 0.3, (300.0, 800.0))
        audio = plan.audio_items
        first_ms = audio[0].samples_24k * 1000 / MODEL_RATE
        if kind == "pre":
            if rng.random() < 0.25:
                rounds.append(RoundPlan(index, "pre_delta", plan, before_audio=True))
            else:
                rounds.append(RoundPlan(index, "pre", plan, at_ms=rng.uniform(0.0, 30.0)))
        elif kind == "mid":
            rounds.append(RoundPlan(index, "mid", plan, at_ms=rng.uniform(20.0, first_ms - 20.0)))
        elif kind == "across":
            target = rng.randrange(1, len(audio))
            before = sum(item.samples_24k for item in audio[:target]) * 1000 / MODEL_RATE
            length = audio[target].samples_24k * 1000 / MODEL_RATE
            into = rng.uniform(0.0, 30.0) if rng.random() < 1 / 3 else rng.uniform(30.0, length - 20.0)
            rounds.append(RoundPlan(index, "across", plan, at_ms=before + into))
        else:
            followup = response("_b", 1, False, (300.0, 500.0))
            rounds.append(
                RoundPlan(
                    index, "double", plan, at_ms=rng.uniform(20.0, first_ms - 20.0), followup=followup,
                    second_after_ms=rng.uniform(15.0, 50.0),
                )
            )
    return rounds


# --- the scripted upstream that enforces the real service's rules -------------------------------


@dataclass
class ItemState:
    plan: ItemPlan
    response_id: str
    sent_24k: int = 0  # audio generated (sent) so far: what the service holds for the item
    first_delta_at: float | None = None
    truncated_to_ms: int | None = None

    @property
    def audio_ms(self) -> float:
        have = self.sent_24k * 1000 / MODEL_RATE
        return have if self.truncated_to_ms is None else min(have, float(self.truncated_to_ms))


@dataclass
class ResponseState:
    plan: ResponsePlan
    created_at: float = 0.0
    first_delta_at: float | None = None
    done_at: float | None = None
    cancelled: bool = False
    first_delta: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_seen: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class SpeechStartedRecord:
    sent_at: float
    round_index: int
    kind: str
    nth: int  # 0, or 1 for the second speech_started of a double round
    response: ResponsePlan  # the response being interrupted (the newest one created)
    before_audio: bool  # no audio delta of that response had been sent
    last_item: str | None  # the newest item of that response that sent audio (what the samples truncate)
    last_item_sent_24k: int  # its audio so far
    response_first_delta_at: float | None = None  # when that response's first audio delta was sent


@dataclass
class TruncateRecord:
    received_at: float
    item_id: str
    content_index: Any
    audio_end_ms: Any
    error: str | None  # the real service's error message, or None when accepted


class RealtimeRulesError(Exception):
    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class UpstreamSession:
    """One connection: handshake, then the rounds; records everything the bridge sends."""

    def __init__(self, ws: ServerConnection, rounds: list[RoundPlan], pace: float, settle_s: float) -> None:
        self.ws = ws
        self.rounds = rounds
        self.pace = pace
        self.settle_s = settle_s
        self.items: dict[str, ItemState] = {}
        self.responses: list[ResponseState] = []
        self.active: ResponseState | None = None
        self.speech_started: list[SpeechStartedRecord] = []
        self.truncates: list[TruncateRecord] = []
        self.deleted: set[str] = set()
        self.cancels: list[tuple[float, str | None]] = []
        self.received_kinds: list[str] = []
        self.audio_flowing = asyncio.Event()
        self.finished = False
        self._events_sent = 0
        self._last_delta_item: dict[str, str] = {}  # response id -> item id of its newest delta

    async def send(self, kind: str, **fields: Any) -> None:
        self._events_sent += 1
        await self.ws.send(json.dumps({"type": kind, "event_id": f"event_{self._events_sent}", **fields}))

    async def run(self) -> None:
        await self.send("session.created", session={"type": "realtime", "id": "sess_bargein"})
        reader = asyncio.create_task(self._read(), name="upstream_read")
        try:
            # The caller's audio flows once the media stream is up and the call claimed this session.
            await asyncio.wait_for(self.audio_flowing.wait(), timeout=15)
            await asyncio.sleep(0.2)
            for plan in self.rounds:
                await self._round(plan)
            self.finished = True
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self.ws.close(1000, "rounds done")

    # --- what the bridge sends

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "input_audio_buffer.append":
                self.audio_flowing.set()
                continue
            self.received_kinds.append(kind)
            if kind == "session.update":
                await self.send("session.updated", session={"type": "realtime", "id": "sess_bargein"})
            elif kind == "response.cancel":
                await self._cancel(now)
            elif kind == "conversation.item.truncate":
                await self._truncate(event, now)
            elif kind == "conversation.item.delete":
                self.deleted.add(str(event.get("item_id")))
                await self.send("conversation.item.deleted", item_id=event.get("item_id"))

    async def _cancel(self, now: float) -> None:
        response = self.active
        self.cancels.append((now, response.plan.response_id if response else None))
        if response is None:
            await self._error(RealtimeRulesError("response_cancel_not_active", "Cancellation failed: no active response found", ""))
            return
        response.cancelled = True
        response.cancel_seen.set()
        response.done_at = now
        self.active = None
        await self.send("response.done", response={"id": response.plan.response_id, "status": "cancelled"})

    def _check_truncate(self, item_id: Any, content_index: Any, audio_end_ms: Any) -> ItemState:
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise RealtimeRulesError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        if item.plan.kind != "audio":
            raise RealtimeRulesError("invalid_value", "Only model output audio messages can be truncated", "item_id")
        if content_index != 0:
            raise RealtimeRulesError("invalid_value", f"Invalid content_index: {content_index}", "content_index")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms <= 0:
            raise RealtimeRulesError(
                "invalid_value", f"Invalid audio_end_ms: {audio_end_ms}. It must be a positive integer.", "audio_end_ms"
            )
        if audio_end_ms > item.audio_ms:
            raise RealtimeRulesError(
                "invalid_value",
                f"Audio content of {int(item.audio_ms)}ms is already shorter than {audio_end_ms}ms",
                "audio_end_ms",
            )
        return item

    async def _truncate(self, event: dict[str, Any], now: float) -> None:
        item_id, index, end = event.get("item_id"), event.get("content_index"), event.get("audio_end_ms")
        try:
            item = self._check_truncate(item_id, index, end)
        except RealtimeRulesError as exc:
            self.truncates.append(TruncateRecord(now, str(item_id), index, end, exc.message))
            await self._error(exc)
            return
        item.truncated_to_ms = end
        self.truncates.append(TruncateRecord(now, item.plan.item_id, index, end, None))
        await self.send("conversation.item.truncated", item_id=item.plan.item_id, content_index=0, audio_end_ms=end)

    async def _error(self, exc: RealtimeRulesError) -> None:
        await self.send(
            "error",
            error={"type": "invalid_request_error", "code": exc.code, "message": exc.message, "param": exc.param or None},
        )

    # --- what the model says

    async def _speak(self, response: ResponseState, before_first_delta: Callable[[], Awaitable[None]] | None = None) -> None:
        """One response in GA event names, audio 'pace' times faster than real time, until cancelled."""
        plan = response.plan
        rid = plan.response_id
        self.active = response
        self.responses.append(response)
        response.created_at = time.monotonic()
        await self.send("response.created", response={"id": rid, "object": "realtime.response", "status": "in_progress", "output": []})
        interval = DELTA_MS / 1000 / self.pace
        started: float | None = None
        sent = 0
        for index, item in enumerate(plan.items):
            if response.cancelled:
                break
            state = ItemState(item, rid)
            self.items[item.item_id] = state
            where = {"response_id": rid, "output_index": index}
            if item.kind == "function_call":
                fc = {"id": item.item_id, "type": "function_call", "call_id": f"call_{item.item_id}", "name": "lookup_order"}
                await self.send("response.output_item.added", **where, item={**fc, "status": "in_progress", "arguments": ""})
                await self.send("response.output_item.done", **where, item={**fc, "status": "completed", "arguments": "{}"})
                continue
            message = {"id": item.item_id, "object": "realtime.item", "type": "message", "role": "assistant"}
            await self.send("response.output_item.added", **where, item={**message, "status": "in_progress", "content": []})
            for delta in item.deltas():
                if started is not None:
                    await asyncio.sleep(max(0.0, started + sent * interval - time.monotonic()))
                elif before_first_delta is not None:
                    await before_first_delta()
                if response.cancelled:
                    break
                now = time.monotonic()
                if started is None:
                    started = response.first_delta_at = now
                    response.first_delta.set()
                if state.first_delta_at is None:
                    state.first_delta_at = now
                state.sent_24k += len(delta) // 2
                self._last_delta_item[rid] = item.item_id
                sent += 1
                await self.send(
                    "response.output_audio.delta", **where, item_id=item.item_id, content_index=0,
                    delta=base64.b64encode(delta).decode("ascii"),
                )
            if response.cancelled:
                break
            await self.send("response.output_audio.done", **where, item_id=item.item_id, content_index=0)
            await self.send("response.output_item.done", **where, item={**message, "status": "completed"})
        if not response.cancelled:
            response.done_at = time.monotonic()
            if self.active is response:
                self.active = None
            await self.send("response.done", response={"id": rid, "status": "completed"})

    async def _speech_started(self, plan: RoundPlan, response: ResponseState, nth: int) -> SpeechStartedRecord:
        rid = response.plan.response_id
        last = self._last_delta_item.get(rid)
        record = SpeechStartedRecord(
            sent_at=time.monotonic(),
            round_index=plan.index,
            kind=plan.kind,
            nth=nth,
            response=response.plan,
            before_audio=response.first_delta_at is None,
            last_item=last,
            last_item_sent_24k=self.items[last].sent_24k if last else 0,
            response_first_delta_at=response.first_delta_at,
        )
        self.speech_started.append(record)
        await self.send("input_audio_buffer.speech_started", audio_start_ms=0, item_id=f"item_user_{plan.index}_{nth}")
        return record

    async def _round(self, plan: RoundPlan) -> None:
        first = ResponseState(plan.response)
        tasks: list[asyncio.Task[None]] = []
        if plan.before_audio:
            async def interrupt() -> None:
                await self._speech_started(plan, first, 0)

            tasks.append(asyncio.create_task(self._speak(first, before_first_delta=interrupt)))
            await first.first_delta.wait()
        elif plan.kind == "none":
            tasks.append(asyncio.create_task(self._speak(first)))
            await first.first_delta.wait()
            await tasks[0]
            assert first.first_delta_at is not None
            await _sleep_until(first.first_delta_at + plan.response.audio_ms / 1000 + 0.1)
        else:
            assert plan.at_ms is not None
            tasks.append(asyncio.create_task(self._speak(first)))
            await first.first_delta.wait()
            assert first.first_delta_at is not None
            await _sleep_until(first.first_delta_at + plan.at_ms / 1000)
            record = await self._speech_started(plan, first, 0)
            if plan.followup is not None:
                if first.done_at is None:
                    # The bridge cancels an active response: start the next one only after that,
                    # as the service would (a cancel without an id cancels whatever is active).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(first.cancel_seen.wait(), timeout=0.5)
                second = ResponseState(plan.followup)
                tasks.append(asyncio.create_task(self._speak(second)))
                await second.first_delta.wait()
                assert second.first_delta_at is not None
                await _sleep_until(max(record.sent_at + plan.second_after_ms / 1000, second.first_delta_at + 0.005))
                await self._speech_started(plan, second, 1)
        await asyncio.sleep(self.settle_s)
        for task in tasks:
            await asyncio.wait_for(task, timeout=10)


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class RulesUpstream:
    """A GA Realtime server on loopback that plays `rounds` to the (one) session that connects (a script
    on the shared fake Realtime server, bridge/devtools/fake_realtime.py)."""

    def __init__(self, rounds: list[RoundPlan], pace: float = 4.0, settle_s: float = 0.25) -> None:
        self.rounds = rounds
        self.pace = pace
        self.settle_s = settle_s
        self.sessions: list[UpstreamSession] = []
        self.failures: list[BaseException] = []
        self.url = ""
        self._fake = FakeRealtime(self._handle, max_size=None)

    async def __aenter__(self) -> Self:
        await self._fake.start()
        self.url = self._fake.url
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._fake.aclose()

    async def _handle(self, fake: FakeSession) -> None:
        ws = fake.ws
        session = UpstreamSession(ws, self.rounds if not self.sessions else [], self.pace, self.settle_s)
        self.sessions.append(session)
        try:
            await session.run()
        except Exception as exc:  # noqa: BLE001 - recorded and reported, never silently lost
            self.failures.append(exc)
            await ws.close(1011, "scripted upstream failed")


# --- observing the simulator ---------------------------------------------------------------------


@dataclass
class PhoneTap:
    """Inbound media timestamps as the phone sends them and `clear`s as it receives them, per stream."""

    media: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    clears: dict[str, list[float]] = field(default_factory=dict)
    # Inbound media timestamps as the bridge receives them (after the simulated network's uplink delay).
    bridge_media: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    @contextlib.contextmanager
    def installed(self) -> Iterator[PhoneTap]:
        from bridge import media_streams as ms

        build, parse, parse_inbound = ms.inbound_media_message, ms.parse_outbound_message, ms.parse_twilio_message

        def inbound_media_message(stream_sid: str, payload: bytes, chunk: int, timestamp_ms: int, sequence: int) -> str:
            self.media.setdefault(stream_sid, []).append((time.monotonic(), timestamp_ms))
            return build(stream_sid, payload, chunk, timestamp_ms, sequence)

        def parse_outbound_message(text: str, stream_sid: str) -> Any:
            event = parse(text, stream_sid)
            if isinstance(event, ms.OutboundClear):
                self.clears.setdefault(stream_sid, []).append(time.monotonic())
            return event

        def parse_twilio_message(text: str) -> Any:
            event = parse_inbound(text)
            if isinstance(event, ms.Media):
                self.bridge_media.setdefault(event.stream_sid, []).append((time.monotonic(), event.timestamp_ms))
            return event

        ms.inbound_media_message, ms.parse_outbound_message = inbound_media_message, parse_outbound_message
        ms.parse_twilio_message = parse_twilio_message
        try:
            yield self
        finally:
            ms.inbound_media_message, ms.parse_outbound_message, ms.parse_twilio_message = build, parse, parse_inbound


# --- one call --------------------------------------------------------------------------------------


@dataclass
class CallResult:
    report: Any  # bridge.devtools.phone.simulator.CallReport
    upstream: RulesUpstream
    media: list[tuple[float, int]]
    clears: list[float]
    bridge_media: list[tuple[float, int]] = field(default_factory=list)

    @property
    def session(self) -> UpstreamSession:
        return self.upstream.sessions[0]


async def run_call(
    rounds: list[RoundPlan], tap: PhoneTap, pace: float = 4.0, settle_s: float = 0.25, network: Any = None
) -> CallResult:
    """One simulated phone call, in real time, through the real app, against `rounds`."""
    from bridge.devtools.local_bridge import served_bridge
    from bridge.devtools.phone import place_call
    from bridge.devtools.phone.caller import CallerPlan
    from bridge.settings import Settings

    async with RulesUpstream(rounds, pace=pace, settle_s=settle_s) as upstream:
        settings = Settings(twilio_auth_token=AUTH_TOKEN, upstream_url=upstream.url)
        settings.validate()
        async with served_bridge(settings) as bridge:
            plan = CallerPlan(max_call_s=3600.0, hangup_after_s=1e9)
            report = await place_call(bridge.url, plan, auth_token=AUTH_TOKEN, speed=1.0, network=network)
    if upstream.failures:
        raise RuntimeError(f"the scripted upstream failed: {upstream.failures[0]!r}") from upstream.failures[0]
    if not upstream.sessions or not upstream.sessions[0].finished:
        raise RuntimeError(f"the call ended before the rounds did ({report.ended_by}, close {report.close_code})")
    sid = report.stream_sid
    return CallResult(report, upstream, tap.media.get(sid, []), tap.clears.get(sid, []), tap.bridge_media.get(sid, []))


# --- scoring -----------------------------------------------------------------------------------------


def item_lengths_8k(item: ItemPlan) -> int:
    """The item's 8 kHz samples as the bridge sends them: its transcoder, fed the same deltas, flushed."""
    from voice_codecs import ModelToCaller

    transcoder = ModelToCaller()
    return sum(len(transcoder.process(delta)) for delta in item.deltas()) + len(transcoder.flush())


@dataclass
class Claim:
    """A truncate as (item, audio_end_ms), and where it lands on the response's playback timeline."""

    item_id: str
    audio_end_ms: float
    position_ms: float | None  # None: the item is not an audio item of the interrupted response
    rejected: str | None  # the real service's error, or None


@dataclass
class Interruption:
    call: int
    round_index: int
    kind: str
    nth: int
    speech_started_at: float
    clear_at: float | None
    heard_samples: int | None  # truth; None when no clear arrived
    truth_item: str | None
    truth_ms: float | None  # into truth_item
    ours: list[Claim]
    wall: Claim | None
    # Audio items of the interrupted response that the service holds (audio was sent for them) and
    # that come after the one being heard: the caller heard none of them.
    unheard_items: list[str] = field(default_factory=list)
    item_ms: dict[str, float] = field(default_factory=dict)  # 8 kHz length of each audio item, in ms
    deleted_items: list[str] = field(default_factory=list)  # of those, the ones the bridge deleted
    truth_item_deleted: bool = False  # the bridge deleted the item being heard: "nothing of it heard"

    @property
    def truth_position_ms(self) -> float | None:
        return None if self.heard_samples is None else self.heard_samples * 1000 / TWILIO_RATE

    @property
    def clear_latency_ms(self) -> float | None:
        return None if self.clear_at is None else (self.clear_at - self.speech_started_at) * 1000


def _timeline(response: ResponsePlan, cache: dict[str, int]) -> list[tuple[str, int, int]]:
    """(item_id, first 8 kHz sample, samples) of each audio item, back to back."""
    out, at = [], 0
    for item in response.audio_items:
        if item.item_id not in cache:
            cache[item.item_id] = item_lengths_8k(item)
        out.append((item.item_id, at, cache[item.item_id]))
        at += cache[item.item_id]
    return out


def _media_timestamp_at(media: list[tuple[float, int]], t: float) -> int | None:
    """The latest inbound media timestamp the phone had sent by time `t`."""
    latest = None
    for sent_at, timestamp in media:
        if sent_at > t:
            break
        latest = timestamp
    return latest


def _truncate_owners(truncates: list[Any], starts: list[Any]) -> dict[int, int]:
    """Which interruption each truncate answers (by `id`): the latest before it whose response holds
    its item (a truncate waits for its clear's echo, so it may come after the next speech_started,
    as in a `double` round); one naming an item of no interruption's response goes by time."""
    owners: dict[int, int] = {}
    for t in truncates:
        before = [n for n, ss in enumerate(starts) if ss.sent_at <= t.received_at]
        holding = [n for n in before if any(item.item_id == t.item_id for item in starts[n].response.items)]
        if holding or before:
            owners[id(t)] = (holding or before)[-1]
    return owners


def score_call(call_index: int, result: CallResult, cache: dict[str, int] | None = None) -> list[Interruption]:
    cache = {} if cache is None else cache
    session = result.session
    log = result.report.clear_log
    if len(log) != len(result.clears):
        raise RuntimeError(f"clear_log has {len(log)} entries but the tap saw {len(result.clears)} clears")
    starts = session.speech_started
    owner = _truncate_owners(session.truncates, starts)
    out = []
    for n, ss in enumerate(starts):
        window_end = starts[n + 1].sent_at if n + 1 < len(starts) else math.inf
        if len(result.clears) == len(starts):
            # One clear per speech_started, in order: on a network a clear can reach the phone after
            # the next speech_started was sent (a `double` round's second comes 15-50 ms later).
            clear_indices = [n]
        else:
            clear_indices = [i for i, t in enumerate(result.clears) if ss.sent_at <= t < window_end]
        clear_at = heard = None
        if clear_indices:
            i = clear_indices[0]
            clear_at = result.clears[i]
            # The simulator's count is of the segment playing at the clear; before the response's first
            # delta nothing of it was queued (the count then still describes the previous segment).
            heard = 0 if ss.before_audio else log[i][1]
        timeline = _timeline(ss.response, cache)
        truth_item = truth_ms = None
        if heard:
            for item_id, first, samples in timeline:
                if first < heard <= first + samples:
                    truth_item, truth_ms = item_id, (heard - first) * 1000 / TWILIO_RATE
            if truth_item is None:
                raise RuntimeError(
                    f"call {call_index} round {ss.round_index} ({ss.kind}, nth {ss.nth}): heard {heard} samples, "
                    f"past the response ({timeline}); clear at {clear_at - ss.sent_at if clear_at else None}"
                )
        offsets = {item_id: first * 1000 / TWILIO_RATE for item_id, first, _ in timeline}

        ours = [
            Claim(t.item_id, float(t.audio_end_ms), offsets[t.item_id] + t.audio_end_ms if t.item_id in offsets else None, t.error)
            for t in session.truncates
            if owner.get(id(t)) == n
        ]
        wall = None
        if not ss.before_audio and ss.last_item is not None and ss.response_first_delta_at is not None:
            # Twilio's sample (speech-assistant-openai-realtime-api): on a response's first audio delta
            # `responseStartTimestampTwilio = latestMediaTimestamp`; on speech_started with marks pending,
            # `audio_end_ms = latestMediaTimestamp - responseStartTimestampTwilio` for `lastAssistantItem`
            # (the item of the newest delta), then both are reset. The start is the response's, not the item's.
            # What the bridge knew: the timestamps it had received (the uplink delays them).
            media = result.bridge_media or result.media
            now_ts = _media_timestamp_at(media, ss.sent_at)
            start_ts = _media_timestamp_at(media, ss.response_first_delta_at)
            elapsed = (now_ts or 0) - (start_ts or 0)
            have_ms = ss.last_item_sent_24k * 1000 / MODEL_RATE
            rejected = None
            if elapsed <= 0:
                rejected = f"Invalid audio_end_ms: {elapsed}. It must be a positive integer."
            elif elapsed > have_ms:
                rejected = f"Audio content of {int(have_ms)}ms is already shorter than {elapsed}ms"
            wall = Claim(ss.last_item, float(elapsed), offsets[ss.last_item] + elapsed, rejected)
        order = [item_id for item_id, _, _ in timeline]
        # Under 1 ms heard counts as nothing heard: no audio_end_ms can say it.
        heard_ms = (heard or 0) * 1000 // TWILIO_RATE
        after = order.index(truth_item) + 1 if truth_item is not None and heard_ms >= 1 else 0
        unheard = [i for i in order[after:] if session.items.get(i) is not None and session.items[i].sent_24k > 0]
        out.append(
            Interruption(
                call_index, ss.round_index, ss.kind, ss.nth, ss.sent_at, clear_at, heard, truth_item, truth_ms, ours, wall,
                unheard, {item_id: samples * 1000 / TWILIO_RATE for item_id, _, samples in timeline},
                [i for i in unheard if i in session.deleted], truth_item in session.deleted,
            )
        )
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    array = np.asarray(values, dtype=float)
    return {
        "p50": round(float(np.percentile(array, 50)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "max": round(float(array.max()), 2),
    }


def summarise(interruptions: list[Interruption]) -> dict[str, Any]:
    """The JSON result: per method, |claimed - heard| on the response's timeline and the rule checks."""

    def method(claims_of: Callable[[Interruption], list[Claim]], deletes: bool = False) -> dict[str, Any]:
        errors, rejected, missing, spurious, wrong_item, foreign, unheard, heard_deleted = [], 0, 0, 0, 0, 0, 0, 0
        signed: list[float] = []  # claimed - heard: > 0 is an over-claim (the model is told more was heard)
        for event in interruptions:
            claims = claims_of(event)
            rejected += sum(1 for c in claims if c.rejected)
            heard = event.heard_samples
            if heard is None:
                continue
            named = {c.item_id for c in claims if c.rejected is None} | (set(event.deleted_items) if deletes else set())
            unheard += sum(1 for item_id in event.unheard_items if item_id not in named)
            # audio_end_ms is a whole number > 0: under 1 ms heard, "no truncate" is the right answer.
            representable = heard * 1000 // TWILIO_RATE >= 1
            own = [c for c in claims if c.position_ms is not None]
            foreign += len(claims) - len(own)  # an item of another (earlier) response
            if not own:
                if representable and deletes and event.truth_item_deleted:
                    # Deleted: the model is told none of it was heard, an under-claim of all that was.
                    assert event.truth_ms is not None
                    errors.append(event.truth_ms)
                    signed.append(-event.truth_ms)
                    heard_deleted += 1
                elif representable:
                    # No truncate leaves the item whole: as if the caller heard it to its end.
                    assert event.truth_item is not None and event.truth_ms is not None
                    left_ms = event.item_ms[event.truth_item] - event.truth_ms
                    errors.append(left_ms)
                    signed.append(left_ms)
                    missing += left_ms > MISSING_MS
                continue
            spurious += len(own) - (1 if representable else 0)
            claim = own[0]
            errors.append(abs(claim.position_ms - event.truth_position_ms))  # type: ignore[operator]
            signed.append(claim.position_ms - event.truth_position_ms)  # type: ignore[operator]
            if representable:
                wrong_item += claim.item_id != event.truth_item
        p = _percentiles(errors)
        return {
            "abs_err_ms_p50": p["p50"],
            "abs_err_ms_p95": p["p95"],
            "abs_err_ms_max": p["max"],
            "scored": len(errors),
            "truncate_errors": rejected,
            "missing_or_spurious_truncates": missing + spurious + foreign,
            "missing": missing,
            "spurious": spurious,
            "other_item": foreign,
            "wrong_item_in_response": wrong_item,
            "unheard_items_left_whole": unheard,
            "heard_item_deleted": heard_deleted,
            "bias_ms": round(float(np.mean(signed)), 2) if signed else None,
            # audio_end_ms is whole milliseconds: an over-claim is more than 1 ms past what was heard.
            "over_claims": sum(1 for e in signed if e > OVER_CLAIM_MS),
            "over_claims_pct": round(100.0 * sum(1 for e in signed if e > OVER_CLAIM_MS) / len(signed), 1) if signed else None,
            "over_claims_over_20ms": sum(1 for e in signed if e > 20.0),
            "over_claim_ms_max": round(max(signed), 2) if signed else None,
        }

    latencies = [e.clear_latency_ms for e in interruptions if e.clear_latency_ms is not None]
    single = [e for e in interruptions if len(e.item_ms) == 1]
    if len(single) < len(interruptions):
        extra = {"single_item": summarise(single)} if single else {}
    else:
        extra = {}
    return {
        **extra,
        "interruptions": len(interruptions),
        "no_clear": sum(1 for e in interruptions if e.clear_at is None),
        "ours": method(lambda e: e.ours, deletes=True),
        "wall_clock": method(lambda e: [e.wall] if e.wall is not None else []),
        "clear_latency_ms": _percentiles(latencies),
    }


def by_kind(interruptions: list[Interruption]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, list[Interruption]] = {}
    for event in interruptions:
        kinds.setdefault(event.kind if event.nth == 0 else "double_2nd", []).append(event)
    return {kind: summarise(events) for kind, events in sorted(kinds.items())}


# --- the run -------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))


def print_table(result: dict[str, Any], kinds: dict[str, dict[str, Any]], machine: str, elapsed_s: float) -> None:
    ours, wall, latency = result["ours"], result["wall_clock"], result["clear_latency_ms"]
    rows = [
        ("|audio_end - heard| p50 (ms)", ours["abs_err_ms_p50"], wall["abs_err_ms_p50"]),
        ("|audio_end - heard| p95 (ms)", ours["abs_err_ms_p95"], wall["abs_err_ms_p95"]),
        ("|audio_end - heard| max (ms)", ours["abs_err_ms_max"], wall["abs_err_ms_max"]),
        ("interruptions scored", ours["scored"], wall["scored"]),
        ("truncate errors (real rules)", ours["truncate_errors"], wall["truncate_errors"]),
        ("missing or spurious truncates", ours["missing_or_spurious_truncates"], wall["missing_or_spurious_truncates"]),
        ("  missing (> 20 ms left, not truncated)", ours["missing"], wall["missing"]),
        ("  spurious (under 1 ms heard)", ours["spurious"], wall["spurious"]),
        ("  item of another response", ours["other_item"], wall["other_item"]),
        ("other item of the response", ours["wrong_item_in_response"], wall["wrong_item_in_response"]),
        ("unheard items left whole", ours["unheard_items_left_whole"], wall["unheard_items_left_whole"]),
        ("heard item deleted (told none heard)", ours["heard_item_deleted"], wall["heard_item_deleted"]),
    ]
    print(f"\nBarge-in exactness: {result['interruptions']} interruptions in {elapsed_s:.0f} s ({machine})")
    print(f"{'metric':<40} {'ours (marks + clock)':>22} {'wall-clock (timestamps)':>25}")
    for name, a, b in rows:
        print(f"{name:<40} {_fmt(a):>22} {_fmt(b):>25}")
    print(
        f"{'clear latency p50/p95/max (ms)':<40} "
        f"{_fmt(latency['p50'])} / {_fmt(latency['p95'])} / {_fmt(latency['max'])}   (speech_started sent -> clear received)"
    )
    if result["no_clear"]:
        print(f"speech_started with no clear: {result['no_clear']}")
    print(f"\n{'by kind':<12} {'n':>4} {'ours p95':>9} {'ours max':>9} {'ours m/s':>9} {'wall p95':>9} {'wall max':>9} {'wall rejected':>14}")
    for kind, k in kinds.items():
        o, w = k["ours"], k["wall_clock"]
        print(
            f"{kind:<12} {k['interruptions']:>4} {_fmt(o['abs_err_ms_p95']):>9} {_fmt(o['abs_err_ms_max']):>9} "
            f"{o['missing_or_spurious_truncates']:>9} {_fmt(w['abs_err_ms_p95']):>9} {_fmt(w['abs_err_ms_max']):>9} "
            f"{w['truncate_errors']:>14}"
        )


async def benchmark(
    calls: int, rounds: int, seed: int, network: Any = None, pace: float = 4.0
) -> tuple[list[Interruption], float]:
    rng = random.Random(seed)
    clips = load_clips()
    plans = [random_rounds(rng, rounds, f"c{c}", clips) for c in range(calls)]
    tap = PhoneTap()
    started = time.monotonic()
    with tap.installed():

        async def staggered(c: int) -> CallResult:
            await asyncio.sleep(0.37 * c)  # calls do not line their rounds up
            profile = None if network is None else dataclasses.replace(network, seed=network.seed + 1000 * c)
            return await run_call(plans[c], tap, pace=pace, network=profile)

        results = await asyncio.gather(*(staggered(c) for c in range(calls)))
    elapsed = time.monotonic() - started
    cache: dict[str, int] = {}
    interruptions = [event for c, result in enumerate(results) for event in score_call(c, result, cache)]
    return interruptions, elapsed


def machine_description() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"


def network_profile(delay_ms: float, jitter_ratio: float, playout_ms: float, bursts: bool, seed: int) -> Any:
    from bridge.devtools.phone.network import NetworkProfile

    realistic = NetworkProfile.realistic(delay_ms, seed=seed)
    return dataclasses.replace(
        realistic,
        jitter_ms=delay_ms * jitter_ratio,
        playout_delay_ms=playout_ms,
        burst_every_s=realistic.burst_every_s if bursts else 0.0,
        burst_ms=realistic.burst_ms if bursts else 0.0,
    )


def print_network_table(rows: list[dict[str, Any]]) -> None:
    """One line per network: ours beside the wall-clock method, and how fast the phone went quiet."""
    print("\nBarge-in on a network (jitter, playout start delay, stalls as in the profile column)")
    head = (
        f"{'one-way delay':<22} {'n':>4} {'method':<18} {'|err| p50':>9} {'p95':>6} {'max':>7} {'bias':>7} "
        f"{'over %':>7} {'over>20':>7} {'trunc err':>9} {'heard del':>9} {'silence p50/p95':>16}"
    )
    print(head)
    for row in rows:
        r = row["result"]
        net = row["network"]
        label = f"{net['delay_ms']:.0f} ± {net['jitter_ms']:.0f} ms, P {net['playout_delay_ms']:.0f}"
        silence = r["clear_latency_ms"]
        single = r.get("single_item")
        methods = [("ours", r["ours"], "ours"), ("wall-clock", r["wall_clock"], "wall_clock")]
        if single is not None:
            n1 = single["interruptions"]
            methods += [(f"ours 1 item ({n1})", single["ours"], "ours1"), ("wall 1 item", single["wall_clock"], "wall1")]
        for name, m, key in methods:
            quiet = f"{_fmt(silence['p50'])} / {_fmt(silence['p95'])}" if key == "ours" else ""
            print(
                f"{label if key == 'ours' else '':<22} {r['interruptions'] if key == 'ours' else '':>4} {name:<18} "
                f"{_fmt(m['abs_err_ms_p50']):>9} {_fmt(m['abs_err_ms_p95']):>6} {_fmt(m['abs_err_ms_max']):>7} "
                f"{_fmt(m['bias_ms']):>7} {_fmt(m['over_claims_pct']):>7} {m['over_claims_over_20ms']:>7} "
                f"{m['truncate_errors']:>9} {m['heard_item_deleted']:>9} {quiet:>16}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2, help="concurrent simulated calls (default 2)")
    parser.add_argument("--rounds", type=int, default=80, help="rounds per call and network (default 80)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--delays", default="0,10,30,60", help="one-way delays to run, ms (default 0,10,30,60)")
    parser.add_argument("--jitter-ratio", type=float, default=1 / 3, help="jitter as a share of the delay (default 1/3)")
    parser.add_argument("--playout-delay-ms", type=float, default=60.0, help="Twilio's playout start delay (default 60)")
    parser.add_argument("--no-bursts", action="store_true", help="no stalls (the profile has a 40 ms one every ~10 s each way)")
    parser.add_argument("--direct", action="store_true", help="no simulated network at all (the simulator as before issue 14)")
    parser.add_argument("--no-network-model", action="store_true",
                        help="instrumentation: the bridge's round-trip and playout estimates held at 0 (the accounting before issue 14)")
    parser.add_argument("--no-clear-echo", action="store_true",
                        help="instrumentation: the truncate keeps the estimate made when the clear left (before the clear's echo placed it)")
    parser.add_argument("--no-media-clock", action="store_true",
                        help="instrumentation: echoes placed by their arrival only, not among the caller's media frames")
    parser.add_argument("--pace", type=float, default=4.0,
                        help="how many times faster than real time the model streams (default 4, as the real services); "
                        "1 keeps what is sent to Twilio about one 100 ms delta ahead of playback (outbound pacing)")
    parser.add_argument("--details", type=Path, help="write every interruption as JSON lines here")
    args = parser.parse_args(argv)

    from bridge.logs import configure_logging

    configure_logging("console", "error")  # the bridge logs every barge-in at info
    if args.no_network_model:
        from bridge.round_trip import RoundTripEstimator
        from bridge.uplink_clock import UplinkClock

        # Never measured: every estimate is its cold-start value, the accounting without a network.
        RoundTripEstimator.round_trip_s = property(lambda self: None)  # type: ignore[method-assign,assignment]
        UplinkClock.place = lambda self, now: None  # type: ignore[method-assign]
    if args.no_media_clock:
        from bridge.uplink_clock import UplinkClock

        UplinkClock.place = lambda self, now: None  # type: ignore[method-assign]
    if args.no_clear_echo:
        from bridge.clear_placement import ClearPlacements

        ClearPlacements.heard = lambda self, item_id, content_index, clear=None: None  # type: ignore[method-assign]
    delays = [None] if args.direct else [float(d) for d in args.delays.split(",")]
    rows, all_interruptions = [], []
    for delay in delays:
        network = None if delay is None else network_profile(delay, args.jitter_ratio, args.playout_delay_ms, not args.no_bursts, args.seed)
        interruptions, elapsed = asyncio.run(benchmark(args.calls, args.rounds, args.seed, network, args.pace))
        result = summarise(interruptions)
        kinds = by_kind(interruptions)
        described = dataclasses.asdict(network) if network is not None else {"delay_ms": 0.0, "jitter_ms": 0.0, "playout_delay_ms": 0.0}
        if len(delays) == 1:
            print_table(result, kinds, machine_description(), elapsed)
        rows.append({"network": described, "result": result, "by_kind": kinds, "seconds": round(elapsed, 1)})
        all_interruptions += [(described, e) for e in interruptions]
        print(f"one-way delay {described['delay_ms']:.0f} ms: {result['interruptions']} interruptions in {elapsed:.0f} s", flush=True)
    print_network_table(rows)
    if args.details:
        with args.details.open("w") as out:
            for network, e in all_interruptions:
                out.write(
                    json.dumps(
                        {
                            "delay_ms": network["delay_ms"], "call": e.call, "round": e.round_index, "kind": e.kind,
                            "nth": e.nth, "heard_samples": e.heard_samples, "truth_item": e.truth_item,
                            "truth_ms": e.truth_ms, "ours": [vars(c) for c in e.ours],
                            "wall": vars(e.wall) if e.wall else None, "clear_latency_ms": e.clear_latency_ms,
                        }
                    )
                    + "\n"
                )
    print(json.dumps({"rows": rows, "network_model": not args.no_network_model, "clear_echo": not args.no_clear_echo, "media_clock": not args.no_media_clock, "pace": args.pace, "machine": machine_description()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
