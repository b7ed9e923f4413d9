"""Planned session rollover on loopback, per dialect (issue 18, "How it is checked").

The real app under uvicorn, the phone simulator as Twilio, and a scripted model
(`capped_model.CappedModel` on `dialect_upstream.ModelServer`) that ends each session at a short cap
(`error session_expired`), announces it as `expires_at` where asked (Voice Live), and bills input
tokens that grow with the session's history. Audio is g711 (passed through), every caller and model
frame stamped, so the test can tell which caller frame reached which session and what the phone
played when. Each call has at least two rollovers and checks:

- they happen before the cap (the model never has to end a session), for the reason under test:
  the age (`VOICE_BRIDGE_ROLLOVER_SECONDS`), the announced `expires_at`, or the token budget
  (`rollover_input_tokens`, which then keeps the tokens per response bounded);
- each new session is told the call: its instructions carry the caller's earlier turns (the summary)
  and its conversation items are the last turns word for word;
- every caller frame from the first one a session heard to the end of the last utterance reached a
  session: before, during (while the next session opens) and after each switch; two sessions share
  only the lead-in (at most 300 ms), and no session hears a frame twice or out of order;
- the phone played every response whole and in order, responses never interleave, and inside a
  response there is no silence the model did not make longer than one frame (20 ms).

Calls run on a scaled clock; nothing is asserted about how long anything took.
"""

from __future__ import annotations

from typing import Any

import pytest
from capped_model import (
    ANSWER_FRAMES,
    VAD_SILENCE_FRAMES,
    CappedModel,
    MarkedCaller,
    heard_frames,
    utterance,
)
from conftest import AUTH_TOKEN, capture_logs, run, running_bridge
from dialect_upstream import GA_WIRE, VOICELIVE_WIRE, ModelServer, client_event_problems

from bridge.call.upstream_link import LEAD_IN_FRAMES
from bridge.devtools.phone import CallReport, place_call
from bridge.devtools.phone.caller import CallerPlan

SPEED = 8.0
KEY = "sk-test-key-rollover-0123456789"
FRAME_BYTES = 160
RECENT_TURNS = 6  # the seed's verbatim turns (bridge/call/seed.py)
OPEN_DELAY_S = 0.1  # every upstream handshake is held this long (wall): caller audio arrives while the next session opens
UPSTREAMS = ("openai", "azure-openai", "voicelive")


def settings_for(upstream: str, server: ModelServer) -> dict[str, Any]:
    common = {"audio": "g711", "prewarm": False}
    if upstream == "voicelive":
        return {
            **common,
            "upstream": "voicelive",
            "azure_voicelive_endpoint": server.origin,
            "azure_voicelive_model": "gpt-realtime",
            "azure_voicelive_api_key": KEY,
        }
    if upstream == "azure-openai":
        return {
            **common,
            "upstream": "azure-openai",
            "azure_openai_endpoint": server.origin,
            "azure_openai_deployment": "rt-prod",
            "azure_openai_api_key": KEY,
        }
    return {**common, "upstream": "openai", "openai_api_key": KEY, "upstream_url": server.url("/v1/realtime?model=gpt-realtime")}


class Call:
    """One call's evidence: what the phone heard, what each model session got, the bridge's log."""

    def __init__(
        self, report: CallReport, caller: MarkedCaller, model: CappedModel, server: ModelServer, logs: list[dict[str, Any]]
    ):
        self.report = report
        self.caller = caller
        self.model = model
        self.server = server
        self.logs = logs

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs if entry["event"] == name]


async def place(upstream: str, model: CappedModel, utterances: int, **settings: Any) -> Call:
    wire = VOICELIVE_WIRE if upstream == "voicelive" else GA_WIRE
    plan = CallerPlan(utterances=(utterance(0.8),) * utterances, pause_s=0.4, hangup_after_s=1.0, max_call_s=150.0)
    caller = MarkedCaller(plan)
    with capture_logs() as logs:
        async with ModelServer(wire, scripts=[model.script], handshake_delay_s=OPEN_DELAY_S) as server:
            async with running_bridge(speed=SPEED, **settings_for(upstream, server), **settings) as (url, _):
                report = await place_call(url, auth_token=AUTH_TOKEN, speed=SPEED, playout_step_ms=20, caller=caller)
    return Call(report, caller, model, server, logs)


