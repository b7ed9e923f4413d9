"""The turn watchdog (issue 16), pure: events and time in, actions out — tables of scripted calls."""

from __future__ import annotations

import pytest

from bridge.call.watchdog import Action, Budgets, Kind, TurnWatchdog

FILLER_MODEL = Action(Kind.FILLER, reason="slow_model")
FILLER_TOOL = Action(Kind.FILLER, reason="slow_tool")
RETRY = Action(Kind.RETRY)
GIVE_UP = Action(Kind.GIVE_UP)
GOODBYE = Action(Kind.GOODBYE)


def reprompt(n: int) -> Action:
    return Action(Kind.REPROMPT, count=n)


DEFAULT_BUDGETS = Budgets()


def run(script: list[tuple[float, str]], budgets: Budgets = DEFAULT_BUDGETS, until: float = 60.0, step: float = 0.05):
    """Feed `(time, event)` in order, polling `due` every `step` seconds; the actions with their times."""
    dog = TurnWatchdog(budgets)
    seen: list[tuple[float, Action]] = []
    outcomes: list[tuple[float, str]] = []
    events = sorted(script)
    t = 0.0
    while t <= until:
        while events and events[0][0] <= t + 1e-9:
            at, name = events.pop(0)
            kind, _, arg = name.partition(":")
            if kind == "audio":
                outcome = dog.model_audio(at)
                if outcome:
                    outcomes.append((at, outcome))
            elif kind == "tool":
                dog.tool_started(arg or "r1", at)
            elif kind == "tools_answered":
                dog.tools_answered(arg or "r1", at)
            else:
                getattr(dog, kind)(at)
        seen.extend((round(t, 2), action) for action in dog.due(t))
        t = round(t + step, 6)
    return seen, outcomes, dog


def actions(seen):
    return [a for _, a in seen]


def test_a_quick_answer_needs_nothing() -> None:
    seen, outcomes, _ = run([(1.0, "caller_turn_ended"), (1.5, "response_started"), (1.8, "audio")], until=5)
    assert seen == []
    assert outcomes == [(1.8, "answered")]


def test_a_slow_model_gets_one_filler_after_the_budget_then_the_answer() -> None:
    seen, outcomes, dog = run([(1.0, "caller_turn_ended"), (2.6, "filler_sent"), (3.4, "playback_idle"), (6.0, "audio")], until=7)
    assert seen == [(2.5, FILLER_MODEL)]
    assert outcomes == [(6.0, "answered")]
    assert dog.filler_at == 2.6


@pytest.mark.parametrize(
    ("budgets", "expected"),
    [
        (Budgets(filler_after_s=1.5, turn_timeout_s=8), [(2.5, FILLER_MODEL), (9.0, RETRY), (17.0, GIVE_UP)]),
        (Budgets(filler_after_s=None, turn_timeout_s=8), [(9.0, RETRY), (17.0, GIVE_UP)]),
        (Budgets(filler_after_s=1.5, turn_timeout_s=None), [(2.5, FILLER_MODEL)]),
        (Budgets(filler_after_s=None, turn_timeout_s=None), []),
    ],
)
def test_a_model_that_never_answers_is_retried_once_then_given_up(budgets, expected) -> None:
    seen, outcomes, dog = run([(1.0, "caller_turn_ended")], budgets=budgets, until=40)
    assert seen == expected
    assert outcomes == []


def test_an_answer_after_the_retry_counts_as_retried() -> None:
    seen, outcomes, _ = run([(1.0, "caller_turn_ended"), (10.0, "audio")], budgets=Budgets(filler_after_s=None), until=30)
    assert actions(seen) == [RETRY]
    assert outcomes == [(10.0, "retried")]


def test_nothing_fires_while_the_caller_speaks_and_a_new_turn_restarts_the_budget() -> None:
    # The caller barges in at 2.0 (before the filler due at 2.5) and speaks until 4.0.
    seen, _, _ = run([(1.0, "caller_turn_ended"), (2.0, "caller_speech_started"), (4.0, "caller_turn_ended"), (5.0, "audio")], until=10)
    assert seen == []  # the answer came at 5.0, before 4.0 + 1.5


def test_a_slow_tool_gets_its_filler_and_suspends_the_turn_timeout() -> None:
    script = [
        (1.0, "caller_turn_ended"),
        (1.2, "response_started"),
        (1.3, "audio"),  # "let me check that"
        (1.4, "tool:r1"),
        (2.0, "response_done"),
        (2.4, "playback_idle"),
        (3.95, "filler_sent"),
        (4.6, "playback_idle"),
        (12.0, "tools_answered:r1"),  # a 10.6 s tool: longer than the turn budget, no retry meanwhile
        (12.5, "audio"),
    ]
    seen, outcomes, _ = run(script, until=30)
    assert seen == [(3.9, FILLER_TOOL)]  # 1.5 s after the caller last heard something
    assert outcomes == [(1.3, "answered"), (12.5, "answered")]


