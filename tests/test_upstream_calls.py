"""Whole calls through the real app against a scripted model in each upstream dialect, and what the
caller hears when the upstream refuses, stalls, errs, drops or expires (project issue #5).

Each call: the phone simulator (as Twilio) → the bridge under uvicorn → a scripted model on
loopback (`dialect_upstream.ModelServer`) that checks the handshake and the session the bridge asks
for, then plays its part with real speech from fixtures/audio in the dialect's own event names.
Calls run on a scaled clock (`speed`) where timing does not matter; assertions are about what was
sent, heard and logged, never about how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import urllib.parse
from typing import Any

import httpx
import pytest
from conftest import AUDIO, AUTH_TOKEN, caller_clip, capture_logs, metrics_text, read_wav, run, running_bridge, settle
from controlled_credential import ControlledCredential
from dialect_upstream import (
    GA_WIRE,
    VOICELIVE_WIRE,
    ModelServer,
    ModelSession,
    Wire,
    client_event_problems,
    seeded_turns,
)
from handshake_upstream import SilentUpstream
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from bridge.devtools.phone import CallReport, place_call, simulator
from bridge.devtools.phone.caller import CallerPlan
from bridge.upstream_config import AZURE_OPENAI_SCOPE, VOICELIVE_API_VERSION, VOICELIVE_SCOPE
from twiml.signatures import TwilioSigner

KEY = "sk-test-key-4a7d1c9e2b8f6a3d5c0e"
FALLBACK = "+15550123456"
SPEED = 8.0  # calls whose timing does not matter run eight times faster than real time


def _clip(name: str) -> tuple[bytes, float]:
    samples, rate = read_wav(AUDIO / name)
    assert rate == 24000
    return samples.tobytes(), len(samples) / rate


GREETING, GREETING_S = _clip("agent_greeting.wav")
ANSWER, ANSWER_S = _clip("agent_answer_order.wav")
GOODBYE, GOODBYE_S = _clip("agent_goodbye.wav")
GREETING_TEXT = "Hello, thanks for calling. How can I help you today?"
ANSWER_TEXT = "Sure. Your order has shipped and should arrive on Thursday."
GOODBYE_TEXT = "Thanks for calling. Goodbye."
QUESTION_TEXT = "Where is my order?"
SECOND_TEXT = "Thank you, that is all."
HEARD_TOLERANCE_S = 0.1

GA_SERVER_EVENT = TypeAdapter(RealtimeServerEvent)




# --- the dialects as a user configures them ----------------------------------------------------

DIALECTS: dict[str, dict[str, Any]] = {
    # name: wire, expected path+query, expected auth header, settings(server)
    "voicelive-key": {
        "wire": VOICELIVE_WIRE,
        "path": f"/voice-live/realtime?api-version={VOICELIVE_API_VERSION}&model=gpt-realtime",
        "auth": {"api-key": KEY},
        "settings": lambda s: {
            "upstream": "voicelive",
            "azure_voicelive_endpoint": s.origin,
            "azure_voicelive_model": "gpt-realtime",
            "azure_voicelive_api_key": KEY,
        },
    },
    "voicelive-entra": {
        "wire": VOICELIVE_WIRE,
        "path": f"/voice-live/realtime?api-version={VOICELIVE_API_VERSION}&model=gpt-realtime",
        "auth": {"Authorization": f"Bearer token-1-for-{VOICELIVE_SCOPE}"},
        "settings": lambda s: {
            "upstream": "voicelive",
            "azure_voicelive_endpoint": s.origin,
            "azure_voicelive_model": "gpt-realtime",
        },
    },
    "azure-openai-key": {
        "wire": GA_WIRE,
        "path": "/openai/v1/realtime?model=rt-prod",
        "auth": {"api-key": KEY},
        "settings": lambda s: {
            "upstream": "azure-openai",
            "azure_openai_endpoint": s.origin,
            "azure_openai_deployment": "rt-prod",
            "azure_openai_api_key": KEY,
        },
    },
    "azure-openai-entra": {
        "wire": GA_WIRE,
        "path": "/openai/v1/realtime?model=rt-prod",
        "auth": {"Authorization": f"Bearer token-1-for-{AZURE_OPENAI_SCOPE}"},
        "settings": lambda s: {
            "upstream": "azure-openai",
            "azure_openai_endpoint": s.origin,
            "azure_openai_deployment": "rt-prod",
        },
    },
    "openai": {
        "wire": GA_WIRE,
        "path": "/v1/realtime?model=gpt-realtime",
        "auth": {"Authorization": f"Bearer {KEY}"},
        # OpenAI's URL is fixed (wss://api.openai.com/...): the scripted server stands in through
        # VOICE_BRIDGE_UPSTREAM_URL, which keeps the OpenAI authentication.
        "settings": lambda s: {
            "upstream": "openai",
            "openai_api_key": KEY,
            "upstream_url": s.url("/v1/realtime?model=gpt-realtime"),
        },
    },
}


def wire_of(dialect: str) -> Wire:
    return DIALECTS[dialect]["wire"]


def settings_for(dialect: str, server: ModelServer, **more: Any) -> dict[str, Any]:
    return {**DIALECTS[dialect]["settings"](server), **more}


@pytest.fixture
def entra() -> ControlledCredential:
    """The app's Entra ID credential, controlled by the test (`create_app(credential=...)`) in place
    of DefaultAzureCredential. Everything of ours around it (token cache, header source,
    handshake) is real."""
    return ControlledCredential()


# --- checks shared by the calls -----------------------------------------------------------------


def assert_heard(report: CallReport, expected_s: float) -> None:
    assert abs(report.agent_audio_s - expected_s) < HEARD_TOLERANCE_S, report.summary()


def assert_handshakes(server: ModelServer, dialect: str) -> None:
    spec = DIALECTS[dialect]
    for handshake in server.handshakes:
        assert handshake.path == spec["path"]
        sent = {name: handshake.headers[name] for name in ("api-key", "Authorization") if name in handshake.headers}
        assert sent == spec["auth"]
        assert "OpenAI-Beta" not in handshake.headers  # GA and Voice Live alike: no beta header


def assert_valid_client_events(server: ModelServer) -> None:
    """Every event the bridge sent, in every session, has its dialect's shape."""
    for session in server.sessions:
        problems = {}
        for index, event in enumerate(session.received):
            found = client_event_problems(server.wire, event)
            if found:
                problems[f"{index}:{event['type']}"] = found
        assert problems == {}, f"session {session.index}: {problems}"


