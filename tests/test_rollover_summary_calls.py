"""Whole calls on loopback, per dialect, with a scripted model that answers (or not) the rollover's
out-of-band summary: the new session's instructions carry the model's summary; a silent or failed
summary falls back to the transcript's within the deadline; a tool call made before the rollover
is told to the new session.

The rollover is triggered by the token budget (`rollover_input_tokens`): the answer's response.done
reports more input tokens than the budget, so the rollover is due right after it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import AUTH_TOKEN, caller_clip, capture_logs, metrics_text, run, running_bridge
from dialect_upstream import ModelServer, ModelSession, client_event_problems, seeded_turns
from test_model_telemetry import CASES, GREETING_USAGE, speak_with_usage
from test_upstream_calls import ANSWER, ANSWER_TEXT, GREETING, GREETING_TEXT, QUESTION_TEXT

from bridge.call.rollover import SUMMARY_DEADLINE_S
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan

SPEED = 8.0
BUDGET = 200  # input tokens: the answer below re-reads more
OVER_BUDGET = (180, 100, 128, 64, 40, 300)  # 280 input tokens
SUMMARY = "The caller asked where order 1234 is; told it shipped and arrives Thursday. Nothing open."
# The caller stays on the line long enough for the summary's deadline and the switch.
PLAN = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=14.0)


def _is_summary_request(event: dict[str, Any]) -> bool:
    response = event.get("response") or {}
    return event.get("type") == "response.create" and (response.get("conversation") == "none" or response.get("commit") is False)


async def _summary_request(session: ModelSession) -> dict[str, Any]:
    while True:
        event = await session.expect("response.create", timeout=30)
        if _is_summary_request(event):
            return event


def first_session(behaviour: str, tool: bool = False):  # type: ignore[no-untyped-def]
    async def script(session: ModelSession) -> None:
        await session.configure()
        await speak_with_usage(session, GREETING, GREETING_TEXT, GREETING_USAGE)
        await session.listen(QUESTION_TEXT)
        if tool:
            await _call_tool(session)
        await speak_with_usage(session, ANSWER, ANSWER_TEXT, OVER_BUDGET)
        request = await _summary_request(session)
        if behaviour == "answers":
            await session.answer_out_of_band(request, SUMMARY)
        elif behaviour == "fails":
            await session.answer_out_of_band(request, "", status="failed")
        # "silent": never answers

    return script


async def _call_tool(session: ModelSession) -> None:
    """A response that only calls `lookup_order`; the bridge answers it with the tool's output."""
    response_id, item_id = session.new_id("resp"), session.new_id("item")
    await session.send("response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"})
    arguments = json.dumps({"order_number": "CO-12345"})
    await session.send(
        "response.function_call_arguments.done",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        call_id="call_1",
        name="lookup_order",
        arguments=arguments,
    )
    await session.send("response.done", response={"id": response_id, "object": "realtime.response", "status": "completed"})
    await session.expect("conversation.item.create")  # the tool's output
    await session.expect("response.create")  # ... and the model may go on


async def next_session(session: ModelSession) -> None:
    await session.configure(greet=False)


def _a_call(case: str, behaviour: str, tool: bool = False) -> tuple[ModelServer, list[dict[str, Any]], str]:
    wire, settings_of, _ = CASES[case]

    async def scenario() -> tuple[ModelServer, list[dict[str, Any]], str]:
        async with ModelServer(wire, [first_session(behaviour, tool), next_session]) as server:
            extra: dict[str, Any] = {"tools": ("lookup_order",)} if tool else {}  # the shipped example tool
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, rollover_input_tokens=BUDGET, **extra, **settings_of(server)) as (url, _):
                    await place_call(url, PLAN, auth_token=AUTH_TOKEN, speed=SPEED)
                    metrics = await metrics_text(url)
            await asyncio.sleep(0)
        return server, logs, metrics

    return run(scenario())


