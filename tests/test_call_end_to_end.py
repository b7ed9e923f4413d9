"""Whole calls over real loopback sockets: phone simulator → bridge (uvicorn) → upstream."""

from __future__ import annotations

import asyncio
import base64
import re

import httpx
import numpy as np
import pytest
import soxr
from conftest import AUDIO, AUTH_TOKEN, caller_clip, capture_logs, read_wav, run, running_bridge, settle
from scripted_upstream import ScriptedSession, ScriptedUpstream

from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from voice_codecs import ulaw_decode, ulaw_encode




def _clip_seconds(name: str) -> float:
    samples, rate = read_wav(AUDIO / name)
    return len(samples) / rate


def _snr_db(reference: np.ndarray, heard: np.ndarray, max_lag: int = 40) -> float:
    """Best SNR of `heard` against `reference` over small alignment lags."""
    best = -np.inf
    n = len(reference)
    for lag in range(0, max_lag):
        segment = heard[lag : lag + n].astype(np.float64)
        if len(segment) < n:
            break
        ref = reference.astype(np.float64)
        noise = np.sum((segment - ref) ** 2)
        best = max(best, 10 * np.log10(np.sum(ref**2) / max(noise, 1e-9)))
    return float(best)


def test_whole_call_greeting_question_answer_caller_hangs_up() -> None:
    async def scenario() -> None:
        async with running_bridge(speed=2.0) as (url, app):
            state = app.state.bridge
            before = asyncio.all_tasks()
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
            with capture_logs() as logs:
                report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
                # Both sockets close and every task of the call ends, within a second.
                assert await settle(lambda: not state.active_calls)
                assert await settle(lambda: app.state.local_agent.open_sessions == 0)
                assert await settle(lambda: not (asyncio.all_tasks() - before - {asyncio.current_task()}))

            assert report.ended_by == "caller"
            expected = _clip_seconds("agent_greeting.wav") + _clip_seconds("agent_answer_order.wav")
            assert abs(report.agent_audio_s - expected) < 0.1, report.summary()
            assert report.first_agent_audio_s is not None and report.first_agent_audio_s < 1.0
            assert report.marks_echoed > 10 and report.clears == 0

            # What the caller heard first is the greeting itself, at telephone quality.
            greeting, rate = read_wav(AUDIO / "agent_greeting.wav")
            reference = ulaw_decode(ulaw_encode(soxr.resample(greeting, rate, 8000)))
            heard = ulaw_decode(bytes(report.agent_audio))
            start = int(report.first_agent_audio_s * 8000)
            assert _snr_db(reference[400:-400], heard[start + 400 - 20 :]) > 20

            events = [entry["event"] for entry in logs]
            assert "call.started" in events
            ended = [entry for entry in logs if entry["event"] == "call.ended"]
            assert ended and ended[0]["reason"] == "caller_hangup"
            assert ended[0]["call_sid"] == report.call_sid
            assert not [e for e in logs if e["log_level"] in ("warning", "error")]

    run(scenario())


def test_call_ended_by_the_agent_side_closes_the_twilio_stream() -> None:
    greeting, _ = read_wav(AUDIO / "agent_greeting.wav")

    async def greet_then_hang_up(session: ScriptedSession) -> None:
        await session.greet(greeting[: 24000 * 2].tobytes())
        await session.ws.close(1000, "done")

    async def scenario() -> None:
        async with ScriptedUpstream(greet_then_hang_up) as upstream:
            async with running_bridge(speed=2.0, upstream_url=upstream.url) as (url, app):
                before = asyncio.all_tasks()
                with capture_logs() as logs:
                    report = await place_call(url, CallerPlan(max_call_s=20), auth_token=AUTH_TOKEN, speed=2.0)
                    assert await settle(lambda: not app.state.bridge.active_calls)
                    assert await settle(lambda: not (asyncio.all_tasks() - before - {asyncio.current_task()}))
        assert report.ended_by == "bridge"
        assert report.close_code == 1000
        assert report.call_s < 5.0
        ended = [entry for entry in logs if entry["event"] == "call.ended"]
        assert ended and ended[0]["reason"] == "upstream_closed"
        # The session was configured before anything else was asked of the model.
        kinds = [event["type"] for event in upstream.sessions[0].received]
        assert kinds[:2] == ["session.update", "response.create"]

    run(scenario())