def assert_valid_server_events(server: ModelServer) -> None:
    """The scripted model itself speaks GA correctly (checked against the openai types)."""
    if server.wire.dialect != "ga":
        return
    for session in server.sessions:
        for event in session.sent:
            GA_SERVER_EVENT.validate_python(event)


def assert_session_shape(wire: Wire, update: dict[str, Any]) -> None:
    """The session.update has its dialect's shape (not just a valid one)."""
    session = update["session"]
    if wire.dialect == "voicelive":
        # Flat, beta-shaped, with the Azure extras the default profile turns on.
        assert session["input_audio_format"] == session["output_audio_format"] == "pcm16"
        assert session["input_audio_sampling_rate"] == 24000
        assert session["voice"] == {"type": "openai", "name": "alloy"}
        assert session["turn_detection"]["type"] == "azure_semantic_vad"
        assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}
        assert session["input_audio_echo_cancellation"] == {"type": "server_echo_cancellation"}
        assert "audio" not in session and "type" not in session
    else:
        assert session["type"] == "realtime"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["output"] == {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert "input_audio_format" not in session and "voice" not in session


def assert_no_secrets(logs: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, *secrets_: str) -> None:
    text = str(logs)
    client_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("websockets.client"))
    for secret in secrets_:
        assert secret not in text
        assert secret not in client_logs


