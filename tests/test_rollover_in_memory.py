"""Session-level behaviour of the heard transcript, replacement and planned rollover, driven through
in-memory ports (tests/fake_ports.py) on the test's clock."""

from __future__ import annotations

import asyncio
import base64

from bridge import media_streams as ms
from bridge.call import CallSetup, EndReason
from bridge.call.rollover import RolloverPolicy
from bridge.call.transcript import HeardTurn
from bridge.profiles import default_profile, session_config
from bridge.realtime_events import (
    AudioDelta,
    AudioDone,
    InputTranscriptDone,
    ItemAdded,
    OutputTranscriptDone,
    ResponseFinished,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
)
from bridge.settings import Settings
from bridge.tools import default_registry
from tests.fake_ports import FakeModel, FakeTwilio
from tests.test_call_session_in_memory import PCM_100MS, SID, START, Clock, _call, _until, in_loop

TEXT = "one two three four five six seven eight nine ten"


def _count(call, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    """A counter's value in the call's metrics (0 when the series was never touched)."""
    return call.metrics.registry.get_sample_value(f"voice_bridge_{name}_total", labels) or 0.0


def _setup(first: FakeModel, later: list[FakeModel], policy: RolloverPolicy) -> CallSetup:
    opened: list[FakeModel] = []

    async def connected() -> FakeModel:
        return first

    async def reconnect() -> FakeModel:
        if not later:
            raise OSError("no more sessions")
        opened.append(later.pop(0))
        return opened[-1]

    config = session_config(default_profile(Settings()), "pcm24k", default_registry().specs())
    return CallSetup(session_config=config, upstream=connected(), reconnect=reconnect, rollover=policy)  # type: ignore[arg-type]


def _appended(model: FakeModel) -> list[bytes]:
    return [base64.b64decode(e["audio"]) for e in model.sent if e["type"] == "input_audio_buffer.append"]


def _frame(n: int, byte: int) -> ms.Media:
    return ms.Media(SID, "inbound", n, n * 20, bytes([byte]) * 160)


async def _a_turn(model: FakeModel, twilio: FakeTwilio, n: int, clock: Clock) -> None:
    """The caller says something, the model answers with 100 ms the caller hears whole."""
    model.say(SpeechStarted(f"u{n}", 0), SpeechStopped(f"u{n}", 500), ItemAdded(f"u{n}", "message", "user", None))
    model.say(InputTranscriptDone(f"u{n}", 0, f"question {n}"))
    model.say(ResponseStarted(f"r{n}"), AudioDelta(f"r{n}", f"a{n}", 0, PCM_100MS), AudioDone(f"r{n}", f"a{n}", 0))
    model.say(OutputTranscriptDone(f"a{n}", f"answer {n}"), ResponseFinished(f"r{n}", "completed"))
    before = len(twilio.marks())
    await _until(lambda: len(twilio.marks()) > before, "answer played")
    await asyncio.sleep(0.02)
    clock.now += 0.2
    for name in twilio.marks()[before:]:
        twilio.say(ms.MarkEcho(SID, name))
    await asyncio.sleep(0.02)


@in_loop
async def test_a_barge_in_cuts_the_calls_transcript_at_what_the_caller_heard() -> None:
    twilio, model, clock = FakeTwilio(), FakeModel(), Clock()
    call = _call(twilio, lambda start: _setup(model, [], RolloverPolicy()), clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    model.say(ResponseStarted("r1"), OutputTranscriptDone("i1", TEXT), AudioDelta("r1", "i1", 0, PCM_100MS * 10))  # 1 s
    await _until(lambda: len(twilio.marks()) >= 5, "audio sent")
    for name in twilio.marks()[:2]:  # the caller heard the first two slices (400 ms)
        clock.now += 0.2
        twilio.say(ms.MarkEcho(SID, name))
    await asyncio.sleep(0.05)
    model.say(SpeechStarted("u1", 0))
    await _until(lambda: "conversation.item.truncate" in model.sent_types(), "truncate")
    truncate = next(e for e in model.sent if e["type"] == "conversation.item.truncate")
    heard = call.transcript.turns()
    assert heard[0].interrupted and TEXT.startswith(heard[0].text)
    assert len(heard[0].text) <= len(TEXT) * truncate["audio_end_ms"] / 1000 < len(heard[0].text) + 7
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


@in_loop
async def test_lost_sessions_are_replaced_with_backoff_each_seeded_until_the_limit() -> None:
    twilio, first, clock = FakeTwilio(), FakeModel(), Clock()
    later = [FakeModel(), FakeModel()]
    second, third = later
    call = _call(twilio, lambda start: _setup(first, list(later), RolloverPolicy(max_replacements=2)), clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    await _a_turn(first, twilio, 1, clock)
    first.end_session(1011)  # a drop: replaced at once
    await _until(lambda: second.sent, "second session seeded")
    assert [e["type"] for e in second.sent[:3]] == ["session.update", "conversation.item.create", "conversation.item.create"]
    assert [e["item"]["content"][0]["text"] for e in second.sent[1:3]] == ["question 1", "answer 1"]
    await _a_turn(second, twilio, 2, clock)
    second.end_session(1006)  # the second replacement waits its backoff: 0.5 s on the call's clock
    await asyncio.sleep(0.2)
    assert not third.sent  # the call's clock has not moved: still waiting
    clock.now += 0.5
    await _until(lambda: third.sent, "third session seeded")
    texts = [e["item"]["content"][0]["text"] for e in third.sent if e["type"] == "conversation.item.create"]
    assert texts == ["question 1", "answer 1", "question 2", "answer 2"]
    third.end_session(1011)  # the call's two replacements are used up
    assert await asyncio.wait_for(running, 3) is EndReason.UPSTREAM_FAILED
    assert call.switcher.replacements == 2
    assert _count(call, "session_replacements", result="ok") == 2
    assert _count(call, "session_replacements", result="failed") == 0


@in_loop
async def test_caller_audio_during_an_unplanned_replacement_reaches_the_new_session_after_its_seed() -> None:
    twilio, first, second, clock = FakeTwilio(), FakeModel(), FakeModel(), Clock()
    release = asyncio.Event()

    async def slow_reconnect() -> FakeModel:
        await release.wait()  # the new session takes a while to open
        return second

    def setup(start: ms.Start) -> CallSetup:
        plain = _setup(first, [], RolloverPolicy(max_replacements=1))
        return CallSetup(session_config=plain.session_config, upstream=plain.upstream, reconnect=slow_reconnect)  # type: ignore[arg-type]

    call = _call(twilio, setup, clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    await _a_turn(first, twilio, 1, clock)
    for n in range(20):  # 400 ms the first session is sent (its last 300 ms: the lead-in)
        twilio.say(_frame(n, 0x20 + n))
    await _until(lambda: len(_appended(first)) >= 20, "audio at the first session")
    first.end_session(1011)  # dropped
    await _until(lambda: call.link._replacing, "replacing")
    for n in range(20, 30):  # the caller goes on talking while the new session opens
        twilio.say(_frame(n, 0x20 + n))
    await asyncio.sleep(0.05)
    release.set()
    await _until(lambda: len(_appended(second)) >= 15 + 10, "held audio at the new session")
    types = second.sent_types()
    first_append = types.index("input_audio_buffer.append")
    assert types[:first_append] == ["session.update", "conversation.item.create", "conversation.item.create"]
    # the new session hears the first one's last 300 ms again, then the 10 frames said meanwhile
    # (transcoded after the reset for the new session), nothing lost, nothing twice
    heard = _appended(second)
    assert heard[:15] == _appended(first)[-15:] and len(heard) == 15 + 10
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


async def _rolled_call(policy: RolloverPolicy, later: list[FakeModel]):  # type: ignore[no-untyped-def]
    twilio, first, clock = FakeTwilio(), FakeModel(), Clock()
    call = _call(twilio, lambda start: _setup(first, later, policy), clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    await _until(lambda: call.life.in_call, "in call")
    return twilio, first, clock, call, running


@in_loop
async def test_a_planned_rollover_switches_at_a_quiet_moment_with_no_caller_audio_lost() -> None:
    new = FakeModel()
    later = [new]
    twilio, old, clock, call, running = await _rolled_call(RolloverPolicy(rollover_after_s=60), later)
    await _a_turn(old, twilio, 1, clock)
    # the model starts a long answer; the session's age passes 60 s while it plays
    old.say(ResponseStarted("r9"), AudioDelta("r9", "a9", 0, PCM_100MS * 5))
    await _until(lambda: twilio.marks(), "answer playing")
    clock.now += 61
    await _until(lambda: not later, "next session opened in the background")
    await asyncio.sleep(0.3)
    assert call.link.connection is old  # not while the model speaks
    n = 0
    for n in range(5):
        twilio.say(_frame(n, 0x10 + n))  # caller audio before the switch: the old session
    await _until(lambda: len(_appended(old)) >= 5, "audio at the old session")
    old.say(AudioDone("r9", "a9", 0), OutputTranscriptDone("a9", "a long answer"), ResponseFinished("r9", "completed"))
    await _until(lambda: call.ledger.active is None, "answer done")
    await asyncio.sleep(0.05)
    clock.now += 1
    for name in twilio.marks():
        twilio.say(ms.MarkEcho(SID, name))
    await _until(lambda: call.link.connection is new, "switched at the quiet moment")
    for n in range(5, 10):
        twilio.say(_frame(n, 0x10 + n))  # after the switch: the new session
    await _until(lambda: old.closed, "old session closed")
    old.end_session(1000)  # its closing handshake ends its events
    await _until(lambda: len(_appended(new)) >= 5 + 5, "audio at the new session")
    types = new.sent_types()
    assert types[:3] == ["session.update", "conversation.item.create", "conversation.item.create"]
    assert "a long answer" in str(new.sent[1:5])
    # the new session hears the last audio the old one heard (lead-in), then everything after
    old_audio, new_audio = _appended(old), _appended(new)
    assert len(old_audio) == 5 and len(new_audio) == 10
    assert new_audio[:5] == old_audio
    new.say(ResponseStarted("r10"), AudioDelta("r10", "a10", 0, PCM_100MS), AudioDone("r10", "a10", 0))
    before = twilio.media_bytes()
    await _until(lambda: twilio.media_bytes() > before, "the new session is heard")
    assert call.switcher.rollovers == 1 and call.switcher.forced == 0
    assert _count(call, "session_rollovers", reason="session_age", quiet="true") == 1
    assert _count(call, "session_rollovers", reason="session_age", quiet="false") == 0
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


@in_loop
async def test_a_rollover_is_forced_at_its_deadline_and_a_failed_one_keeps_the_old_session() -> None:
    new = FakeModel()
    later: list[FakeModel] = []
    twilio, old, clock, call, running = await _rolled_call(RolloverPolicy(rollover_after_s=10), later)
    clock.now += 11
    await _until(
        lambda: call.switcher.planner is not None and call.switcher.planner.due(clock.now) is None, "failed: retry later"
    )
    assert call.link.connection is old and call.life.in_call  # the old session goes on
    assert _count(call, "session_rollover_failures", reason="session_age") == 1
    assert _count(call, "session_rollovers", reason="session_age", quiet="false") == 0
    await _a_turn(old, twilio, 1, clock)
    assert call.link.connection is old
    # a later attempt succeeds; the caller keeps speaking, so it is forced at the deadline
    later.append(new)
    old.say(SpeechStarted("u5", 0))
    clock.now += 31
    await _until(lambda: not later, "opened")
    assert call.link.connection is old
    clock.now += 31  # past the deadline: switch anyway
    await _until(lambda: call.link.connection is new, "forced switch")
    assert call.switcher.forced == 1
    assert _count(call, "session_rollovers", reason="session_age", quiet="false") == 1
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP


def test_heard_turn_is_a_value() -> None:
    assert HeardTurn("user", "x") == HeardTurn("user", "x")
