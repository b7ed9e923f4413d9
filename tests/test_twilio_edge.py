"""The Twilio edge under bad input, stream tokens, admission control and the after-stream TwiML."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import AUTH_TOKEN, caller_clip, capture_logs, open_signed_stream, run, running_bridge, settle, until_closed
from scripted_upstream import ScriptedSession, ScriptedUpstream
from twilio_api import FakeTwilioApi

from bridge import media_streams as ms
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.flood_guard import FloodGuard

SILENCE = b"\xff" * 160
UNREACHABLE = "ws://127.0.0.1:9/v1/realtime"  # nothing listens on the discard port






# --- pure parts ---------------------------------------------------------------------------------


def test_flood_guard_allows_catch_up_but_not_a_flood() -> None:
    guard = FloodGuard(max_ahead_ms=2000)
    assert all(guard.admit(20.0, now=i * 0.02) for i in range(500))  # real time
    assert all(guard.admit(20.0, now=10.0) for _ in range(100))  # a 2 s burst after a stall
    assert not guard.admit(20.0, now=10.0)


# --- bad input over a real socket, with a healthy call beside it --------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Any, str, dict[str, str]], Awaitable[None]]  # (ws, stream_sid, params)
    close_code: int | None  # None: the stream must stay open (the case is ignored)
    reason: str
    reaches_upstream: bool = True


def _start(stream_sid: str, params: dict[str, str], **overrides: Any) -> str:
    message = json.loads(ms.start_message(stream_sid, params["CallSid"], "AC" + "0" * 32, params))
    message["start"].update(overrides)
    return json.dumps(message)


def _media(stream_sid: str, payload: str | None = None, chunk: object = "1") -> str:
    media: dict[str, Any] = {"track": "inbound", "chunk": chunk, "timestamp": "0"}
    if payload is not None:
        media["payload"] = payload
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": media})


def _started(*frames: Callable[[str, dict[str, str]], str | bytes]) -> Callable[[Any, str, dict[str, str]], Awaitable[None]]:
    async def send(ws: Any, sid: str, params: dict[str, str]) -> None:
        await ws.send(ms.connected_message())
        await ws.send(_start(sid, params))
        for frame in frames:
            await ws.send(frame(sid, params))

    return send


def _raw(*frames: Callable[[str, dict[str, str]], str | bytes]) -> Callable[[Any, str, dict[str, str]], Awaitable[None]]:
    async def send(ws: Any, sid: str, params: dict[str, str]) -> None:
        for frame in frames:
            await ws.send(frame(sid, params))

    return send


async def _flood(ws: Any, sid: str, params: dict[str, str]) -> None:
    await ws.send(ms.connected_message())
    await ws.send(_start(sid, params))
    payload = base64.b64encode(SILENCE).decode()
    for i in range(400):  # 8 s of audio at once
        try:
            await ws.send(_media(sid, payload, str(i + 1)))
        except Exception:  # noqa: BLE001 - the bridge may close mid-flood; that is the point
            return


async def _reuse_token(ws: Any, sid: str, params: dict[str, str]) -> None:
    await ws.send(_start(sid, params))  # first use: accepted
    await asyncio.sleep(0.2)


def _token(value: str | None) -> Callable[[str, dict[str, str]], str]:
    def frame(sid: str, params: dict[str, str]) -> str:
        custom = {k: v for k, v in params.items() if k != "StreamToken"}
        if value is not None:
            custom["StreamToken"] = value
        return _start(sid, params, customParameters=custom)

    return frame


CASES = [
    Case("non-JSON text", _started(lambda s, p: "hello?"), 1007, "invalid_json"),
    Case("binary frame", _started(lambda s, p: b"\x00\x01\x02"), 1003, "binary_frame"),
    Case("frame over 64 KiB", _started(lambda s, p: "x" * (65 * 1024)), 1009, "frame_too_large"),
    Case("unknown event", _started(lambda s, p: json.dumps({"event": "surprise", "streamSid": s})), None, "unknown_event"),
    Case("media before start", _raw(lambda s, p: ms.connected_message(), lambda s, p: _media(s, "//8=")), 1008, "event_before_start", False),
    Case("wrong streamSid", _started(lambda s, p: _media("MZ" + "9" * 32, "//8=")), 1008, "wrong_stream_sid"),
    Case("invalid base64", _started(lambda s, p: _media(s, "***")), 1007, "invalid_base64"),
    Case("second start", _started(lambda s, p: _start(s, p)), 1008, "second_start"),
    Case("wrong media format", _raw(lambda s, p: _start(s, p, mediaFormat={"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1})), 1008, "unsupported_media_format", False),
    Case("missing field", _started(lambda s, p: _media(s, None)), 1007, "invalid_field"),
    Case("mistyped field", _started(lambda s, p: _media(s, "//8=", chunk=["1"])), 1007, "invalid_field"),
    Case("mistyped start", _raw(lambda s, p: _start(s, p, customParameters=["x"])), 1007, "invalid_field", False),
    Case("flood of frames", _flood, 1008, "flood"),
    Case("no stream token", _raw(_token(None)), 1008, "missing_stream_token", False),
    Case("forged stream token", _raw(_token("9999999999.00000000000000a1." + "0" * 64)), 1008, "invalid_stream_token", False),
    Case("stream token expiry not ASCII digits", _raw(_token("²." + "a" * 16 + "." + "0" * 64)), 1008, "malformed_stream_token", False),
    Case("stream token expiry of 5000 digits", _raw(_token("9" * 5000 + ".a." + "0" * 64)), 1008, "malformed_stream_token", False),
]


def test_bad_input_table_while_a_healthy_call_runs() -> None:
    async def scenario() -> None:
        async with running_bridge() as (url, app):
            agent = app.state.local_agent
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=0.8)
            with capture_logs() as logs:
                healthy = asyncio.create_task(place_call(url, plan, auth_token=AUTH_TOKEN))
                while agent.sessions_opened < 1:
                    await asyncio.sleep(0.01)
                outcomes = {}
                for case in CASES:
                    ws, call_sid, params = await open_signed_stream(url)
                    sid = "MZ" + call_sid[2:]
                    mark, opened_before = len(logs), agent.sessions_opened
                    await case.send(ws, sid, params)
                    if case.close_code is None:
                        await asyncio.sleep(0.3)
                        assert ws.close_code is None, case.name  # still open: ignored, not fatal
                        await ws.send(ms.stop_message(sid, call_sid, "AC", 9))
                    await until_closed(ws)
                    events = [e for e in logs[mark:] if e.get("reason") == case.reason or e["event"] == f"twilio.{case.reason}_ignored"]
                    outcomes[case.name] = (ws.close_code, bool(events))
                    if not case.reaches_upstream:
                        assert agent.sessions_opened == opened_before, f"{case.name}: the upstream was contacted"
                # Reuse: a token already redeemed by a stream is refused the second time.
                ws, call_sid, params = await open_signed_stream(url)
                await ws.send(_start("MZ" + call_sid[2:], params))
                await ws.send(ms.stop_message("MZ" + call_sid[2:], call_sid, "AC", 3))
                await until_closed(ws)
                ws2 = await open_signed_stream(url)
                await ws2[0].send(_start("MZ1" + call_sid[3:], params))
                await until_closed(ws2[0])
                outcomes["reused stream token"] = (ws2[0].close_code, any(e.get("reason") == "reused_stream_token" for e in logs))
                await ws2[0].close()
                report = await healthy
            expected = {case.name: (case.close_code or 1000, True) for case in CASES}
            expected["reused stream token"] = (1008, True)
            assert outcomes == expected
            # The healthy call went on undisturbed, start to finish.
            assert report.ended_by == "caller" and report.agent_audio_s > 6.5, report.summary()
            assert await settle(lambda: not app.state.bridge.active_calls)

    run(scenario(), timeout=120)


# --- admission and the after-stream TwiML --------------------------------------------------------


def test_busy_when_full_and_admitted_again_after_the_call() -> None:
    async def scenario() -> None:
        async with running_bridge(speed=4.0, max_calls=1) as (url, app):
            first = await open_signed_stream(url)  # holds the only slot
            report = await place_call(url, CallerPlan(), auth_token=AUTH_TOKEN, speed=4.0)
            assert report.ended_by == "webhook" and report.webhook_verbs == ["Say", "Hangup"]
            ws, call_sid, params = first
            await ws.send(_start("MZ" + call_sid[2:], params))
            await ws.send(ms.stop_message("MZ" + call_sid[2:], call_sid, "AC", 3))
            await until_closed(ws)
            await asyncio.sleep(0.1)
            report = await place_call(url, CallerPlan(max_call_s=2), auth_token=AUTH_TOKEN, speed=4.0)
            assert report.webhook_verbs == ["Connect", "Redirect"] and report.agent_audio_s > 0

    run(scenario())


def test_upstream_unreachable_apologises_and_dials_the_fallback_number() -> None:
    async def scenario() -> None:
        async with running_bridge(speed=4.0, upstream_url=UNREACHABLE, fallback_number="+15550123456") as (url, _):
            with capture_logs() as logs:
                report = await place_call(url, CallerPlan(max_call_s=40), auth_token=AUTH_TOKEN, speed=4.0)
        assert report.ended_by == "bridge" and report.close_code == 1011
        assert report.after_stream_verbs == ["Say", "Dial"] and report.dialed == "+15550123456"
        assert any(e["event"] == "upstream.connect_failed" for e in logs)

    run(scenario())


def test_upstream_unreachable_without_fallback_apologises_and_hangs_up() -> None:
    async def scenario() -> None:
        async with running_bridge(speed=4.0, upstream_url=UNREACHABLE) as (url, _):
            report = await place_call(url, CallerPlan(max_call_s=40), auth_token=AUTH_TOKEN, speed=4.0)
        assert report.after_stream_verbs == ["Say", "Hangup"]

    run(scenario())


async def _drop_mid_call(session: ScriptedSession) -> None:
    await session.send("session.created", session={})
    await session.expect("response.create")
    await session.ws.transport.abort()


def test_upstream_dropping_mid_call_takes_the_fallback_path() -> None:
    async def scenario() -> None:
        async with ScriptedUpstream(_drop_mid_call) as upstream:
            # every session drops: the call's one replacement, then the fallback
            async with running_bridge(speed=4.0, upstream_url=upstream.url, fallback_number="+15550123456", max_session_replacements=1) as (url, _):
                report = await place_call(url, CallerPlan(max_call_s=40), auth_token=AUTH_TOKEN, speed=4.0)
        assert report.ended_by == "bridge"
        assert report.after_stream_verbs == ["Say", "Dial"]

    run(scenario())


async def _call_with_twilio_rest(api: FakeTwilioApi, upstream_url: str) -> tuple[Any, list[dict[str, Any]]]:
    """A call whose model fails, on a bridge with Twilio REST (at `api`): the report and the logs."""
    async with running_bridge(
        speed=4.0, upstream_url=upstream_url, fallback_number="+15550123456", twilio_client=api.client(asynchronous=True),
        max_session_replacements=1,  # every session drops: one replacement, then the fallback
    ) as (url, app):
        with capture_logs() as logs:
            report = await place_call(url, CallerPlan(max_call_s=40), auth_token=AUTH_TOKEN, speed=4.0)
        await app.state.bridge.call_control._client.http_client.close()
    return report, logs


@pytest.mark.parametrize("failure", ["unreachable", "dropped"])
def test_with_twilio_rest_the_apology_is_pushed_before_the_stream_closes(failure: str) -> None:
    """Any replica can take `/voice/after-stream`: with REST the apology does not depend on it."""
    account = "AC" + "c" * 32
    with FakeTwilioApi(account) as api:

        async def scenario() -> Any:
            async with ScriptedUpstream(_drop_mid_call) as upstream:
                return await _call_with_twilio_rest(api, UNREACHABLE if failure == "unreachable" else upstream.url)

        report, logs = run(scenario(), timeout=60)
        (request,) = api.requests
    assert request.path == f"/2010-04-01/Accounts/{account}/Calls/{report.call_sid}.json"
    assert "<Say>" in request.form["Twiml"] and "<Dial>+15550123456</Dial>" in request.form["Twiml"]
    assert report.ended_by == "bridge"
    # The simulator does not act on REST updates and still follows the <Redirect>, which Twilio
    # requests only once the stream is closed: the push came first, while the stream was open.
    fallbacks = [e for e in logs if e["event"] == "call.fallback"]
    assert [e["via"] for e in fallbacks] == ["rest", "after_stream"] and fallbacks[0]["dial"] is True


def test_when_twilio_rest_fails_the_after_stream_twiml_still_apologises() -> None:
    api = FakeTwilioApi("AC" + "d" * 32)
    with api:
        pass  # the API is gone before the call: every request fails

    report, logs = run(_call_with_twilio_rest(api, UNREACHABLE), timeout=60)
    failed = next(e for e in logs if e["event"] == "call.control_failed")
    assert failed["action"] == "apologise"
    assert report.after_stream_verbs == ["Say", "Dial"] and report.dialed == "+15550123456"
    assert [e.get("via") for e in logs if e["event"] == "call.fallback"] == ["after_stream"]


def test_after_a_normal_end_by_the_agent_twilio_hangs_up() -> None:
    async def hang_up(session: ScriptedSession) -> None:
        await session.send("session.created", session={})
        await session.expect("response.create")
        await session.ws.close(1000)

    async def scenario() -> None:
        async with ScriptedUpstream(hang_up) as upstream:
            async with running_bridge(speed=4.0, upstream_url=upstream.url, fallback_number="+15550123456") as (url, _):
                report = await place_call(url, CallerPlan(max_call_s=40), auth_token=AUTH_TOKEN, speed=4.0)
        assert report.after_stream_verbs == ["Hangup"]

    run(scenario())


def test_the_media_stream_declines_permessage_deflate() -> None:
    """μ-law does not compress: a peer offering deflate gets a plain socket (no CPU spent on it)."""

    async def scenario() -> list[Any]:
        async with running_bridge() as (url, _):
            ws, _, _ = await open_signed_stream(url)  # websockets offers permessage-deflate by default
            try:
                assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions") or "")
                return list(ws.protocol.extensions)
            finally:
                await ws.close()

    assert run(scenario()) == []