def events_named(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def warnings_and_errors(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["log_level"] in ("warning", "error")]




async def post_voice(url: str) -> str:
    """Only the webhook of a call, signed as Twilio signs it; returns the CallSid."""
    call_sid = "CA" + secrets.token_hex(16)
    form = {"CallSid": call_sid, "AccountSid": "AC" + "0" * 32, "From": "+15550199999", "To": "+15550100000"}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": TwilioSigner(AUTH_TOKEN).sign(f"{url}/voice", form),
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{url}/voice", content=urllib.parse.urlencode(form), headers=headers)
    answer.raise_for_status()
    assert "<Connect>" in answer.text
    return call_sid


# --- scripts: the model's side ------------------------------------------------------------------


async def greet_answer(session: ModelSession) -> None:
    """Greeting; the caller asks; the answer."""
    await session.configure()
    await session.speak(GREETING, GREETING_TEXT)
    await session.listen(QUESTION_TEXT)
    await session.speak(ANSWER, ANSWER_TEXT)


async def greet_only(session: ModelSession) -> None:
    await session.configure()
    await session.speak(GREETING, GREETING_TEXT)


ONE_QUESTION = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
TWO_QUESTIONS = CallerPlan(
    utterances=(caller_clip("caller_question.wav"), caller_clip("caller_interrupt.wav")),
    pause_s=1.2,
    hangup_after_s=1.0,
)
LISTEN_ONLY = CallerPlan(hangup_after_s=1.0)
STAYS_ON_THE_LINE = CallerPlan(hangup_after_s=60.0, max_call_s=120.0)


async def _call_with_fallback(
    server: ModelServer, metrics: list[str] | None = None
) -> tuple[CallReport, list[dict[str, Any]]]:
    """A caller who stays on the line, through a bridge on Azure OpenAI with a fallback number
    (`metrics`, if given, gets the bridge's /metrics text after the call)."""
    settings = settings_for("azure-openai-key", server, fallback_number=FALLBACK)
    with capture_logs() as logs:
        async with running_bridge(speed=SPEED, **settings) as (url, _):
            report = await place_call(url, STAYS_ON_THE_LINE, auth_token=AUTH_TOKEN, speed=SPEED)
            if metrics is not None:
                metrics.append(await metrics_text(url))
    return report, logs


# --- a whole call per dialect -------------------------------------------------------------------


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_whole_call_in_each_dialect(
    dialect: str, entra: ControlledCredential, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="websockets.client")
    wire = wire_of(dialect)

    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]]]:
        async with ModelServer(wire, [greet_answer]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, credential=entra, **settings_for(dialect, server)) as (url, app):
                    report = await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                    assert await settle(lambda: not app.state.bridge.active_calls)
                    assert await settle(lambda: server.sessions[0].closed_at is not None)
        return report, server, logs

    report, server, logs = run(scenario())
    assert server.errors == []
    # The handshake: path and query built from the settings, the dialect's authentication.
    assert len(server.handshakes) == 1
    assert_handshakes(server, dialect)
    # The session: configured in the dialect's shape before anything else, then the greeting asked for.
    (session,) = server.sessions
    assert session.kinds()[:2] == ["session.update", "response.create"]
    assert_session_shape(wire, session.received[0])
    assert_valid_client_events(server)
    assert_valid_server_events(server)
    assert session.appended_ms > 0
    # The caller heard the greeting and the answer, all of it, and hung up; the bridge closed cleanly.
    assert report.ended_by == "caller"
    assert_heard(report, GREETING_S + ANSWER_S)
    assert report.clears == 0
    assert session.close_code == 1000
    ended = events_named(logs, "call.ended")
    assert [e["reason"] for e in ended] == ["caller_hangup"] and ended[0]["call_sid"] == report.call_sid
    assert [e["auth"] for e in events_named(logs, "bridge.ready")] == [
        "entra_id" if dialect.endswith("entra") else ("bearer_key" if dialect == "openai" else "api_key")
    ]
    assert warnings_and_errors(logs) == []
    # No credential in any log line: not the key, not the token.
    assert_no_secrets(logs, caplog, KEY, f"token-1-for-{VOICELIVE_SCOPE}", f"token-1-for-{AZURE_OPENAI_SCOPE}")
    if dialect.endswith("entra"):
        scope = VOICELIVE_SCOPE if dialect.startswith("voicelive") else AZURE_OPENAI_SCOPE
        assert entra.calls == [(scope,)]  # fetched once at start, the call used the cached token
    else:
        assert entra.calls == []  # a key is configured: no Entra ID at all


