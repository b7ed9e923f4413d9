"""/readyz follows whether a call can reach the model (issue 13, class 9): the pure state machine,
then the real app against an upstream that is down, comes up, and an Entra credential that fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from azure.core.exceptions import ClientAuthenticationError
from conftest import AUTH_TOKEN, run, running_bridge, settle
from controlled_credential import ControlledCredential

from bridge.devtools.agent import LocalAgent
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.readiness import Phase, ProbePolicy, UpstreamReadiness

BIN = Path(sys.executable).parent / "voice-bridge"


# --- the state machine, without sockets ------------------------------------------------------------


def test_not_ready_until_the_first_probe_answers() -> None:
    state = UpstreamReadiness(now=0.0)
    assert not state.ready and state.phase is Phase.PROBING
    assert state.seconds_until_probe(0.0) == 0.0
    started = state.probe_started(0.0)
    assert state.seconds_until_probe(0.1) is None  # one probe at a time
    assert state.body(0.1) == {"status": "upstream_probing"}
    change = state.probe_finished(started, None, now=0.2)
    assert change is not None and change.phase is Phase.READY and state.ready
    assert state.seconds_until_probe(100.0) is None  # ready: nothing is probed


def test_failures_back_off_doubling_to_the_cap_and_recover_on_success() -> None:
    state = UpstreamReadiness(now=0.0, policy=ProbePolicy(first_retry_s=1.0, max_retry_s=8.0))
    now, waits = 0.0, []
    for _ in range(6):
        started = state.probe_started(now)
        state.probe_finished(started, "unreachable", now)
        waits.append(state.seconds_until_probe(now))
        assert state.seconds_until_probe(now + waits[-1] - 0.01) > 0  # not due before its time
        now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert state.body(now) == {"status": "upstream_unavailable", "reason": "unreachable", "failures": 6, "next_probe_in_s": 0.0}
    change = state.probe_finished(state.probe_started(now), None, now)
    assert change is not None and state.ready and state.failures == 0


def test_a_calls_connect_failure_makes_it_unready_and_a_success_ready_again() -> None:
    state = UpstreamReadiness(now=0.0)
    state.probe_finished(state.probe_started(0.0), None, 0.0)
    change = state.connect_failed("auth", now=5.0)
    assert change is not None and change.reason == "auth" and not state.ready
    assert state.seconds_until_probe(5.0) == 1.0
    assert state.connect_failed("auth", now=5.5) is None  # no change: nothing new to log
    assert state.seconds_until_probe(5.5) == 2.0  # but the backoff grows
    assert state.connect_succeeded(now=6.0) is not None and state.ready


def test_a_probe_older_than_a_calls_outcome_does_not_override_it() -> None:
    state = UpstreamReadiness(now=0.0)
    started = state.probe_started(0.0)
    state.connect_succeeded(now=0.5)  # a call connected while the probe was under way
    assert state.probe_finished(started, "timeout", now=5.0) is None and state.ready


def test_reasons_are_a_fixed_set() -> None:
    state = UpstreamReadiness(now=0.0)
    state.connect_failed("x" * 500, now=1.0)  # a reason from nowhere becomes a known one
    assert state.reason == "unreachable"


# --- the real app ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _ready(http: httpx.AsyncClient) -> tuple[int, dict]:
    response = await http.get("/readyz")
    return response.status_code, response.json()


def test_readyz_follows_an_upstream_that_is_down_then_comes_up_without_restart() -> None:
    port = _free_port()  # nobody listens here yet

    async def scenario() -> None:
        async with running_bridge(upstream_url=f"ws://127.0.0.1:{port}/v1/realtime", upstream_probe=True) as (url, app):
            async with httpx.AsyncClient(base_url=url) as http:
                state = app.state.bridge
                assert await settle(lambda: state.readiness.state.failures >= 1, timeout=10)
                status, body = await _ready(http)
                assert status == 503 and body["status"] == "upstream_unavailable" and body["reason"] == "unreachable"
                # A call now fails to connect and keeps it unready (its failure is counted too).
                report = await place_call(url, CallerPlan(hangup_after_s=1.0, max_call_s=5.0), auth_token=AUTH_TOKEN)
                assert report.agent_audio_s == 0
                assert (await _ready(http))[0] == 503

                agent = LocalAgent(port=port)
                await agent.start()
                try:
                    # The next probe (backoff 1, 2, 4 s …) finds it: ready again, same process.
                    assert await settle(lambda: state.readiness.ready, timeout=20)
                    assert await _ready(http) == (200, {"status": "ready", "active_calls": 0})
                    metrics = (await http.get("/metrics")).text
                    assert 'voice_bridge_upstream_probes_total{result="unreachable"}' in metrics
                    assert "voice_bridge_upstream_ready 1.0" in metrics
                    # The upstream goes away again: the next call's failed connect makes it unready at once.
                    await agent.stop()
                    await place_call(url, CallerPlan(hangup_after_s=1.0, max_call_s=5.0), auth_token=AUTH_TOKEN)
                    status, body = await _ready(http)
                    assert status == 503 and body["reason"] == "unreachable"
                finally:
                    await agent.stop()

    run(scenario(), timeout=60)


def test_an_entra_credential_that_fails_is_503_auth_and_recovers_when_it_works() -> None:
    credential = ControlledCredential()
    credential.fail_with = ClientAuthenticationError("no managed identity here")

    async def scenario() -> None:
        agent = LocalAgent()
        await agent.start()
        try:
            settings = {"upstream": "voicelive", "upstream_url": agent.url, "upstream_probe": True}
            async with running_bridge(credential=credential, **settings) as (url, app):
                async with httpx.AsyncClient(base_url=url) as http:
                    state = app.state.bridge
                    assert await settle(lambda: state.readiness.state.failures >= 1, timeout=15)
                    status, body = await _ready(http)
                    assert status == 503 and body["status"] == "upstream_unavailable" and body["reason"] == "auth", body
                    assert agent.sessions_opened == 0  # no token, no connection
                    credential.fail_with = None
                    assert await settle(lambda: state.readiness.ready, timeout=20)
                    assert (await _ready(http))[0] == 200
                    assert agent.sessions_opened == 1 and agent.open_sessions == 0  # the probe's, closed at once
        finally:
            await agent.stop()

    run(scenario(), timeout=60)


def test_serve_with_an_unreachable_upstream_says_so_on_readyz() -> None:
    port, upstream_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_"))}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_UPSTREAM_URL=f"ws://127.0.0.1:{upstream_port}/v1/realtime")
    server = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if response.json().get("status") == "upstream_unavailable":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "no upstream_unavailable on /readyz"
            time.sleep(0.1)
        assert response.status_code == 503 and response.json()["reason"] == "unreachable"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200  # alive, just not ready
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[1]
    assert "upstream.not_ready" in output and "reason=unreachable" in output and "Traceback" not in output
