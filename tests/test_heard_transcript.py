"""The heard transcript, the seed of a new session and the rollover planner: pure, table-tested."""

from __future__ import annotations

import pytest

from bridge.call.rollover import (
    HARD_MARGIN_S,
    LOOK_AHEAD_S,
    QUIET_WAIT_S,
    RETRY_S,
    Due,
    RolloverPlanner,
    RolloverPolicy,
    is_quiet,
    replacement_delay,
)
from bridge.call.seed import CONTINUATION, SUMMARY_CHARS, build_seed
from bridge.call.transcript import HeardTranscript, HeardTurn, cut_by_proportion, cut_by_words, hear
from bridge.dialects import GADialect, VoiceLiveDialect, parse_server_frame
from bridge.realtime_events import AudioDelta, InputTranscriptDone, ItemAdded, OutputTranscriptDone, WordTiming

TEXT = "one two three four five six seven eight nine ten"  # 49 characters


@pytest.mark.parametrize(
    ("heard_ms", "total_ms", "expected"),
    [
        (1000, 1000, TEXT),  # heard whole
        (2000, 1000, TEXT),  # never more than the text
        (500, 1000, "one two three four five"),  # half the characters: 24.5 → the words ending by then
        (100, 1000, "one"),  # 4.9 characters heard: "one" ends at 3
        (50, 1000, ""),  # 2.45 characters: not even "one"
        (0, 1000, ""),
        (10, 0, TEXT),  # no audio known: nothing to cut by
    ],
)
def test_a_barge_in_cuts_the_text_by_the_share_of_audio_heard(heard_ms: float, total_ms: float, expected: str) -> None:
    assert cut_by_proportion(TEXT, heard_ms, total_ms) == expected


def test_the_proportional_cut_never_keeps_a_word_ending_past_the_heard_point() -> None:
    for heard in range(0, 1001, 7):
        kept = cut_by_proportion(TEXT, heard, 1000)
        assert len(kept) <= len(TEXT) * heard / 1000


WORDS = [("Your", 0, 200), ("order", 200, 300), ("ships", 500, 300), ("tomorrow", 800, 500)]


@pytest.mark.parametrize(
    ("heard_ms", "expected"),
    [
        (0, ""),
        (99, ""),
        (100, "Your"),
        (349, "Your"),
        (350, "Your order"),
        (700, "Your order ships"),
        (5000, "Your order ships tomorrow"),
    ],
)
def test_word_timings_cut_at_the_last_word_mostly_heard(heard_ms: float, expected: str) -> None:
    assert cut_by_words(WORDS, heard_ms) == expected


def _spoken(transcript: HeardTranscript, item: str, text: str, ms: float) -> None:
    transcript.model_audio(item, ms)
    transcript.model_said(item, text)


def test_the_transcript_keeps_what_the_caller_heard_in_the_order_it_was_spoken() -> None:
    t = HeardTranscript()
    _spoken(t, "a1", "Hello, how can I help?", 1500)
    t.caller_item("u1")  # committed before the answer starts; its transcript comes later
    _spoken(t, "a2", TEXT, 1000)
    t.truncated("a2", 500)
    t.caller_said("u1", "Where is my order?")
    _spoken(t, "a3", "Never heard", 800)
    t.unheard("a3")
    t.caller_item("u2")  # transcription off: no text, no turn
    assert t.turns() == [
        HeardTurn("assistant", "Hello, how can I help?"),
        HeardTurn("user", "Where is my order?"),
        HeardTurn("assistant", "one two three four five", interrupted=True),
    ]


def test_the_cut_applies_when_the_transcript_arrives_after_the_truncation() -> None:
    t = HeardTranscript()
    t.model_audio("a1", 1000)
    t.truncated("a1", 500)  # the barge-in comes first; the cancelled response's transcript follows
    t.model_said("a1", TEXT)
    assert t.turns() == [HeardTurn("assistant", "one two three four five", interrupted=True)]


def test_voice_live_word_timings_are_parsed_and_preferred_to_the_proportion() -> None:
    event = parse_server_frame(
        VoiceLiveDialect(),
        '{"type":"response.audio_timestamp.delta","response_id":"r","item_id":"a1","output_index":0,'
        '"content_index":0,"audio_offset_ms":200,"audio_duration_ms":300,"text":"order","timestamp_type":"word"}',
    )
    assert event == WordTiming("a1", "order", 200, 300)
    t = HeardTranscript()
    for word, offset, duration in WORDS:
        hear(t, WordTiming("a1", word, offset, duration), lambda n: n / 48)
    hear(t, AudioDelta("r", "a1", 0, b"\x00" * 48 * 1300), lambda n: n / 48)
    hear(t, OutputTranscriptDone("a1", "Your order ships tomorrow"), lambda n: n / 48)
    t.truncated("a1", 400)  # by proportion this would keep "Your order"; the timings say "Your order"
    t.truncated("a1", 700)
    assert t.turns() == [HeardTurn("assistant", "Your order ships", interrupted=True)]
    assert parse_server_frame(GADialect(), '{"type":"response.audio_timestamp.delta"}').__class__.__name__ == "Ignored"


def test_hear_books_caller_items_and_transcripts() -> None:
    t = HeardTranscript()
    hear(t, ItemAdded("u1", "message", "user", None), lambda n: 0)
    hear(t, ItemAdded("f1", "function_call", "", None), lambda n: 0)
    hear(t, InputTranscriptDone("u1", 0, "Hi there"), lambda n: 0)
    assert t.turns() == [HeardTurn("user", "Hi there")]