# --- the upstream refuses or stalls at the handshake --------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_not_retried_and_the_caller_gets_the_fallback(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="websockets.client")

    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]]]:
        async with ModelServer(GA_WIRE, statuses=[status]) as server:
            report, logs = await _call_with_fallback(server)
        return report, server, logs

    report, server, logs = run(scenario())
    assert len(server.handshakes) == 1 and server.sessions == []  # one attempt: a refusal will not pass
    assert report.ended_by == "bridge" and report.close_code == 1011
    assert report.agent_audio_s == 0
    assert report.after_stream_verbs == ["Say", "Dial"] and report.dialed == FALLBACK
    (failed,) = events_named(logs, "upstream.connect_failed")
    assert failed["error"] == "UpstreamUnavailable" and "refused the credentials" in failed["detail"]
    assert failed["call_sid"] == report.call_sid
    assert events_named(logs, "upstream.connect_retry") == []
    assert_no_secrets(logs, caplog, KEY)


def test_a_handshake_that_never_completes_times_out_and_the_caller_gets_the_fallback() -> None:
    # The upstream accepts TCP and never answers the upgrade. The bridge's open timeout (10 s,
    # bridge.upstream.OPEN_TIMEOUT_S) is not configurable from the app, so this test takes 10 s.
    async def scenario() -> tuple[CallReport, SilentUpstream, list[dict[str, Any]]]:
        async with SilentUpstream() as silent:
            settings = {
                "upstream": "openai",
                "openai_api_key": KEY,
                "upstream_url": f"ws://127.0.0.1:{silent.port}/v1/realtime?model=gpt-realtime",
                "fallback_number": FALLBACK,
            }
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings) as (url, _):
                    report = await place_call(url, STAYS_ON_THE_LINE, auth_token=AUTH_TOKEN, speed=SPEED)
        return report, silent, logs

    report, silent, logs = run(scenario(), timeout=40)
    assert silent.accepted == 1  # the open timeout outlasts the retry budget: one attempt
    assert report.ended_by == "bridge" and report.close_code == 1011 and report.agent_audio_s == 0
    assert report.after_stream_verbs == ["Say", "Dial"] and report.dialed == FALLBACK
    (failed,) = events_named(logs, "upstream.connect_failed")
    assert "did not complete in time" in failed["detail"]


def test_a_passing_refusal_is_retried_and_the_call_goes_on() -> None:
    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]]]:
        async with ModelServer(GA_WIRE, [greet_only], statuses=[503, None]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings_for("azure-openai-key", server)) as (url, _):
                    report = await place_call(url, LISTEN_ONLY, auth_token=AUTH_TOKEN, speed=SPEED)
        return report, server, logs

    report, server, logs = run(scenario())
    assert server.errors == []
    assert len(server.handshakes) == 2 and len(server.sessions) == 1
    assert_handshakes(server, "azure-openai-key")  # the retry authenticates too
    assert report.ended_by == "caller"
    assert_heard(report, GREETING_S)
    (retry,) = events_named(logs, "upstream.connect_retry")
    assert retry["error"] == "HTTP 503" and retry["attempt"] == 1


