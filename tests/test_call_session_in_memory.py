"""A whole call driven through in-memory ports (tests/fake_ports.py): no sockets, no clock but the
test's. The same session runs over loopback in tests/test_call_end_to_end.py and the others."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridge import media_streams as ms
from bridge.call import CallSession, CallSetup, EndReason, StartRefused
from bridge.call.rollover import RolloverPolicy
from bridge.profiles import default_profile, session_config
from bridge.realtime_events import (
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    ResponseFinished,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    UpstreamError,
)
from bridge.settings import Settings
from bridge.telemetry import Metrics
from bridge.tools import default_registry
from tests.fake_ports import FakeModel, FakeTwilio


def in_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the suite has no async plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


SID = "MZ0001"
START = ms.Start(SID, "CA0001", "AC0001", ("inbound",), {}, {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
PCM_100MS = b"\x00\x10" * 2400  # 100 ms of 24 kHz PCM16


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _setup(model: FakeModel, replacement: FakeModel | None = None, **fields: object) -> CallSetup:
    async def connected() -> FakeModel:
        return model

    async def reconnect() -> FakeModel:
        if replacement is None:
            raise OSError("no second session")
        return replacement

    config = session_config(default_profile(Settings()), "pcm24k", default_registry().specs())
    return CallSetup(session_config=config, upstream=connected(), reconnect=reconnect, **fields)  # type: ignore[arg-type]


async def _until(condition, what: str, timeout_s: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def _call(twilio: FakeTwilio, prepare, clock: Clock | None = None) -> CallSession:  # type: ignore[no-untyped-def]
    return CallSession(twilio, prepare, audio_mode="pcm24k", metrics=Metrics(), clock=clock or Clock())  # type: ignore[arg-type]


def _media(n: int = 1) -> list[ms.Media]:
    return [ms.Media(SID, "inbound", i, i * 20, b"\xff" * 160) for i in range(n)]


@in_loop
async def test_greeting_plays_caller_audio_reaches_the_model_and_a_hangup_ends_the_call() -> None:
    twilio, model = FakeTwilio(), FakeModel()
    call = _call(twilio, lambda start: _setup(model))
    running = asyncio.create_task(call.run())
    twilio.say(ms.Connected("Call", "1.0.0"))
    twilio.say(START)
    model.say(ResponseStarted("r1"), AudioDelta("r1", "i1", 0, PCM_100MS), AudioDone("r1", "i1", 0), ResponseFinished("r1", "completed"))
    await _until(lambda: len(twilio.marks()) >= 1, "greeting marks")
    assert 790 <= twilio.media_bytes() <= 800  # 100 ms of μ-law (the transcoder's few held-back samples flushed)
    assert all(len(p) <= 160 for kind, p in twilio.sent if kind == "media")
    for frame in _media(5):
        twilio.say(frame)
    await _until(lambda: "input_audio_buffer.append" in model.sent_types(), "caller audio at the model")
    appended = [e for e in model.sent if e["type"] == "input_audio_buffer.append"]
    assert sum(len(base64.b64decode(e["audio"])) for e in appended) > 0
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP
    assert model.closed and twilio.closed is not None


@in_loop
async def test_barge_in_stops_playback_cancels_and_truncates_to_what_was_heard() -> None:
    twilio, model, clock = FakeTwilio(), FakeModel(), Clock()
    call = _call(twilio, lambda start: _setup(model), clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    model.say(ResponseStarted("r1"), AudioDelta("r1", "i1", 0, PCM_100MS * 10))  # 1 s, still generating
    await _until(lambda: twilio.marks(), "audio sent")
    # the caller heard the first two slices (400 ms): the first frame has a mark of its own (it went
    # into an empty buffer), so that is the first three marks
    for name in twilio.marks()[:3]:
        clock.now += 0.2
        twilio.say(ms.MarkEcho(SID, name))
    await asyncio.sleep(0.05)
    model.say(SpeechStarted("u1", 0))
    await _until(lambda: "conversation.item.truncate" in model.sent_types(), "truncate")
    assert "clear" in twilio.kinds()
    assert "response.cancel" in model.sent_types()
    truncate = next(e for e in model.sent if e["type"] == "conversation.item.truncate")
    # the clock stands still after the third echo: heard is exactly the audio before that mark
    third_mark = [n for n, (kind, _) in enumerate(twilio.sent) if kind == "mark" and not str(_).startswith("rtt.")][2]
    heard_bytes = sum(len(p) for kind, p in twilio.sent[:third_mark] if kind == "media")
    assert truncate["item_id"] == "i1" and truncate["audio_end_ms"] == heard_bytes // 8
    assert 390 <= truncate["audio_end_ms"] <= 400
    # the cancelled response's later audio never reaches the caller
    before = twilio.media_bytes()
    model.say(AudioDelta("r1", "i1", 0, PCM_100MS))
    await asyncio.sleep(0.05)
    assert twilio.media_bytes() == before
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


@in_loop
async def test_a_lost_session_is_replaced_and_seeded_until_the_calls_replacements_are_used_up() -> None:
    twilio, first, second = FakeTwilio(), FakeModel(), FakeModel()
    call = _call(twilio, lambda start: _setup(first, replacement=second, rollover=RolloverPolicy(max_replacements=1)))
    running = asyncio.create_task(call.run())
    twilio.say(START)
    from bridge.realtime_events import OutputTranscriptDone

    first.say(OutputTranscriptDone("i1", "Hello, how can I help?"))
    first.say(UpstreamError("session_expired", "Your session hit the maximum duration.", "invalid_request_error"))
    await _until(lambda: second.sent, "the new session seeded")
    assert second.sent[0]["type"] == "session.update"  # the instructions, with the call so far
    assert "continuing it in a new session" in second.sent[0]["session"]["instructions"]
    assert second.sent[1]["type"] == "conversation.item.create"  # the last turns, verbatim
    assert first.closed
    second.end_session(1011)  # a drop: the call's one replacement is used up
    assert await asyncio.wait_for(running, 3) is EndReason.UPSTREAM_FAILED


@in_loop
async def test_a_clean_close_by_the_model_ends_the_call_without_a_replacement() -> None:
    twilio, model = FakeTwilio(), FakeModel()
    call = _call(twilio, lambda start: _setup(model, replacement=FakeModel()))
    running = asyncio.create_task(call.run())
    twilio.say(START)
    await _until(lambda: call.link.connection is not None, "connected")
    model.end_session(1000)
    assert await asyncio.wait_for(running, 2) is EndReason.UPSTREAM_CLOSED


@in_loop
async def test_end_call_tool_hangs_up_after_the_goodbye_is_heard() -> None:
    twilio, model = FakeTwilio(), FakeModel()
    call = _call(twilio, lambda start: _setup(model, tools=default_registry(), tool_names=("end_call",)))
    running = asyncio.create_task(call.run())
    twilio.say(START)
    model.say(ResponseStarted("r1"), FunctionCallRequested("r1", "fc1", "call1", "end_call", "{}"), ResponseFinished("r1", "completed"))
    await _until(lambda: "function_call_output" in str(model.sent), "tool output")
    assert model.sent_types()[-1] == "response.create"
    model.say(ResponseStarted("r2"), AudioDelta("r2", "i2", 0, PCM_100MS), AudioDone("r2", "i2", 0), ResponseFinished("r2", "completed"))
    await _until(lambda: twilio.marks(), "goodbye audio")
    for name in twilio.marks():
        twilio.say(ms.MarkEcho(SID, name))
    assert await asyncio.wait_for(running, 2) is EndReason.AGENT_HANGUP


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([ms.Media(SID, "inbound", 0, 0, b"\xff")], EndReason.PROTOCOL_ERROR),  # media before start
        ([], EndReason.CALLER_HANGUP),  # the socket closes before start
    ],
)
@in_loop
async def test_a_stream_without_a_good_start_never_reaches_the_model(events: list[ms.TwilioEvent], reason: EndReason) -> None:
    twilio, model = FakeTwilio(), FakeModel()
    call = _call(twilio, lambda start: _setup(model))
    running = asyncio.create_task(call.run())
    for event in events:
        twilio.say(event)
    if not events:
        twilio.hang_up_socket()
    assert await asyncio.wait_for(running, 2) is reason
    assert model.sent == []


@in_loop
async def test_a_refused_start_closes_the_stream_with_its_reason() -> None:
    twilio = FakeTwilio()

    def refuse(start: ms.Start) -> CallSetup:
        raise StartRefused("reused_stream_token")

    call = _call(twilio, refuse)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    assert await asyncio.wait_for(running, 2) is EndReason.UNAUTHORIZED
    assert twilio.closed is not None and twilio.closed[1] == "reused_stream_token"


async def _barge_in_on_a_network(twilio: FakeTwilio, model: FakeModel, clock: Clock) -> tuple[CallSession, asyncio.Task[EndReason]]:
    """A call whose round trip is known (60 ms), barged in on while 1 s of audio is playing."""
    call = _call(twilio, lambda start: _setup(model), clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    model.say(ResponseStarted("r1"), AudioDelta("r1", "i1", 0, PCM_100MS * 10))
    await _until(lambda: twilio.marks(), "audio sent")
    for _ in range(5):
        call.tracker.network.round_trip_sample(0.060)
    clock.now += 0.2
    twilio.say(ms.MarkEcho(SID, twilio.marks()[0]))
    await asyncio.sleep(0.05)
    model.say(SpeechStarted("u1", 0))
    await _until(lambda: "clear" in twilio.kinds(), "clear")
    await asyncio.sleep(0.05)
    return call, running


@in_loop
async def test_a_truncate_waiting_for_the_clears_echo_goes_by_its_deadline_if_the_echo_never_comes() -> None:
    twilio, model, clock = FakeTwilio(), FakeModel(), Clock()
    call, running = await _barge_in_on_a_network(twilio, model, clock)
    assert "conversation.item.truncate" not in model.sent_types()  # waiting for the clear's echo
    clock.now += 0.6  # past the longest wait (bridge/call/truncation.py MAX_WAIT_S): Twilio never echoed
    await _until(lambda: "conversation.item.truncate" in model.sent_types(), "truncate by the deadline")
    truncate = next(e for e in model.sent if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == "i1" and truncate["audio_end_ms"] > 0
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


@in_loop
async def test_a_truncate_waiting_for_the_clears_echo_goes_at_once_when_the_caller_stops() -> None:
    twilio, model, clock = FakeTwilio(), FakeModel(), Clock()
    call, running = await _barge_in_on_a_network(twilio, model, clock)
    assert "conversation.item.truncate" not in model.sent_types()
    model.say(SpeechStopped("u1", 300))  # an answer may follow: the model must know what was heard first
    await _until(lambda: "conversation.item.truncate" in model.sent_types(), "truncate before the next answer", timeout_s=0.3)
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP
