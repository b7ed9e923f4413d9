"""The rollover's out-of-band summary and the tool state of a seed: the pure decisions (table-tested),
the wire shapes per dialect (checked with each SDK's types), and, in memory, that the summary's
response is never a turn of the call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from dialect_upstream import GA_WIRE, VOICELIVE_WIRE, client_event_problems
from test_call_session_in_memory import SID, START, Clock, _call, _until, in_loop
from test_rollover_in_memory import _a_turn, _setup

from bridge import media_streams as ms
from bridge.call import CallSetup, EndReason
from bridge.call.rollover import RolloverPolicy
from bridge.call.seed import CONTINUATION, build_seed
from bridge.call.summary import MAX_OUTPUT_TOKENS, MAX_SUMMARY_WORDS, PURPOSE, ModelSummary, summary_instructions
from bridge.call.tool_state import ToolHistory, ToolUse, tool_lines
from bridge.call.transcript import HeardTurn
from bridge.dialects import GADialect, VoiceLiveDialect, parse_server_frame
from bridge.realtime_events import (
    AudioDelta,
    OutOfBandFinished,
    OutOfBandStarted,
    ResponseFinished,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDone,
)
from tests.fake_ports import FakeModel, FakeTwilio

SUMMARY = "Caller asked about order CO-12345: shipped, arrives Thursday. Nothing open."

# --- the decision (pure) ---------------------------------------------------------------------

# (upstream, busy, events as (kind, args) at times, asker's limit, expected reason, expected text)
_DONE = ("finished", ("r1", PURPOSE, "completed", "", SUMMARY))


@pytest.mark.parametrize(
    ("upstream", "busy", "events", "check_at", "reason", "text"),
    [
        ("openai", False, [("started", ("r1", PURPOSE)), _DONE], 1.0, "ok", SUMMARY),
        ("voicelive", False, [_DONE], 1.0, "ok", SUMMARY),  # response.created unseen: done alone is enough
        ("azure-openai", False, [("started", ("r1", PURPOSE)), ("text_done", ("r1", SUMMARY)),
                                 ("finished", ("r1", PURPOSE, "completed", "", ""))], 1.0, "ok", SUMMARY),
        ("local", False, [], 0.0, "not_supported", None),  # the local agent writes no text
        ("", False, [], 0.0, "not_supported", None),
        ("openai", True, [], 0.0, "busy", None),
        ("openai", False, [], 5.0, "timeout", None),
        ("openai", False, [], 4.9, None, None),  # still waiting
        ("openai", False, [("finished", ("r1", PURPOSE, "failed", "", ""))], 1.0, "failed", None),
        ("openai", False, [("finished", ("r1", PURPOSE, "cancelled", "turn_detected", SUMMARY))], 1.0, "failed", None),
        ("openai", False, [("finished", ("r1", PURPOSE, "incomplete", "max_output_tokens", "a b"))], 1.0, "too_long", None),
        ("openai", False, [("finished", ("r1", PURPOSE, "completed", "", "  \n "))], 1.0, "empty", None),
        ("openai", False, [("finished", ("r1", PURPOSE, "completed", "", "w " * (MAX_SUMMARY_WORDS + 1)))], 1.0, "too_long", None),
        ("openai", False, [("finished", ("r1", "something_else", "completed", "", SUMMARY))], 5.0, "timeout", None),
        ("openai", False, [("started", ("r1", PURPOSE)), ("finished", ("r2", PURPOSE, "completed", "", SUMMARY))], 5.0, "timeout", None),
    ],
)
def test_what_comes_of_an_out_of_band_summary(
    upstream: str, busy: bool, events: list[tuple[str, tuple[Any, ...]]], check_at: float, reason: str | None, text: str | None
) -> None:
    summary = ModelSummary(upstream, deadline_s=5.0)
    refused = summary.ask(0.0, model_busy=busy)
    if refused is not None:
        assert (refused.reason, refused.text, refused.source) == (reason, None, "transcript")
        return
    for kind, args in events:
        getattr(summary, kind)(*args)
    outcome = summary.outcome(check_at)
    if reason is None:
        assert outcome is None
        return
    assert outcome is not None and (outcome.reason, outcome.text) == (reason, text)
    assert outcome.source == ("model" if text else "transcript")


def test_only_one_summary_is_asked_at_a_time_and_a_new_session_forgets_the_old_ones() -> None:
    summary = ModelSummary("openai", deadline_s=5.0)
    assert summary.ask(0.0, model_busy=False) is None
    assert summary.ask(1.0, model_busy=False).reason == "in_progress"  # type: ignore[union-attr]
    assert summary.outcome(6.0).reason == "timeout"  # type: ignore[union-attr]
    assert summary.ask(7.0, model_busy=False).reason == "in_progress"  # type: ignore[union-attr]  # still under way upstream
    assert summary.finished("r1", PURPOSE, "completed", "", SUMMARY)  # it ends, late: nobody waits for it
    assert summary.ask(8.0, model_busy=False) is None
    summary.session_started()
    assert not summary.finished("r2", PURPOSE, "completed", "", SUMMARY)  # the old session's: not heard
    assert summary.ask(9.0, model_busy=False) is None


def test_the_askers_own_limit_ends_the_wait_sooner() -> None:
    summary = ModelSummary("openai", deadline_s=5.0)
    summary.ask(10.0, model_busy=False)
    assert summary.outcome(11.0, until=12.0) is None
    assert summary.outcome(12.0, until=12.0).reason == "timeout"  # type: ignore[union-attr]


# --- the wire, per dialect -------------------------------------------------------------------


@pytest.mark.parametrize(("dialect", "wire"), [(GADialect(), GA_WIRE), (VoiceLiveDialect(), VOICELIVE_WIRE)])
def test_the_summary_request_is_an_out_of_band_text_response_the_sdk_types_accept(dialect: Any, wire: Any) -> None:
    request = dialect.out_of_band_text(summary_instructions(), PURPOSE, MAX_OUTPUT_TOKENS)
    assert client_event_problems(wire, request) == []
    response = request["response"]
    assert response["metadata"] == {"voice_bridge_purpose": PURPOSE} and response["tool_choice"] == "none"
    if wire is GA_WIRE:
        assert response["conversation"] == "none" and response["output_modalities"] == ["text"]
    else:  # Voice Live: commit false keeps it out; cancel_previous false leaves a response under way alone
        assert response["commit"] is False and response["cancel_previous"] is False and response["modalities"] == ["text"]


@pytest.mark.parametrize(("dialect", "part", "text_done"), [(GADialect(), "output_text", "response.output_text.done"), (VoiceLiveDialect(), "text", "response.text.done")])
def test_a_tagged_response_is_read_as_out_of_band_and_an_untagged_one_as_the_calls(dialect: Any, part: str, text_done: str) -> None:
    tag = {"voice_bridge_purpose": PURPOSE}
    created = {"type": "response.created", "response": {"id": "r1", "status": "in_progress", "metadata": tag}}
    assert parse_server_frame(dialect, json.dumps(created)) == OutOfBandStarted("r1", PURPOSE)
    plain = {"type": "response.created", "response": {"id": "r2", "status": "in_progress", "metadata": None}}
    assert parse_server_frame(dialect, json.dumps(plain)) == ResponseStarted("r2")
    output = [{"type": "message", "role": "assistant", "content": [{"type": part, "text": SUMMARY}]}]
    done = {"type": "response.done", "response": {"id": "r1", "status": "completed", "metadata": tag, "output": output}}
    event = parse_server_frame(dialect, json.dumps(done))
    assert isinstance(event, OutOfBandFinished) and event.text == SUMMARY and event.finished.status == "completed"
    assert isinstance(parse_server_frame(dialect, json.dumps({**done, "response": {"id": "r2", "status": "completed"}})), ResponseFinished)
    text = {"type": text_done, "response_id": "r1", "item_id": "i1", "output_index": 0, "content_index": 0, "text": SUMMARY}
    assert parse_server_frame(dialect, json.dumps(text)) == TextDone("r1", SUMMARY)


# --- the seed --------------------------------------------------------------------------------

TURNS = [HeardTurn("user" if n % 2 else "assistant", f"turn {n}") for n in range(10)]


def test_the_models_summary_replaces_the_transcripts_and_the_last_turns_stay_verbatim() -> None:
    seed = build_seed("Be helpful.", TURNS, recent=4, summary=SUMMARY)
    assert seed.instructions.startswith("Be helpful.\n\n" + CONTINUATION) and SUMMARY in seed.instructions
    assert "turn 5" not in seed.instructions and "Earlier in this call" not in seed.instructions
    assert [text for _, text in seed.turns] == ["turn 6", "turn 7", "turn 8", "turn 9"]
    assert (seed.source, seed.summarized, seed.left_out) == ("model", 6, 0)
    fallback = build_seed("Be helpful.", TURNS, recent=4)
    assert fallback.source == "transcript" and "turn 5" in fallback.instructions


@pytest.mark.parametrize(
    ("uses", "budget", "expected_names"),
    [
        ([], 1600, []),
        ([ToolUse("b", "{}", "two"), ToolUse("a", "{}", "one")], 1600, ["b", "a"]),  # as given: newest first
        ([ToolUse("new", "{}", "x" * 1000), ToolUse("old", "{}", "y")], 1600, ["new", "old"]),  # outputs shortened
        ([ToolUse(f"t{n}", "{}", "z" * 300) for n in range(20)], 1600, [f"t{n}" for n in range(5)]),  # the budget
        ([ToolUse("big", "{}", "x" * 300)], 50, []),
    ],
)
def test_tool_lines_newest_first_within_a_budget(uses: list[ToolUse], budget: int, expected_names: list[str]) -> None:
    lines = tool_lines(uses, budget=budget)
    assert [line[2:].split("(", 1)[0] for line in lines] == expected_names
    assert sum(len(line) + 1 for line in lines) <= budget
    assert all(len(line) < 600 for line in lines)


def test_the_history_keeps_the_last_calls_and_a_seed_tells_them() -> None:
    history = ToolHistory(keep=3)
    for n in range(5):
        history.add(f"tool{n}", json.dumps({"n": n}), json.dumps({"ok": True, "n": n}))
    assert [use.name for use in history.newest_first()] == ["tool4", "tool3", "tool2"] and history.total == 5
    transfer = ToolUse("transfer_call", '{"reason": "billing"}', '{"ok": true, "transferring": true}')
    seed = build_seed("x", TURNS, tools=[transfer, *history.newest_first()])
    told = seed.instructions.split("Tools already used in this call", 1)[1]
    assert told.index("transfer_call") < told.index("tool4") and '"transferring": true' in told
    assert seed.tool_calls == 4
    assert "Tools already used" not in build_seed("x", TURNS).instructions


# --- in memory: the summary's response is never a turn ---------------------------------------


@in_loop
async def test_the_summary_response_is_not_played_booked_or_cancelled_and_seeds_the_new_session() -> None:
    twilio, old, new, clock = FakeTwilio(), FakeModel(), FakeModel(), Clock()

    def setup(start: ms.Start) -> CallSetup:
        plain = _setup(old, [new], RolloverPolicy(rollover_after_s=10))
        return CallSetup(
            session_config=plain.session_config, upstream=plain.upstream, reconnect=plain.reconnect, upstream_name="openai",
            rollover=plain.rollover,
        )

    call = _call(twilio, setup, clock)
    running = asyncio.create_task(call.run())
    twilio.say(START)
    await _until(lambda: call.life.in_call, "in call")
    await _a_turn(old, twilio, 1, clock)
    clock.now += 11  # the session's age is past the setting: a rollover is due, the summary asked at once
    await _until(lambda: any(e.get("response", {}).get("conversation") == "none" for e in old.sent), "summary asked")
    old.say(OutOfBandStarted("oob", PURPOSE))
    await asyncio.sleep(0.05)
    assert call.ledger.active is None  # not the call's active response
    # a normal response plays meanwhile and the caller barges in: only that one is cancelled
    played = twilio.media_bytes()
    old.say(ResponseStarted("r5"), AudioDelta("r5", "a5", 0, b"\x00\x10" * 2400))
    await _until(lambda: twilio.media_bytes() > played, "r5 plays")
    old.say(SpeechStarted("u5", 0))
    await _until(lambda: "response.cancel" in old.sent_types(), "r5 cancelled")
    assert call.ledger.is_dropped("r5") and not call.ledger.is_dropped("oob")
    before = (twilio.media_bytes(), len(call.transcript.turns()))
    old.say(TextDone("oob", SUMMARY), OutOfBandFinished(PURPOSE, ResponseFinished("oob", "completed"), SUMMARY))
    old.say(ResponseFinished("r5", "cancelled"), SpeechStopped("u5", 900))
    await _until(lambda: call.link.connection is new, "switched")
    assert (twilio.media_bytes(), len(call.transcript.turns())) == before  # nothing of it played or transcribed
    assert SUMMARY not in str(call.transcript.turns())
    await _until(lambda: "session.update" in new.sent_types(), "the new session seeded")  # by the sender task
    update = next(e for e in new.sent if e["type"] == "session.update")
    assert SUMMARY in update["session"]["instructions"]
    assert call.metrics.registry.get_sample_value("voice_bridge_rollover_summaries_total", {"source": "model"}) == 1
    twilio.say(ms.Stop(SID))
    assert await asyncio.wait_for(running, 2) is EndReason.CALLER_HANGUP
