"""What operators rely on: /metrics after real calls, and draining on SIGTERM with calls in flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from conftest import AUDIO, AUTH_TOKEN, caller_clip, read_wav, run, running_bridge

from bridge.call import EndReason
from bridge.call_outcomes import CallOutcomes, Outcome
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from twiml.signatures import TwilioSigner

BIN = Path(sys.executable).parent / "voice-bridge"


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_metrics_after_a_call() -> None:
    async def scenario() -> str:
        async with running_bridge(speed=2.0) as (url, _):
            plan = CallerPlan(utterances=(caller_clip("caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
            await place_call(url, plan, auth_token=AUTH_TOKEN, speed=2.0)
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{url}/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            return response.text

    text = run(scenario())
    assert _metric(text, "voice_bridge_calls_total", '{outcome="caller_hangup"}') == 1
    assert _metric(text, "voice_bridge_active_calls") == 0
    assert _metric(text, "voice_bridge_webhooks_total", '{result="stream",route="/voice"}') == 1
    assert _metric(text, "voice_bridge_first_greeting_audio_seconds_count") == 1
    assert _metric(text, "voice_bridge_upstream_connect_seconds_count") == 1
    assert _metric(text, "voice_bridge_call_duration_seconds_count") == 1
    for stage in ("model_audio", "media_sent", "heard"):
        assert _metric(text, "voice_bridge_turn_latency_seconds_count", f'{{stage="{stage}"}}') == 1
    assert _metric(text, "voice_bridge_frames_total", '{direction="in"}') > 100
    assert _metric(text, "voice_bridge_event_loop_lag_seconds_count") > 10
    for direction in ("caller_to_model", "model_to_caller"):
        assert _metric(text, "voice_bridge_relay_seconds_count", f'{{direction="{direction}"}}') > 10
    assert _metric(text, "voice_bridge_frames_total", '{direction="out"}') > 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_drains_calls_in_flight_then_exits_0() -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_"))}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_DRAIN_SECONDS="1", VOICE_BRIDGE_LOG_FORMAT="json")
    server = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
                await asyncio.sleep(0.1)
            # A caller who just listens: the call lasts until the bridge ends it.
            call = asyncio.create_task(place_call(url, CallerPlan(hangup_after_s=60, max_call_s=60), auth_token=AUTH_TOKEN))
            await asyncio.sleep(1.5)
            server.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            form = {"CallSid": "CA" + "7" * 32, "From": "+1555", "To": "+1666"}
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": TwilioSigner(AUTH_TOKEN).sign(f"{url}/voice", form),
            }
            busy = await http.post("/voice", content=urllib.parse.urlencode(form), headers=headers)
            assert "<Hangup" in busy.text and "<Connect" not in busy.text
            report = await call
        # The call was ended by the bridge with a goodbye the caller heard in full.
        assert report.ended_by == "bridge" and report.close_code == 1000
        goodbye, rate = read_wav(AUDIO / "agent_goodbye.wav")
        assert report.agent_audio_s > 1.0 + len(goodbye) / rate - 0.1, report.summary()
        assert report.after_stream_verbs == ["Hangup"]

    try:
        run(scenario(), timeout=60)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
    output = server.stdout.read() if server.stdout else ""
    assert '"event": "bridge.draining"' in output and '"event": "call.saying_goodbye"' in output
    # The process stayed up until Twilio's after-stream request for the drained call was answered.
    drained = next(json.loads(line) for line in output.splitlines() if '"event": "bridge.drained"' in line)
    assert drained["calls_left"] == 0 and drained["redirects_unanswered"] == 0


def test_outcomes_awaiting_twilio_redirect_are_those_ended_since_with_the_caller_on_the_line() -> None:
    outcomes = CallOutcomes(keep_s=300.0)
    outcomes.record("CA-before", Outcome(EndReason.DRAINED), now=1.0)
    outcomes.record("CA-drained", Outcome(EndReason.DRAINED), now=10.0)
    outcomes.record("CA-hung-up", Outcome(EndReason.CALLER_HANGUP), now=11.0)  # Twilio asks nothing
    assert outcomes.awaiting_redirect(since=5.0, now=12.0) == 1
    assert outcomes.take("CA-drained", now=12.5) is not None
    assert outcomes.awaiting_redirect(since=5.0, now=13.0) == 0


def _serve_with_broken_output(port: int, streams: str) -> subprocess.Popen[bytes]:
    """`voice-bridge serve` whose stdout (and stderr, with streams="both") is a pipe nobody reads any more."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_"))}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_DRAIN_SECONDS="2", VOICE_BRIDGE_LOG_FORMAT="json")
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        return subprocess.Popen(
            [str(BIN), "serve", "--port", str(port)],
            env=env,
            stdout=write_end,
            stderr=write_end if streams == "both" else subprocess.DEVNULL,
        )
    finally:
        os.close(write_end)


def _wait_ready(url: str, server: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
        time.sleep(0.1)


@pytest.mark.parametrize("streams", ["stdout", "both"])
def test_sigterm_drains_and_exits_even_when_the_output_pipe_is_broken(streams: str) -> None:
    port = _free_port()
    server = _serve_with_broken_output(port, streams)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, server)
        # Logging has failed since the first line; the server runs on and counts what it lost.
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        lost = _metric(metrics, "voice_bridge_dropped_log_lines")
        assert lost >= 1 if streams == "both" else lost == 0
        server.send_signal(signal.SIGTERM)
        # No call in flight: the drain ends at once; its bound is VOICE_BRIDGE_DRAIN_SECONDS (2 s) plus
        # the after-stream grace, well inside 10 s. SIGTERM ignored would time out here.
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
