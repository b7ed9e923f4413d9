"""The phone simulator's pure parts: Twilio's playout buffer and the scripted caller."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from bridge import media_streams as ms
from bridge.devtools.phone.caller import FRAME_BYTES, MULAW_SILENCE, Caller, CallerPlan, CallerState
from bridge.devtools.phone.playout import PlayoutBuffer
from bridge.devtools.phone.simulator import CallReport, _Phone


def test_marks_are_released_only_after_their_audio_played() -> None:
    buffer = PlayoutBuffer()
    buffer.add_media(b"\x01" * 200)
    assert buffer.add_mark("m1") == []
    buffer.add_media(b"\x02" * 100)
    assert buffer.add_mark("m2") == []
    audio, real, marks = buffer.play(160)
    assert (real, marks) == (160, []) and audio == b"\x01" * 160
    audio, real, marks = buffer.play(160)
    assert real == 140 and marks == ["m1", "m2"]
    assert audio == b"\x01" * 40 + b"\x02" * 100 + b"\xff" * 20
    assert buffer.played_samples == 300


def test_a_mark_on_an_empty_buffer_is_released_at_once() -> None:
    assert PlayoutBuffer().add_mark("m") == ["m"]


def test_clear_drops_audio_and_releases_every_pending_mark() -> None:
    buffer = PlayoutBuffer()
    buffer.add_media(b"\x01" * 400)
    buffer.add_mark("a")
    buffer.add_media(b"\x01" * 400)
    buffer.add_mark("b")
    buffer.play(100)
    assert buffer.clear() == ["a", "b"]
    assert buffer.cleared_samples == 700 and buffer.queued_samples == 0
    assert buffer.play(160)[1] == 0


def test_caller_waits_for_the_agent_to_finish_then_speaks_then_hangs_up() -> None:
    utterance = b"\x10" * (FRAME_BYTES * 3)
    caller = Caller(CallerPlan(utterances=(utterance,), pause_s=0.04, hangup_after_s=0.06))
    assert caller.tick(agent_audible=False) == MULAW_SILENCE  # nobody has spoken yet: keep listening
    assert caller.tick(agent_audible=True) == MULAW_SILENCE
    caller.tick(agent_audible=False)
    frames = [caller.tick(agent_audible=False) for _ in range(3)]
    assert frames == [b"\x10" * FRAME_BYTES] * 3
    assert caller.state is CallerState.LISTENING
    caller.tick(agent_audible=True)
    for _ in range(3):
        caller.tick(agent_audible=False)
    assert caller.state is CallerState.HUNG_UP


def test_caller_barges_in_while_the_agent_talks() -> None:
    caller = Caller(CallerPlan(utterances=(b"\x10" * FRAME_BYTES,), barge_in_after_s=0.06))
    for _ in range(2):
        assert caller.tick(agent_audible=True) == MULAW_SILENCE
    assert caller.tick(agent_audible=True) == b"\x10" * FRAME_BYTES


def test_caller_hangs_up_at_the_time_limit() -> None:
    caller = Caller(CallerPlan(max_call_s=0.1))
    for _ in range(5):
        caller.tick(agent_audible=True)
    assert caller.state is CallerState.HUNG_UP


# --- the phone's tick loop: when marks are echoed ----------------------------------------------


class _ScriptedBridgeSocket:
    """Stands in for the bridge's side of the socket: yields media then marks, records echoes."""

    def __init__(self, outbound: list[str]) -> None:
        self.outbound = outbound
        self.sent_at: dict[str, float] = {}  # mark name → when the phone echoed it
        self.yielded_media_at: float | None = None

    async def send(self, text: str) -> None:
        message = json.loads(text)
        if message["event"] == "mark":
            self.sent_at[message["mark"]["name"]] = time.monotonic()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str]:
        await asyncio.sleep(0.0123)  # between two playout steps
        for text in self.outbound:
            if self.yielded_media_at is None:
                self.yielded_media_at = time.monotonic()
            yield text


class _QuietCaller:
    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.state = CallerState.LISTENING

    def tick(self, agent_audible: bool) -> bytes:
        self.ticks -= 1
        if self.ticks <= 0:
            self.state = CallerState.HUNG_UP
        return MULAW_SILENCE

    def keys_due(self) -> list[str]:
        return []


def test_the_phone_echoes_a_mark_only_once_the_audio_before_it_has_played() -> None:
    """10 ms of audio then a mark: the echo may not come sooner than 10 ms after the audio arrived."""
    sid = "MZ" + "0" * 32
    ws = _ScriptedBridgeSocket([ms.media_message(sid, b"\x01" * 80), ms.mark_message(sid, "m1"),
                                ms.media_message(sid, b"\x02" * 4), ms.mark_message(sid, "m2")])
    phone = _Phone(ws, CallReport(call_sid="CA", stream_sid=sid), _QuietCaller(ticks=4), "AC", speed=1.0, step_ms=5)

    async def call() -> None:
        receiving = asyncio.create_task(phone.receive())
        await phone.talk()
        await receiving

    asyncio.run(call())
    assert ws.yielded_media_at is not None and set(ws.sent_at) == {"m1", "m2"}
    assert ws.sent_at["m1"] - ws.yielded_media_at >= 0.010
    # m2 follows half a millisecond of audio that plays in the same step as m1's last samples
    assert ws.sent_at["m2"] - ws.yielded_media_at >= 0.0105