def test_a_slow_but_successful_handshake_still_gives_a_normal_call() -> None:
    # A 3 s handshake in call time (0.375 s real at speed 8): slow, but well within the 10 s open timeout.
    async def scenario() -> tuple[CallReport, list[dict[str, Any]]]:
        async with ModelServer(GA_WIRE, [greet_only], handshake_delay_s=3.0 / SPEED) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings_for("openai", server)) as (url, _):
                    report = await place_call(url, LISTEN_ONLY, auth_token=AUTH_TOKEN, speed=SPEED)
        return report, logs

    report, logs = run(scenario())
    assert [e.get("reason") for e in events_named(logs, "twilio.bad_frame")] == []
    assert report.ended_by == "caller"
    assert_heard(report, GREETING_S)


# --- trouble in the middle of a call ------------------------------------------------------------


def test_an_error_event_mid_call_is_logged_and_counted_and_the_call_goes_on() -> None:
    async def erring(session: ModelSession) -> None:
        await session.configure()
        await session.speak(GREETING, GREETING_TEXT)
        await session.error("conversation_already_has_active_response", "Conversation already has an active response")
        await session.listen(QUESTION_TEXT)
        await session.speak(ANSWER, ANSWER_TEXT)

    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]], str]:
        async with ModelServer(GA_WIRE, [erring]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings_for("openai", server)) as (url, app):
                    report = await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                    assert await settle(lambda: not app.state.bridge.active_calls)
                    metrics = await metrics_text(url)
        return report, server, logs, metrics

    report, server, logs, metrics = run(scenario())
    assert server.errors == [] and len(server.sessions) == 1
    assert report.ended_by == "caller"
    assert_heard(report, GREETING_S + ANSWER_S)
    (error,) = events_named(logs, "upstream.error")
    assert error["log_level"] == "warning" and error["code"] == "conversation_already_has_active_response"
    assert error["call_sid"] == report.call_sid
    assert 'voice_bridge_upstream_errors_total{code="conversation_already_has_active_response"} 1.0' in metrics
    assert [e["reason"] for e in events_named(logs, "call.ended")] == ["caller_hangup"]


def _lost_after_the_answer(how: str):  # noqa: ANN202
    """Session 1: greeting, the caller's question, the answer; once the caller has heard it all,
    the session is lost (`drop`: the connection just goes; `expire`: session_expired, then close)."""

    async def script(session: ModelSession) -> None:
        await greet_answer(session)
        await session.wait_heard(ANSWER_S + 0.3)
        if how == "drop":
            await session.drop()
        else:
            await session.error("session_expired", "Your session hit the maximum duration of 60 minutes.")
            await session.ws.close(1000, "session expired")

    return script


async def _second_session(session: ModelSession) -> None:
    """Session 2 (after the reconnect): configured and seeded by the bridge; answers the next question."""
    await session.configure(greet=False)
    await session.listen(SECOND_TEXT)
    await session.speak(GOODBYE, GOODBYE_TEXT)


RECONNECTS = [("voicelive-key", "drop"), ("azure-openai-key", "drop"), ("openai", "drop"), ("voicelive-key", "expire")]


@pytest.mark.parametrize(("dialect", "how"), RECONNECTS, ids=[f"{d}-{h}" for d, h in RECONNECTS])
def test_a_lost_session_is_replaced_seeded_with_what_was_heard(dialect: str, how: str) -> None:
    wire = wire_of(dialect)

    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]]]:
        async with ModelServer(wire, [_lost_after_the_answer(how), _second_session]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings_for(dialect, server)) as (url, app):
                    report = await place_call(url, TWO_QUESTIONS, auth_token=AUTH_TOKEN, speed=SPEED)
                    assert await settle(lambda: not app.state.bridge.active_calls)
        return report, server, logs

    report, server, logs = run(scenario())
    assert server.errors == []
    assert len(server.handshakes) == 2 and len(server.sessions) == 2
    assert_handshakes(server, dialect)
    first, second = server.sessions
    # The new session: configured like the first, then told the conversation so far, before any audio:
    # the instructions carry the call so far (a summary of older turns), the last turns verbatim.
    before_audio = second.kinds()[: second.kinds().index("input_audio_buffer.append")]
    assert before_audio == ["session.update"] * 2 + ["conversation.item.create"] * 3
    assert second.received[0] == first.received[0]  # the same session.update
    assert "continuing it in a new session" in second.received[1]["session"]["instructions"]
    assert seeded_turns(second) == [("assistant", GREETING_TEXT), ("user", QUESTION_TEXT), ("assistant", ANSWER_TEXT)]
    assert "response.create" not in second.kinds()  # no second greeting
    assert_valid_client_events(server)
    assert_valid_server_events(server)
    # The caller noticed nothing: greeting, answer, and the answer to the next question, in full.
    assert report.ended_by == "caller" and report.clears == 0
    assert_heard(report, GREETING_S + ANSWER_S + GOODBYE_S)
    (reconnecting,) = events_named(logs, "upstream.reconnecting")
    assert reconnecting["reason"] == ("dropped" if how == "drop" else "session_expired")
    (reconnected,) = events_named(logs, "upstream.reconnected")
    assert reconnected["seeded_turns"] == 3 and reconnected["call_sid"] == report.call_sid
    assert [e["reason"] for e in events_named(logs, "call.ended")] == ["caller_hangup"]