def _switch(server: ModelServer) -> tuple[dict[str, Any], float, str, float]:
    """The summary request and when it arrived, the new session's seeded instructions and when."""
    old, new = server.sessions[0], server.sessions[1]
    request = next(event for event in old.received if _is_summary_request(event))
    asked_at = old.received_at[old.received.index(request)]
    updates = [(e, at) for e, at in zip(new.received, new.received_at, strict=True) if e["type"] == "session.update"]
    assert len(updates) == 2  # the session's configuration, then the call so far
    seeded, seeded_at = updates[1]
    return request, asked_at, seeded["session"]["instructions"], seeded_at


def _summary_log(logs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [entry for entry in logs if entry["event"] == "rollover.summary"]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("case", ["openai", "voicelive"])
def test_the_new_session_is_told_the_models_own_summary(case: str) -> None:
    server, logs, metrics = _a_call(case, "answers")
    assert not server.errors, server.errors
    assert len(server.sessions) == 2
    request, _, instructions, _ = _switch(server)
    assert client_event_problems(server.wire, request) == []
    assert request["response"]["metadata"] == {"voice_bridge_purpose": "rollover_summary"}
    assert SUMMARY in instructions
    # the last turns verbatim, and never the summary: it was not a turn of the call
    assert seeded_turns(server.sessions[1]) == [("assistant", GREETING_TEXT), ("user", QUESTION_TEXT), ("assistant", ANSWER_TEXT)]
    entry = _summary_log(logs)
    assert entry["source"] == "model" and entry["reason"] == "ok"
    rolled = [entry for entry in logs if entry["event"] == "upstream.rolled_over"]
    assert len(rolled) == 1 and rolled[0]["quiet"] is True  # the summary was never the call's active response
    summary_id = next(e["response"]["id"] for e in server.sessions[0].sent if e["type"] == "response.created" and e["response"].get("metadata"))
    assert not [entry for entry in logs if entry.get("response_id") == summary_id]  # never booked as a response of the call
    assert 'voice_bridge_rollover_summaries_total{source="model"} 1.0' in metrics


@pytest.mark.parametrize(("case", "behaviour", "reason"), [("openai", "silent", "timeout"), ("voicelive", "silent", "timeout"), ("voicelive", "fails", "failed")])
def test_a_silent_or_failed_summary_falls_back_to_the_transcripts_within_the_deadline(case: str, behaviour: str, reason: str) -> None:
    server, logs, metrics = _a_call(case, behaviour)
    assert not server.errors, server.errors
    _, asked_at, instructions, seeded_at = _switch(server)
    assert SUMMARY not in instructions
    assert seeded_turns(server.sessions[1]) == [("assistant", GREETING_TEXT), ("user", QUESTION_TEXT), ("assistant", ANSWER_TEXT)]
    entry = _summary_log(logs)
    assert entry["source"] == "transcript" and entry["reason"] == reason
    deadline_s = SUMMARY_DEADLINE_S / SPEED  # the call's clock runs SPEED times faster
    waited = seeded_at - asked_at
    if reason == "timeout":
        assert deadline_s * 0.9 <= waited <= deadline_s + 1.0, waited
    else:
        assert waited < deadline_s, waited
    assert 'voice_bridge_rollover_summaries_total{source="transcript"} 1.0' in metrics


@pytest.mark.parametrize("case", ["openai", "voicelive"])
def test_a_tool_called_before_the_rollover_is_told_to_the_new_session(case: str) -> None:
    server, logs, _ = _a_call(case, "answers", tool=True)
    assert not server.errors, server.errors
    _, _, instructions, _ = _switch(server)
    assert "Tools already used in this call" in instructions
    told = instructions.split("Tools already used in this call", 1)[1]
    assert 'lookup_order({"order_number": "CO-12345"})' in told and '"status": "shipped"' in told
    assert _summary_log(logs)["tool_calls"] == 1
