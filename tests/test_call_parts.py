"""The call's pure parts, without sockets: the response ledger, the lifecycle, the keypad, caller
input, the conversation memory and what tool code may ask of a call (bridge/call/)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.call.caller_input import CallerInput
from bridge.call.keypad import Keypad
from bridge.call.ledger import ResponseLedger
from bridge.call.state import CallState, EndReason, Lifecycle
from bridge.call.tool_runs import Pending, PendingAction, ToolActions
from bridge.call.transcript import HeardTranscript, HeardTurn
from bridge.deadlines import poll_until
from voice_codecs import AudioMode

# --- the response ledger ---------------------------------------------------------------------------


def test_a_response_s_audio_items_are_kept_in_order_and_found_from_any_of_them() -> None:
    ledger = ResponseLedger()
    ledger.started("r1")
    for key in [("a", 0), ("b", 0), ("a", 0), ("c", 0)]:
        assert ledger.audio("r1", key)
    assert ledger.items_of_response_of(("b", 0)) == [("a", 0), ("b", 0), ("c", 0)]
    assert ledger.last_item == ("c", 0)
    assert ledger.items_of_response_of(("zzz", 0)) == []


@pytest.mark.parametrize(
    ("steps", "active", "last_item"),
    [
        ([("start", "r1")], "r1", None),
        ([("start", "r1"), ("audio", "r1"), ("finish", "r1")], None, ("r1-item", 0)),
        ([("start", "r1"), ("audio", "r1"), ("drop", "r1")], None, ("r1-item", 0)),
        ([("start", "r1"), ("audio", "r1"), ("stopped", "")], "r1", None),
        ([("start", "r1"), ("audio", "r1"), ("replaced", "")], None, None),
        ([("start", "r1"), ("start", "r2"), ("finish", "r1")], "r2", None),  # a late done of an old response
        ([("start", "r1"), ("drop", "r1"), ("audio", "r1")], None, None),  # a dropped response's audio is refused
    ],
)
def test_active_response_and_last_item_follow_the_events(steps: list[tuple[str, str]], active: str | None, last_item: object) -> None:
    ledger = ResponseLedger()
    for step, rid in steps:
        if step == "start":
            ledger.started(rid)
        elif step == "audio":
            ledger.audio(rid, (f"{rid}-item", 0))
        elif step == "finish":
            ledger.finished(rid)
        elif step == "drop":
            ledger.drop(rid)
        elif step == "stopped":
            ledger.playback_stopped()
        elif step == "replaced":
            ledger.session_replaced()
    assert (ledger.active, ledger.last_item) == (active, last_item)


def test_dropped_responses_stay_dropped_and_their_audio_is_refused() -> None:
    ledger = ResponseLedger()
    ledger.started("r1")
    assert ledger.audio("r1", ("i1", 0))
    ledger.drop("r1")
    assert ledger.is_dropped("r1")
    assert not ledger.audio("r1", ("i1", 0))
    assert ledger.last_item == ("i1", 0)  # refused audio does not move what is being heard


def test_markers_tell_when_a_later_response_has_finished() -> None:
    ledger = ResponseLedger()
    ledger.started("r1")
    marker = ledger.marker()
    ledger.finished("r1")
    assert not ledger.finished_since(marker)  # r1 started before the marker
    ledger.started("r2")
    assert not ledger.finished_since(marker)
    ledger.finished("r2")
    assert ledger.finished_since(marker)


def test_only_the_last_responses_are_remembered_and_forgotten_items_are_returned() -> None:
    ledger = ResponseLedger(keep=3)
    forgotten = []
    for n in range(10):
        forgotten += ledger.started(f"r{n}")
        ledger.audio(f"r{n}", (f"i{n}", 0))
        ledger.drop(f"r{n}")
        ledger.finished(f"r{n}")
    assert ledger.remembered() == 3
    assert forgotten == [(f"i{n}", 0) for n in range(7)]
    assert not ledger.is_dropped("r0") and ledger.is_dropped("r9")
    assert ledger.items_of_response_of(("i0", 0)) == [] and ledger.items_of_response_of(("i9", 0)) == [("i9", 0)]


# --- the lifecycle ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ([CallState.CONNECTING_UPSTREAM, CallState.IN_CALL, CallState.SAYING_GOODBYE, CallState.ENDING, CallState.ENDED], True),
        ([CallState.IN_CALL], False),  # no call without a start and a model
        ([CallState.CONNECTING_UPSTREAM, CallState.SAYING_GOODBYE], False),
        ([CallState.ENDING, CallState.IN_CALL], False),
    ],
)
def test_transitions_are_checked_in_one_place(path: list[CallState], allowed: bool) -> None:
    life = Lifecycle()
    try:
        for state in path:
            life.move_to(state)
    except RuntimeError:
        assert not allowed
    else:
        assert allowed


def test_the_first_end_reason_wins_and_finish_works_from_any_state() -> None:
    life = Lifecycle()
    life.move_to(CallState.CONNECTING_UPSTREAM)
    life.end(EndReason.CALLER_HANGUP)
    life.end(EndReason.UPSTREAM_FAILED)
    assert (life.state, life.end_reason) == (CallState.ENDING, EndReason.CALLER_HANGUP)
    life.finish()
    assert life.state is CallState.ENDED
    fresh = Lifecycle()
    fresh.finish()
    assert fresh.state is CallState.ENDED and fresh.end_reason is None


# --- the keypad ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "digits", "lines"),
    [
        ("forward", "1#", ["[The caller pressed 1 on the keypad]", "[The caller pressed # on the keypad]"]),
        ("collect", "12#", [None, None, "[The caller typed 12 on the keypad, ending with #]"]),
        ("collect", "#", ["[The caller typed nothing on the keypad, ending with #]"]),
        ("collect", "9" * 40 + "#", [None] * 40 + [f"[The caller typed {'9' * 32} on the keypad, ending with #]"]),
        ("collect", "1#2#", [None, "[The caller typed 1 on the keypad, ending with #]", None, "[The caller typed 2 on the keypad, ending with #]"]),
    ],
)
def test_keypad_lines(mode: str, digits: str, lines: list[str | None]) -> None:
    keypad = Keypad(mode)
    assert [keypad.press(d) for d in digits] == lines


# --- caller input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "bytes_per_20ms"), [(AudioMode.PCM24K, 960), (AudioMode.G711, 160)])
def test_caller_audio_is_batched_and_converted_for_the_model(mode: AudioMode, bytes_per_20ms: int) -> None:
    caller = CallerInput(mode, append_ms=40)
    assert caller.media(b"\xff" * 160, 1.0) is None  # half a batch
    batch = caller.media(b"\xff" * 160, 2.0)
    assert batch is not None and batch.frames == 2 and batch.completed_at == 2.0
    # the transcoder may hold a few samples back; never more than it is given
    assert 0 < len(batch.audio) <= 2 * bytes_per_20ms
    caller.media(b"\xff" * 160, 3.0)
    caller.reset()
    assert caller.media(b"\xff" * 160, 4.0) is None  # the half batch held for the old session is gone


def test_the_flood_guard_admits_real_time_and_refuses_a_flood() -> None:
    caller = CallerInput(AudioMode.PCM24K, append_ms=20)
    assert all(caller.admit(b"\xff" * 160, n * 0.02) for n in range(100))
    assert not all(caller.admit(b"\xff" * 160, 2.0) for _ in range(200))


# --- memory and tool actions -----------------------------------------------------------------------


def test_the_transcript_keeps_the_last_non_empty_turns() -> None:
    transcript = HeardTranscript(max_turns=2)
    transcript.caller_said("u0", "  ")
    for n in range(3):
        transcript.caller_said(f"u{n + 1}", f"turn {n}")
    assert transcript.turns() == [HeardTurn("user", "turn 1"), HeardTurn("user", "turn 2")]
    assert transcript.dropped == 2


def test_tool_actions_keep_the_last_request_once() -> None:
    actions = ToolActions("CA1", transfer_number="+15550100")
    assert actions.take() is None
    actions.hang_up_after_speaking()
    actions.transfer_after_speaking("+15550100")
    assert actions.take() == Pending(PendingAction.TRANSFER, "+15550100")
    assert actions.take() is None


def test_a_frame_window_keeps_the_last_frames_or_up_to_a_bound() -> None:
    from bridge.outbound import FrameWindow, Outgoing

    lead_in = FrameWindow()
    for n in range(10):
        lead_in.keep_last(Outgoing(f"a{n}", 5, 1.0), 15)  # 100 ms events, keep the last 300 ms
    assert lead_in.frames == 15 and [i.event for i in lead_in.take()] == ["a7", "a8", "a9"]
    assert lead_in.frames == 0 and len(lead_in) == 0
    held = FrameWindow()
    assert [held.add(Outgoing(f"b{n}", 5, 1.0), 12) for n in range(3)] == [True, True, False]
    assert held.frames == 10 and all(i.completed_at is None for i in held.take())


def test_poll_until_stops_when_done_or_at_the_deadline_on_the_given_clock() -> None:
    """bridge.deadlines.poll_until: the one wait on a call's (or the bridge's) clock."""

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.01  # a clock 10 ms ahead on every look: faster than the loop
            return self.now

    clock = Clock()
    assert asyncio.run(poll_until(clock, 0.5, poll_s=0.001)) is False
    assert 0.5 <= clock.now < 0.6
    looks = 0

    def third_look() -> bool:
        nonlocal looks
        looks += 1
        return looks == 3

    assert asyncio.run(poll_until(clock, clock.now + 10.0, third_look, 0.001)) is True
    assert looks == 3