# --- checks -------------------------------------------------------------------------------------


def check_conversation(call: Call, utterances: int) -> None:
    """The call went on to its end: every utterance said and answered, no event out of its dialect's shape."""
    assert call.server.errors == []
    assert call.report.ended_by == "caller", call.report.summary()
    assert call.report.utterances_said == utterances == call.report.answers_heard, call.report.summary()
    for session in call.server.sessions:
        problems = {
            f"{i}:{e['type']}": p for i, e in enumerate(session.received) if (p := client_event_problems(call.server.wire, e))
        }
        assert problems == {}, f"session {session.index}: {problems}"


def check_rollovers(call: Call, reason: str, minimum: int = 2) -> None:
    """At least `minimum` planned rollovers for `reason` that the call survived (the new session went on
    to answer the caller), each before the model's cap."""
    rolled = call.events("upstream.rolled_over")
    answering = [log for log in call.model.sessions[1:] if log.responses]
    assert len(answering) >= minimum, [e["event"] for e in call.logs if e["event"].startswith("upstream.")]
    assert {e["reason"] for e in rolled} == {reason}
    assert call.events("upstream.reconnecting") == [] and call.events("upstream.rollover_failed") == []
    # Every session after the first was opened for a rollover; the last rollover may have been left
    # unused, or not even reached the model, when the caller hung up while it was being opened.
    started = call.events("upstream.rollover_started")
    assert len(started) <= len(call.model.sessions) <= len(started) + 1
    assert len(started) - 1 <= len(rolled) <= len(started)
    assert call.model.expired == 0  # no session lived to its cap
    for log in call.model.sessions[:-1]:
        assert log.closed_at is not None and log.closed_at - log.opened_at < call.model.cap_s


def check_seeds(call: Call) -> None:
    """Each new session: the caller's older turns in its instructions, the last turns as items, verbatim."""
    switched_to = call.model.sessions[1 : len(call.events("upstream.rolled_over")) + 1]
    for log in switched_to:
        assert len(log.instructions) >= 2, "a new session gets its configuration, then the call so far"
        summary, turns = log.instructions[-1], call.model.turns[: log.turns_then[-1]]
        older_caller = [text for role, text in turns[:-RECENT_TURNS] if role == "user"]
        assert older_caller, f"session {log.index}: the test needs caller turns older than the last {RECENT_TURNS}"
        missing = [text for text in older_caller if text not in summary]
        assert missing == [], f"session {log.index}'s instructions lack earlier caller turns: {missing}"
        assert log.seeded == turns[-RECENT_TURNS:]


def check_caller_audio(call: Call) -> None:
    """Every caller frame from the first a session heard to the end of the last utterance reached a
    session; only a switch's lead-in reaches two; before, during and after each switch."""
    sessions = call.model.sessions[: len(call.events("upstream.rolled_over")) + 1]
    assert all(not log.frames for log in call.model.sessions[len(sessions) :])  # opened, not switched to
    for log in sessions:
        assert log.frames == sorted(set(log.frames)), f"session {log.index} heard a frame twice or out of order"
    heard = call.model.session_of_frame()
    speech = call.caller.speech
    assert min(heard) <= min(speech), "the first utterance began before any session heard the caller"
    last_needed = max(speech) + VAD_SILENCE_FRAMES  # the last utterance and the quiet that ended it
    lost = [i for i in range(min(heard), last_needed + 1) if i not in heard]
    assert lost == [], f"caller frames that reached no session: {lost[:20]}… ({len(lost)})"
    for old, new in zip(sessions, sessions[1:], strict=False):
        shared = set(old.frames) & set(new.frames)
        assert len(shared) <= LEAD_IN_FRAMES
        assert sorted(shared) == new.frames[: len(shared)] == old.frames[len(old.frames) - len(shared) :]
        assert new.previous_last_frame is not None
        before = range(min(old.frames), new.previous_last_frame + 1)
        during = range(new.previous_last_frame + 1, old.frames[-1] + 1)
        after = range(old.frames[-1] + 1, new.frames[-1] + 1)
        if new.responses:  # (a switch just before the hangup may have no "after")
            assert len(before) and len(during) and len(after), (before, during, after)
        for span in (before, during, after):
            assert all(i in heard for i in span)