# --- the seed --------------------------------------------------------------------------------


def test_a_seed_carries_the_last_turns_verbatim_and_older_ones_summarised() -> None:
    turns = [HeardTurn("user" if n % 2 else "assistant", f"turn {n} " + "word " * 10) for n in range(20)]
    turns[-1] = HeardTurn("assistant", "I was saying", interrupted=True)
    seed = build_seed("Be helpful.", turns, recent=4, summary_chars=300)
    assert seed.instructions.startswith("Be helpful.\n\n" + CONTINUATION)
    assert [text for _, text in seed.turns] == [t.text for t in turns[16:19]] + ["I was saying…"]
    assert seed.summarized + seed.left_out == 16
    assert 0 < seed.summarized < 16 and f"{seed.left_out} earlier turn(s) left out" in seed.instructions
    assert "turn 15" in seed.instructions and "turn 0 " not in seed.instructions  # the newest are kept
    assert len(seed.instructions) < len("Be helpful.\n\n" + CONTINUATION) + 450


def test_a_seed_stays_bounded_however_long_the_call() -> None:
    sizes = [len(build_seed("x", [HeardTurn("user", "word " * 60)] * n).instructions) for n in (10, 100, 1000)]
    assert abs(sizes[1] - sizes[2]) <= 2  # only the count of turns left out grows (a digit)
    assert sizes[2] < len(CONTINUATION) + SUMMARY_CHARS + 200


def test_a_short_call_has_no_summary() -> None:
    seed = build_seed("x", [HeardTurn("user", "hi")])
    assert seed.turns == (("user", "hi"),) and seed.summarized == 0 and "Earlier" not in seed.instructions


# --- the planner -----------------------------------------------------------------------------


def test_a_session_with_a_known_cap_rolls_over_before_it_between_the_look_ahead_and_the_hard_margin() -> None:
    planner = RolloverPlanner(RolloverPolicy(session_cap_s=1800), now=0)
    assert planner.due(1800 - LOOK_AHEAD_S - 1) is None
    assert planner.next_check(0) == 1800 - LOOK_AHEAD_S
    assert planner.due(1800 - LOOK_AHEAD_S) == Due("session_age", 1800 - HARD_MARGIN_S)
    planner.session_started(1700)  # rolled over: the new session's own clock
    assert planner.due(1800) is None


def test_expires_at_moves_the_end_earlier_on_the_calls_clock() -> None:
    planner = RolloverPlanner(RolloverPolicy(session_cap_s=3600), now=100)
    planner.expires_at(expires_at=1_000_000 + 600, wall_now=1_000_000, now=100)  # 10 minutes left
    assert planner.due(100 + 600 - LOOK_AHEAD_S) == Due("expires_at", 100 + 600 - HARD_MARGIN_S)


def test_rollover_seconds_overrides_the_age_and_waits_a_bounded_time_for_quiet() -> None:
    planner = RolloverPlanner(RolloverPolicy(rollover_after_s=5), now=0)
    assert planner.due(4.9) is None
    assert planner.due(5) == Due("session_age", 5 + QUIET_WAIT_S)


def test_the_token_budget_triggers_a_rollover_after_a_response_over_it() -> None:
    planner = RolloverPlanner(RolloverPolicy(input_token_budget=1000, session_cap_s=1800), now=0)
    planner.response_finished(999, now=10)
    planner.response_finished(None, now=11)  # no usage: nothing known
    assert planner.due(12) is None
    planner.response_finished(1001, now=20)
    assert planner.due(20) == Due("input_tokens", 20 + QUIET_WAIT_S)
    planner.failed(21)
    assert planner.due(21 + RETRY_S - 1) is None
    assert planner.due(21 + RETRY_S) == Due("input_tokens", 21 + RETRY_S + QUIET_WAIT_S)  # a fresh wait for quiet


def test_no_policy_means_no_planned_rollover() -> None:
    assert not RolloverPolicy().planned
    assert RolloverPlanner(RolloverPolicy(), now=0).due(10**6) is None


def test_replacements_back_off_and_a_quiet_moment_needs_both_sides_silent() -> None:
    assert [replacement_delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert is_quiet(model_busy=False, caller_speaking=False)
    assert not is_quiet(model_busy=True, caller_speaking=False)
    assert not is_quiet(model_busy=False, caller_speaking=True)


def test_usage_and_expires_at_are_parsed_from_the_wire() -> None:
    done = parse_server_frame(
        GADialect(), '{"type":"response.done","response":{"id":"r1","status":"completed","usage":{"input_tokens":1234}}}'
    )
    assert getattr(done, "input_tokens", None) == 1234
    created = parse_server_frame(VoiceLiveDialect(), '{"type":"session.created","session":{"expires_at":1900000000}}')
    assert getattr(created, "expires_at", None) == 1900000000.0
    bad = parse_server_frame(GADialect(), '{"type":"response.done","response":{"id":"r1","usage":{"input_tokens":"many"}}}')
    assert getattr(bad, "input_tokens", None) == 0  # an unreadable count reads as 0 (telemetry's rule): never over a budget
    none = parse_server_frame(GADialect(), '{"type":"response.done","response":{"id":"r1","status":"completed"}}')
    assert getattr(none, "input_tokens", 0) is None  # no usage at all: unknown