def test_a_dropped_session_whose_replacement_is_refused_takes_the_fallback_path() -> None:
    async def greet_then_drop(session: ModelSession) -> None:
        await greet_only(session)
        await session.wait_heard(GREETING_S + 0.3)
        await session.drop()

    metrics: list[str] = []

    async def scenario() -> tuple[CallReport, ModelServer, list[dict[str, Any]]]:
        # a refusal of the credentials will not pass: no further replacement is tried
        async with ModelServer(GA_WIRE, [greet_then_drop], statuses=[None, 403]) as server:
            report, logs = await _call_with_fallback(server, metrics)
        return report, server, logs

    report, server, logs = run(scenario())
    assert 'voice_bridge_session_replacements_total{result="refused"} 1.0' in metrics[0]
    assert 'voice_bridge_session_replacements_total{result="ok"}' not in metrics[0]
    assert server.errors == []
    assert len(server.handshakes) == 2 and len(server.sessions) == 1
    assert_heard(report, GREETING_S)
    # The bridge ends the stream itself (a normal close; Twilio does not look at the code) and
    # Twilio's <Redirect> gets the apology and the fallback number.
    assert report.ended_by == "bridge" and report.close_code == 1000
    assert report.after_stream_verbs == ["Say", "Dial"] and report.dialed == FALLBACK
    (failed,) = events_named(logs, "upstream.reconnect_failed")
    assert failed["error"] == "UpstreamUnavailable" and "refused the credentials" in failed["detail"]
    assert [e["reason"] for e in events_named(logs, "call.ended")] == ["upstream_failed"]


def test_after_a_reconnect_a_barge_in_truncates_nothing_of_the_old_session() -> None:
    # The new session's first response has no audio yet when the caller talks again: there is
    # nothing to truncate, and above all not the old session's last item, which it never had.
    async def interrupted_before_its_audio(session: ModelSession) -> None:
        """The new session answers the next question, and the caller talks again before any audio."""
        await session.configure(greet=False)
        await session.listen(SECOND_TEXT)
        response_id = session.new_id("resp")
        await session.send(
            "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"}
        )
        await session.send(
            "input_audio_buffer.speech_started", audio_start_ms=int(session.appended_ms), item_id=session.new_id("item")
        )
        await session.expect("response.cancel")
        await session.wait_heard(0.3)  # whatever else the bridge does about it
        await session.send(
            "response.done", response={"id": response_id, "object": "realtime.response", "status": "cancelled"}
        )
        await session.ws.close(1000)

    async def scenario() -> tuple[CallReport, ModelServer]:
        async with ModelServer(GA_WIRE, [_lost_after_the_answer("drop"), interrupted_before_its_audio]) as server:
            async with running_bridge(speed=SPEED, **settings_for("openai", server)) as (url, _):
                report = await place_call(url, TWO_QUESTIONS, auth_token=AUTH_TOKEN, speed=SPEED)
        return report, server

    report, server = run(scenario())
    assert server.errors == [] and len(server.sessions) == 2
    first, second = server.sessions
    old_items = {event["item_id"] for event in first.sent if "item_id" in event}
    truncated = [event["item_id"] for event in second.events("conversation.item.truncate")]
    assert [item for item in truncated if item in old_items] == [], (
        "the new session was asked to truncate an item it never had"
    )
    assert len(second.events("response.cancel")) == 1
    assert_heard(report, GREETING_S + ANSWER_S)