def check_phone(call: Call) -> None:
    """Every response played whole, in order, never interleaved, with no gap the model did not make."""
    played = heard_frames(bytes(call.report.agent_audio))
    order = [(h.session, h.response) for h in played]
    assert order == sorted(order), "responses (or sessions) interleaved at the phone"
    responses = sorted({response for _, response in order})
    assert responses == list(range(1, call.model.responses + 1))
    for number in responses:
        frames = [h for h in played if h.response == number]
        assert [h.k for h in frames] == list(range(len(frames)))
        assert len(frames) >= ANSWER_FRAMES or number == 1
        gaps = [h.gap_before_bytes for h in frames[1:]]
        assert max(gaps) <= FRAME_BYTES, f"response {number}: a gap of {max(gaps) / 8:.0f} ms inside it"
    sessions_heard = {h.session for h in played}
    assert sessions_heard == {log.index for log in call.model.sessions if log.responses}


def check_all(call: Call, utterances: int, reason: str) -> None:
    check_conversation(call, utterances)
    check_rollovers(call, reason)
    check_seeds(call)
    check_caller_audio(call)
    check_phone(call)


# --- the calls -----------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_rollover_by_session_age_before_the_cap(upstream: str) -> None:
    """VOICE_BRIDGE_ROLLOVER_SECONDS=14 against a model that ends sessions after 32 s."""
    model = CappedModel(SPEED, cap_s=32.0)
    call = run(place(upstream, model, utterances=16, rollover_seconds=14), timeout=90)
    check_all(call, 16, "session_age")


def test_voicelive_rolls_over_before_the_announced_expires_at() -> None:
    """Voice Live announces `expires_at` 135 s ahead; the bridge rolls over from 120 s before it."""
    model = CappedModel(SPEED, cap_s=135.0, announce_expiry=True)
    call = run(place("voicelive", model, utterances=16), timeout=90)
    check_all(call, 16, "expires_at")


BUDGET = 900


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_rollover_on_the_token_budget_keeps_tokens_per_response_bounded(upstream: str) -> None:
    """`rollover_input_tokens`: a response that re-read more than the budget rolls the call over;
    the tokens each response re-reads then stay near the budget instead of growing with the call."""
    model = CappedModel(SPEED, cap_s=600.0)
    call = run(place(upstream, model, utterances=16, rollover_input_tokens=BUDGET), timeout=90)
    check_all(call, 16, "input_tokens")
    for log in call.model.sessions[:-1]:
        assert max(billed for _, billed in log.responses) > BUDGET  # the trigger was real
    billed = [tokens for log in call.model.sessions for _, tokens in log.responses]
    assert max(billed) < 2 * BUDGET, billed  # without rollover: about 3000 by the end of this call
    answered = [log for log in call.model.sessions if log.responses]
    for old, new in zip(answered, answered[1:], strict=False):
        assert new.responses[0][1] < BUDGET < old.responses[-1][1]  # a sawtooth under the budget, not a climb


def test_the_model_enforces_its_cap_without_a_rollover() -> None:
    """The control: with no rollover planned before it, the scripted cap does end the session (the
    bridge then replaces it, the unplanned path), so the tests above would see an expiry."""
    model = CappedModel(SPEED, cap_s=8.0)
    call = run(place("azure-openai", model, utterances=5), timeout=60)
    assert call.server.errors == []
    assert model.expired >= 1
    assert call.events("upstream.rolled_over") == []
    assert [e["reason"] for e in call.events("upstream.reconnecting")][:1] == ["session_expired"]