def test_caller_barges_in_and_the_model_is_told_what_was_heard() -> None:
    async def scenario() -> None:
        async with running_bridge() as (url, app):
            plan = CallerPlan(
                utterances=(caller_clip("caller_question.wav"), caller_clip("caller_interrupt.wav")),
                barge_in_after_s=1.0,
                hangup_after_s=0.5,
            )
            with capture_logs() as logs:
                report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=1.0)
        # Greeting and first answer were both cut short; Twilio's buffer was cleared each time.
        assert report.clears == 2, report.summary()
        barge_ins = [e for e in logs if e["event"] == "caller.barge_in"]
        assert len(barge_ins) == 2
        for entry in barge_ins:
            # The caller heard about 1 s plus the agent's detection delay, never the whole clip.
            assert 900 <= entry["audio_end_ms"] <= 1600, entry
        truncated = [e for e in logs if e["event"] == "model.item_truncated"]
        assert [e["audio_end_ms"] for e in truncated] == [e["audio_end_ms"] for e in barge_ins]
        assert not [e for e in logs if e["event"] == "upstream.error" and e["code"] != "response_cancel_not_active"]

    run(scenario(), timeout=90)


def test_g711_passthrough_call() -> None:
    async def scenario() -> None:
        async with running_bridge(speed=2.0, audio="g711") as (url, app):
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
            report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
        expected = _clip_seconds("agent_greeting.wav") + _clip_seconds("agent_answer_order.wav")
        assert report.ended_by == "caller"
        assert abs(report.agent_audio_s - expected) < 0.1, report.summary()

    run(scenario())


def test_caller_audio_in_100_ms_appends() -> None:
    """VOICE_BRIDGE_APPEND_MS=100: five Twilio frames per append, none lost, the call unchanged."""
    greeting, _ = read_wav(AUDIO / "agent_greeting.wav")

    async def greet_then_listen(session: ScriptedSession) -> None:
        await session.greet(greeting[:24000].tobytes())  # half a second
        await session.drain()

    async def scenario() -> tuple[list[bytes], str]:
        async with ScriptedUpstream(greet_then_listen) as upstream:
            async with running_bridge(speed=2.0, upstream_url=upstream.url, append_ms=100) as (url, app):
                plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.3, max_call_s=6.0)
                report = await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
                assert report.ended_by == "caller", report.summary()
                assert await settle(lambda: not app.state.bridge.active_calls)
                async with httpx.AsyncClient() as http:
                    metrics = (await http.get(f"{url}/metrics")).text
        received = upstream.sessions[0].received
        return [base64.b64decode(e["audio"]) for e in received if e["type"] == "input_audio_buffer.append"], metrics

    appends, metrics = run(scenario())
    # 100 ms of 24 kHz PCM16 each; the first is shorter by the resampler's constant look-ahead.
    assert len(appends) > 40
    assert all(len(audio) == 4800 for audio in appends[1:])
    assert len(appends[0]) == 4800 - 120  # 2.5 ms of look-ahead
    frames = float(re.search(r'^voice_bridge_frames_total\{direction="in"\} (\S+)$', metrics, re.MULTILINE).group(1))
    relayed = float(re.search(r'^voice_bridge_relay_seconds_count\{direction="caller_to_model"\} (\S+)$', metrics, re.MULTILINE).group(1))
    assert relayed == len(appends)  # one relay sample per append: the frame that completed it
    # Every frame was sent, except the last batch the caller hung up on (fewer than five frames).
    sent_ms = sum(len(audio) for audio in appends) / 48
    assert sent_ms == pytest.approx(len(appends) * 100, abs=3)  # only the look-ahead is missing
    assert 0 <= frames * 20 - sent_ms < 5 * 20 + 3