# --- pre-warm -----------------------------------------------------------------------------------

TWILIO_STREAM_SETUP_S = 0.3  # Twilio opens the stream a moment after it reads the TwiML


@pytest.mark.parametrize("prewarm", [True, False], ids=["prewarm", "no-prewarm"])
def test_prewarm_opens_and_configures_the_upstream_before_the_stream_starts(
    prewarm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[float] = []
    connect = simulator.connect

    async def twilio_connect(*args: Any, **kwargs: Any) -> Any:
        # The simulator opens the stream as soon as it has the TwiML; Twilio takes a moment.
        await asyncio.sleep(TWILIO_STREAM_SETUP_S)
        opened.append(time.monotonic())
        return await connect(*args, **kwargs)

    monkeypatch.setattr(simulator, "connect", twilio_connect)

    async def scenario() -> tuple[CallReport, ModelServer]:
        async with ModelServer(GA_WIRE, [greet_only]) as server:
            async with running_bridge(speed=SPEED, prewarm=prewarm, **settings_for("openai", server)) as (url, _):
                report = await place_call(url, LISTEN_ONLY, auth_token=AUTH_TOKEN, speed=SPEED)
        return report, server

    report, server = run(scenario())
    assert server.errors == []
    (stream_opened,) = opened
    (session,) = server.sessions  # one session, claimed by the stream
    if prewarm:
        # Connected, configured and asked for the greeting while Twilio was still setting up.
        assert server.handshakes[0].at < stream_opened
        assert session.first_at("session.update") < stream_opened
        assert session.first_at("response.create") < stream_opened
    else:
        assert server.handshakes[0].at > stream_opened
    assert session.kinds()[:2] == ["session.update", "response.create"]
    assert report.ended_by == "caller"
    assert_heard(report, GREETING_S)


def test_an_unclaimed_prewarmed_session_is_closed_after_the_unclaimed_timeout() -> None:
    speed = 30.0  # the app's clock: the 15 s unclaimed timeout passes in 0.5 s
    sweep_s, client_close_s = 1.0, 2.0  # real time: Prewarm.sweep_forever's period, the client's close timeout

    async def scenario() -> tuple[ModelServer, list[dict[str, Any]], float, str, int]:
        async with ModelServer(GA_WIRE, [greet_only]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=speed, **settings_for("openai", server)) as (url, app):
                    posted = time.monotonic()
                    call_sid = await post_voice(url)  # Twilio never opens the stream (the caller hung up)
                    deadline = 15.0 / speed + sweep_s + client_close_s + 0.5
                    await settle(lambda: bool(server.sessions) and server.sessions[0].closed_at is not None, deadline)
                    left = len(app.state.bridge.prewarm)
        return server, logs, posted, call_sid, left

    server, logs, posted, call_sid, left = run(scenario())
    assert server.errors == []
    (session,) = server.sessions
    assert session.kinds()[:2] == ["session.update", "response.create"]  # it was pre-warmed in full
    assert left == 0 and session.closed_at is not None, "the unclaimed session is still open"
    # Not before the unclaimed timeout; at the latest at the sweep after it, plus the time to close a
    # connection whose greeting nobody read (the client then gives up on the close handshake).
    open_s = session.closed_at - posted
    assert 15.0 <= open_s * speed, open_s
    assert open_s <= 15.0 / speed + sweep_s + client_close_s + 0.5, open_s
    (entry,) = events_named(logs, "prewarm.unclaimed")
    assert entry["call_sid"] == call_sid
