"""The upstream client over real loopback sockets: each dialect's handshake, retries, timeouts,
limits and close. Assertions are about behaviour (what was sent, what was raised, how many
attempts), never about how long anything took."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from typing import Any

import pytest
import structlog
import voicelive_schema
from conftest import run, settle
from controlled_credential import ControlledCredential
from handshake_upstream import HandshakeUpstream, SilentUpstream, free_port
from scripted_upstream import ScriptedSession

from bridge.auth import EntraTokens, TokenUnavailable
from bridge.dialects import GADialect, SessionConfig
from bridge.realtime_events import AudioDelta, SessionReady
from bridge.settings import Settings
from bridge.upstream import ConnectPolicy, UpstreamConnection, UpstreamTarget, UpstreamUnavailable, redact_url
from bridge.upstream_config import VOICELIVE_API_VERSION, upstream_spec

KEY = "secret-key-5f2b9c0e7d1a4e3b8c6f"
PATIENT = ConnectPolicy(budget_s=30.0)  # retries are bounded by the test's scenario, not by time


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def settings_for(case: str, server: HandshakeUpstream) -> Settings:
    fields: dict[str, Any] = {
        "voicelive-key": {
            "upstream": "voicelive",
            "azure_voicelive_endpoint": server.origin,
            "azure_voicelive_model": "gpt-realtime",
            "azure_voicelive_api_key": KEY,
        },
        "voicelive-entra": {
            "upstream": "voicelive",
            "azure_voicelive_endpoint": server.origin,
            "azure_voicelive_model": "gpt-realtime",
        },
        "azure-openai-key": {
            "upstream": "azure-openai",
            "azure_openai_endpoint": server.origin,
            "azure_openai_deployment": "rt-prod",
            "azure_openai_api_key": KEY,
        },
        "azure-openai-entra": {
            "upstream": "azure-openai",
            "azure_openai_endpoint": server.origin,
            "azure_openai_deployment": "rt-prod",
        },
        "openai": {
            "upstream": "openai",
            "openai_api_key": KEY,
            "upstream_url": f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime",
        },
        "local": {"upstream": "local", "upstream_url": f"ws://127.0.0.1:{server.port}/v1/realtime"},
    }[case]
    return Settings(insecure_dev=True, **fields)


HANDSHAKES = [
    ("voicelive-key", f"/voice-live/realtime?api-version={VOICELIVE_API_VERSION}&model=gpt-realtime", {"api-key": KEY}),
    (
        "voicelive-entra",
        f"/voice-live/realtime?api-version={VOICELIVE_API_VERSION}&model=gpt-realtime",
        {"Authorization": "Bearer token-1-for-https://ai.azure.com/.default"},
    ),
    ("azure-openai-key", "/openai/v1/realtime?model=rt-prod", {"api-key": KEY}),
    (
        "azure-openai-entra",
        "/openai/v1/realtime?model=rt-prod",
        {"Authorization": "Bearer token-1-for-https://cognitiveservices.azure.com/.default"},
    ),
    ("openai", "/v1/realtime?model=gpt-realtime", {"Authorization": f"Bearer {KEY}"}),
    ("local", "/v1/realtime", {}),
]


@pytest.mark.parametrize(("case", "path", "auth"), HANDSHAKES, ids=[h[0] for h in HANDSHAKES])
def test_each_dialect_handshake(case: str, path: str, auth: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="websockets.client")  # (the test server's own logs are not ours)

    async def scenario() -> tuple[HandshakeUpstream, list[dict[str, Any]]]:
        credential = ControlledCredential()
        tokens = EntraTokens(credential)
        async with HandshakeUpstream() as server:
            with structlog.testing.capture_logs() as logs:
                target = upstream_spec(settings_for(case, server)).target(tokens)
                connection = await UpstreamConnection.open(target)
                await connection.close()
        await tokens.aclose()
        return server, logs

    server, logs = run(scenario())
    (request,) = server.requests
    assert request.path == path
    sent_auth = {name: request.headers[name] for name in ("api-key", "Authorization") if name in request.headers}
    assert sent_auth == auth
    assert "OpenAI-Beta" not in request.headers
    assert [e["event"] for e in logs if e["event"].startswith("upstream.")] == ["upstream.connected"]
    secrets = [KEY, *(value.removeprefix("Bearer ") for value in auth.values())]
    for secret in secrets:
        assert secret not in str(logs)
        # websockets logs handshake headers at DEBUG: the bridge's client never lets it.
        assert secret not in "\n".join(r.getMessage() for r in caplog.records if r.name == "websockets.client")


def test_a_voicelive_session_over_the_socket() -> None:
    audio = b"\x10\x20" * 240

    async def script(session: ScriptedSession) -> None:
        await session.send("session.created", session={"id": "sess_1"})
        await session.expect("session.update")
        await session.send("session.updated", session={"id": "sess_1"})
        await session.send(
            "response.audio.delta",
            response_id="r1",
            item_id="i1",
            output_index=0,
            content_index=0,
            delta=base64.b64encode(audio).decode(),
        )
        await session.ws.wait_closed()

    async def scenario() -> tuple[list[Any], HandshakeUpstream]:
        async with HandshakeUpstream(script) as server:
            settings = settings_for("voicelive-key", server)
            connection = await UpstreamConnection.open(upstream_spec(settings).target())
            events = connection.events()
            received = [await anext(events)]
            config = SessionConfig(
                instructions="Be brief.",
                voice="en-US-AvaNeural",
                audio_mode="g711",
                voice_type="azure-standard",
                noise_suppression=True,
                echo_cancellation=True,
            )
            await connection.send(connection.dialect.session_update(config))
            received += [await anext(events), await anext(events)]
            await connection.close()
        return received, server

    received, server = run(scenario())
    assert received == [SessionReady(updated=False), SessionReady(updated=True), AudioDelta("r1", "i1", 0, audio)]
    (update,) = server.sessions[0].received
    assert voicelive_schema.problems(update) == []
    assert update["session"]["input_audio_format"] == "g711_ulaw"


def test_a_refused_port_is_retried_until_it_accepts() -> None:
    port = free_port()
    server = HandshakeUpstream(port=port)
    sleeps: list[float] = []

    async def start_listening_then_sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 1:
            await server.start()  # the port starts accepting after the first refusal
        await asyncio.sleep(0)

    async def scenario() -> list[dict[str, Any]]:
        target = UpstreamTarget(url=f"ws://127.0.0.1:{port}/v1/realtime", dialect=GADialect())
        try:
            with structlog.testing.capture_logs() as logs:
                connection = await UpstreamConnection.open(target, PATIENT, sleep=start_listening_then_sleep)
                await connection.close()
        finally:
            await server.__aexit__()
        return logs

    logs = run(scenario())
    upstream_logs = [e for e in logs if e["event"].startswith("upstream.")]
    assert [e["event"] for e in upstream_logs] == ["upstream.connect_retry", "upstream.connected"]
    assert "ConnectionRefusedError" in upstream_logs[0]["error"] and upstream_logs[1]["attempts"] == 2
    assert len(sleeps) == 1 and 0 < sleeps[0] <= PATIENT.max_backoff_s
    assert len(server.requests) == 1


@pytest.mark.parametrize("statuses", [[503], [429, 502, 500]])
def test_passing_http_failures_are_retried(statuses: list[int]) -> None:
    async def scenario() -> HandshakeUpstream:
        async with HandshakeUpstream(refuse_with=statuses) as server:
            target = upstream_spec(settings_for("voicelive-key", server)).target()
            connection = await UpstreamConnection.open(target, PATIENT, sleep=no_sleep)
            await connection.close()
        return server

    server = run(scenario())
    assert len(server.requests) == len(statuses) + 1
    assert all(r.headers["api-key"] == KEY for r in server.requests)  # every attempt authenticates


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "refused the credentials"), (403, "refused the credentials"), (404, "no such endpoint"), (400, "HTTP 400")],
)
def test_a_refusal_that_will_not_pass_is_not_retried(status: int, says: str) -> None:
    async def scenario() -> tuple[UpstreamUnavailable, HandshakeUpstream]:
        async with HandshakeUpstream(refuse_with=[status]) as server:
            target = upstream_spec(settings_for("azure-openai-key", server)).target()
            with pytest.raises(UpstreamUnavailable) as failed:
                await UpstreamConnection.open(target, PATIENT, sleep=no_sleep)
        return failed.value, server

    error, server = run(scenario())
    assert (error.status, error.attempts, len(server.requests)) == (status, 1, 1)
    assert says in str(error) and KEY not in str(error)
    assert isinstance(error, OSError)  # what the call session already treats as "upstream unavailable"


def test_when_the_budget_is_spent_one_clear_error_is_raised() -> None:
    port = free_port()  # nothing ever listens

    async def scenario() -> tuple[UpstreamUnavailable, list[dict[str, Any]]]:
        target = upstream_spec(Settings(upstream_url=f"ws://127.0.0.1:{port}/v1/realtime?api-key={KEY}")).target()
        with structlog.testing.capture_logs() as logs, pytest.raises(UpstreamUnavailable) as failed:
            await UpstreamConnection.open(target, ConnectPolicy(budget_s=0.3, first_backoff_s=0.02, max_backoff_s=0.05))
        return failed.value, logs

    error, logs = run(scenario())
    assert error.attempts >= 2 and isinstance(error.__cause__, ConnectionRefusedError)
    assert str(error).startswith(
        f"upstream ws://127.0.0.1:{port}/v1/realtime?api-key=*** unavailable after {error.attempts} attempt(s): ConnectionRefusedError"
    )
    assert {e["event"] for e in logs} == {"upstream.connect_retry"}  # the failure itself is the caller's to log
    assert KEY not in str(logs) + str(error)


def test_a_slow_open_times_out() -> None:
    async def scenario() -> tuple[UpstreamUnavailable, int]:
        async with SilentUpstream() as silent:
            target = upstream_spec(Settings(upstream_url=f"ws://127.0.0.1:{silent.port}/v1/realtime")).target()
            with pytest.raises(UpstreamUnavailable) as failed:
                await UpstreamConnection.open(target, ConnectPolicy(open_timeout_s=0.2, budget_s=0.1))
            return failed.value, silent.accepted

    error, accepted = run(scenario())
    assert isinstance(error.__cause__, TimeoutError) and error.attempts == 1 and accepted == 1
    assert "did not complete in time" in str(error)


def test_no_token_means_no_connection_attempt() -> None:
    async def scenario() -> tuple[UpstreamUnavailable, HandshakeUpstream]:
        credential = ControlledCredential()
        credential.fail_with = RuntimeError("no managed identity here")
        tokens = EntraTokens(credential)
        async with HandshakeUpstream() as server:
            with pytest.raises(UpstreamUnavailable) as failed:
                await UpstreamConnection.open(
                    upstream_spec(settings_for("voicelive-entra", server)).target(tokens), PATIENT
                )
        await tokens.aclose()
        return failed.value, server

    error, server = run(scenario())
    assert isinstance(error.__cause__, TokenUnavailable) and server.requests == []
    assert "no Entra ID token for scope https://ai.azure.com/.default: RuntimeError: no managed identity here" in str(
        error
    )


def test_close_is_a_clean_1000() -> None:
    async def scenario() -> tuple[int | None, HandshakeUpstream]:
        async with HandshakeUpstream() as server:
            connection = await UpstreamConnection.open(upstream_spec(settings_for("local", server)).target())
            await connection.close()
            await settle(lambda: server.close_codes != [])
        return connection.close_code, server

    code, server = run(scenario())
    assert code == 1000 and server.close_codes == [1000]


def test_keepalive_pings_are_sent_and_answered() -> None:
    async def scenario() -> float:
        async with HandshakeUpstream() as server:
            policy = dataclasses.replace(PATIENT, ping_interval_s=0.02, ping_timeout_s=5.0)
            connection = await UpstreamConnection.open(upstream_spec(settings_for("local", server)).target(), policy)
            assert await settle(lambda: connection.latency_s > 0, timeout=5.0)
            await connection.close()
            return connection.latency_s

    assert run(scenario()) > 0


def test_an_oversized_message_closes_the_connection_with_1009() -> None:
    async def script(session: ScriptedSession) -> None:
        await session.send("response.audio.delta", delta="A" * 4096)
        await session.ws.wait_closed()

    async def scenario() -> tuple[list[Any], list[int | None], list[dict[str, Any]]]:
        async with HandshakeUpstream(script) as server:
            policy = dataclasses.replace(PATIENT, max_message_bytes=1024)
            connection = await UpstreamConnection.open(upstream_spec(settings_for("local", server)).target(), policy)
            with structlog.testing.capture_logs() as logs:
                events = [event async for event in connection.events()]
            await settle(lambda: server.close_codes != [])
        return events, server.close_codes, logs

    events, server_saw, logs = run(scenario())
    assert events == [] and server_saw == [1009]  # "message too big"
    assert [e["event"] for e in logs] == ["upstream.dropped"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "wss://r.services.ai.azure.com/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime",
            "wss://r.services.ai.azure.com/voice-live/realtime?api-version=2026-07-15&model=gpt-realtime",
        ),
        (
            "wss://r.services.ai.azure.com/voice-live/realtime?model=m&api-key=abc",
            "wss://r.services.ai.azure.com/voice-live/realtime?model=m&api-key=***",
        ),
        (
            "wss://user:pass@proxy.example.net:8443/rt?access_token=abc&sig=x",
            "wss://proxy.example.net:8443/rt?access_token=***&sig=***",
        ),
        ("ws://[::1]:9000/v1/realtime", "ws://[::1]:9000/v1/realtime"),
        ("ws://host:notaport/x", "<unparsable url>"),
    ],
)
def test_urls_in_logs_hide_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