def test_the_wait_after_a_tool_may_be_retried_and_gets_no_second_slow_model_filler() -> None:
    script = [(1.0, "caller_turn_ended"), (1.1, "tool:r1"), (1.2, "tools_answered:r1")]
    seen, _, _ = run(script, until=30)
    assert seen == [(2.7, FILLER_MODEL), (9.2, RETRY), (17.2, GIVE_UP)]


def test_a_silent_caller_is_reprompted_then_the_call_ends() -> None:
    script = [
        (0.0, "greeting_requested"),
        (0.5, "response_started"),
        (0.6, "audio"),
        (1.0, "response_done"),
        (3.0, "playback_idle"),  # greeting heard at 3.0
        (13.5, "response_started"),
        (13.6, "audio"),
        (14.0, "response_done"),
        (15.0, "playback_idle"),  # first check-in heard at 15.0
        (25.5, "response_started"),
        (25.6, "audio"),
        (26.0, "response_done"),
        (27.0, "playback_idle"),
    ]
    seen, _, dog = run(script, until=60)
    assert seen == [(13.0, reprompt(1)), (25.0, reprompt(2)), (37.0, GOODBYE)]
    assert dog.finished


def test_caller_speech_or_a_digit_resets_the_reprompt_count() -> None:
    script = [
        (0.0, "playback_idle"),
        (10.5, "response_started"), (10.6, "audio"), (11.0, "response_done"), (11.0, "playback_idle"),
        (15.0, "keypad"), (15.5, "response_started"), (15.6, "audio"), (16.0, "response_done"), (16.0, "playback_idle"),
        (26.5, "response_started"), (26.6, "audio"), (27.0, "response_done"), (27.0, "playback_idle"),
    ]  # fmt: skip
    seen, _, _ = run(script, budgets=Budgets(max_reprompts=1), until=40)
    # 10.0: reprompt 1; the digit at 15.0 resets the count, so 26.0 is reprompt 1 again, then goodbye.
    assert seen == [(10.0, reprompt(1)), (26.0, reprompt(1)), (37.0, GOODBYE)]


def test_reprompts_off_and_goodbye_without_reprompts() -> None:
    seen, _, _ = run([(0.0, "playback_idle")], budgets=Budgets(reprompt_after_s=None), until=60)
    assert seen == []
    seen, _, _ = run([(0.0, "playback_idle")], budgets=Budgets(max_reprompts=0, reprompt_after_s=5), until=20)
    assert seen == [(5.0, GOODBYE)]


def test_no_silence_counted_while_a_response_or_playback_or_tool_is_under_way() -> None:
    script = [(0.0, "response_started"), (0.1, "audio"), (0.2, "tool:r1"), (30.0, "playback_idle"), (31.0, "response_done")]
    seen, _, _ = run(script, until=40)
    assert seen == [(31.5, FILLER_TOOL)]  # the tool still runs: not the caller's silence, but its filler once quiet
    seen, _, _ = run([(0.0, "response_started"), (0.1, "audio"), (30.0, "playback_idle"), (31.0, "response_done")], until=40)
    assert seen == []  # silence from 31.0: due at 41.0


def test_filler_waits_while_something_still_plays() -> None:
    # The caller's turn ends while the end of an earlier line still plays (no barge-in): the
    # filler is due 1.5 s after playback went idle, not 1.5 s after the turn ended.
    script = [(0.0, "audio"), (1.0, "caller_turn_ended"), (3.0, "playback_idle")]
    seen, _, _ = run(script, budgets=Budgets(turn_timeout_s=None), until=10)
    assert seen == [(4.5, FILLER_MODEL)]


def test_next_deadline_says_when_to_poll() -> None:
    dog = TurnWatchdog(Budgets())
    assert dog.next_deadline() is None
    dog.caller_turn_ended(1.0)
    assert dog.next_deadline() == pytest.approx(2.5)
    dog.caller_speech_started(1.2)
    assert dog.next_deadline() is None


def test_a_barge_in_during_the_filler_deletes_the_model_item_queued_behind_it_and_never_touches_the_filler() -> None:
    from bridge.barge_in import plan_barge_in
    from bridge.call.caller_output import FILLER_ITEM
    from bridge.playback import PlaybackTracker

    tracker = PlaybackTracker()
    tracker.chunk_sent(FILLER_ITEM, 0, 5840, now=0.0)  # 0.73 s of filler
    tracker.audio_received("item_a", 0, 500.0)
    tracker.chunk_sent("item_a", 0, 4000, now=0.2)  # the answer, queued behind it
    plan = plan_barge_in(tracker, "resp_a", ("item_a", 0), now=0.4, response_items_of=lambda item: [("item_a", 0)])
    assert plan.clear_playback and plan.cancel_response_id == "resp_a"
    assert plan.truncation is None and plan.deletions == (("item_a", 0),)
    # Heard into the answer: it is truncated at what was heard of it (the filler's length not counted).
    plan = plan_barge_in(tracker, None, ("item_a", 0), now=0.83, response_items_of=lambda item: [("item_a", 0)])
    assert plan.truncation is not None and plan.truncation.item_id == "item_a" and 90 <= plan.truncation.audio_end_ms <= 110
