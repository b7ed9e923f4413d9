"""The HTTP edge against hostile clients, on real sockets: spoofed forwarded headers, oversized and
dribbling bodies, half-sent requests, connection floods, and the internal metrics port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from conftest import AUTH_TOKEN, run
from starlette.applications import Starlette
from websockets.asyncio.client import connect

import bridge.app as app_module
from bridge.app import create_internal_app
from bridge.devtools.local_bridge import local_bridge
from bridge.devtools.phone.simulator import parse_stream_twiml
from bridge.serving import serving
from bridge.settings import Settings
from twiml.signatures import TwilioSigner

BIN = Path(sys.executable).parent / "voice-bridge"
SIGNER = TwilioSigner(AUTH_TOKEN)
FORM = {"CallSid": "CA" + "e" * 32, "AccountSid": "AC" + "0" * 32, "From": "+15550199999", "To": "+15550100000"}


@contextlib.asynccontextmanager
async def bridge(**options: Any) -> AsyncIterator[tuple[str, Starlette]]:
    """The real app under uvicorn on loopback, with `uvicorn_config` options (trusted proxies, limits)."""
    settings = Settings(twilio_auth_token=AUTH_TOKEN, prewarm=False, **options.pop("settings", {}))
    async with local_bridge(settings) as started, serving(started.app, **options) as url:
        yield url, started.app


async def post_voice(url: str, signed_for: str, headers: dict[str, str] | None = None, form: dict[str, str] = FORM) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/voice",
            content=urllib.parse.urlencode(form),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": SIGNER.sign(signed_for, form),
                **(headers or {}),
            },
        )


def metric(app: Starlette, name: str, **labels: str) -> float:
    value = app.state.bridge.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


SPOOF = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


# --- (a) forwarded headers ------------------------------------------------------------------------


def test_spoofed_forwarded_headers_from_an_untrusted_client_change_neither_signature_url_nor_stream_url() -> None:
    async def scenario() -> None:
        # Loopback is not in the trusted list here: this client is "anyone on the internet".
        async with bridge(forwarded_allow_ips="10.255.255.1") as (url, app):
            host = url.removeprefix("http://")
            # Signed for the URL the attacker chose: refused.
            spoofed = await post_voice(url, "https://evil.example/voice", SPOOF)
            assert spoofed.status_code == 403
            # Signed for the real URL, with the headers still there: accepted, and the Stream URL is ours.
            answer = await post_voice(url, f"{url}/voice", SPOOF)
            assert answer.status_code == 200, answer.text
            stream_url, _ = parse_stream_twiml(answer.text)
            assert stream_url == f"ws://{host}/media-stream"
            assert "evil.example" not in answer.text
            # The WebSocket upgrade signed for the spoofed URL: refused with 403.
            with pytest.raises(websockets.InvalidStatus) as refused:
                await connect(
                    f"ws://{host}/media-stream",
                    proxy=None,
                    additional_headers={"X-Twilio-Signature": SIGNER.sign("wss://evil.example/media-stream", {}), **SPOOF},
                )
            assert refused.value.response.status_code == 403
            assert metric(app, "voice_bridge_rejections_total", reason="bad_signature") == 2

    run(scenario())


def test_a_trusted_proxy_sets_the_scheme_but_never_the_host() -> None:
    async def scenario() -> None:
        async with bridge(forwarded_allow_ips="127.0.0.1") as (url, _):
            host = url.removeprefix("http://")
            # The proxy terminated TLS: Twilio signed https://<host>/voice, and the Stream URL is wss.
            answer = await post_voice(url, f"https://{host}/voice", {"X-Forwarded-Proto": "https"})
            assert answer.status_code == 200, answer.text
            assert parse_stream_twiml(answer.text)[0] == f"wss://{host}/media-stream"
            # X-Forwarded-Host is not honoured even from a trusted proxy (set VOICE_BRIDGE_PUBLIC_URL).
            assert (await post_voice(url, "https://evil.example/voice", SPOOF)).status_code == 403
            answer = await post_voice(url, f"https://{host}/voice", SPOOF)
            assert answer.status_code == 200 and "evil.example" not in answer.text

    run(scenario())


# --- (b) oversized and dribbling bodies -------------------------------------------------------------


def _head(host: str, extra: str) -> bytes:
    return (
        f"POST /voice HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: x\r\n{extra}\r\n"
    ).encode()


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout=5)


def test_a_huge_declared_body_is_refused_413_before_any_of_it_is_read() -> None:
    async def scenario() -> None:
        async with bridge() as (url, app):
            host = url.removeprefix("http://")
            reader, writer = await asyncio.open_connection(*host.split(":"))
            writer.write(_head(host, f"Content-Length: {48 * 1024 * 1024}\r\n"))  # and not one byte of body
            await writer.drain()
            assert (await _status_line(reader)).startswith(b"HTTP/1.1 413")
            rest = await asyncio.wait_for(reader.read(), timeout=5)  # the server closes the connection
            assert b"connection: close" in rest.lower()
            writer.close()
            assert metric(app, "voice_bridge_rejections_total", reason="body_too_large") == 1
            assert metric(app, "voice_bridge_rejections_total", reason="bad_signature") == 0  # no signature work

    run(scenario())


def test_a_chunked_body_of_many_mib_is_refused_413_while_it_streams() -> None:
    total = 256 * 1024 * 1024
    chunk = b"a" * (1024 * 1024)

    async def scenario() -> None:
        async with bridge() as (url, app):
            host = url.removeprefix("http://")
            reader, writer = await asyncio.open_connection(*host.split(":"))
            writer.transport.set_write_buffer_limits(high=256 * 1024)
            writer.write(_head(host, "Transfer-Encoding: chunked\r\n"))
            status = asyncio.create_task(_status_line(reader))
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < total and not status.done():
                    writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    await writer.drain()
                    sent += len(chunk)
            assert (await status).startswith(b"HTTP/1.1 413")
            writer.close()
            # Refused long before the end: what got out is what the kernel's buffers took, not 256 MiB.
            assert sent < total / 4, sent
            assert metric(app, "voice_bridge_rejections_total", reason="body_too_large") == 1
            assert metric(app, "voice_bridge_rejections_total", reason="bad_signature") == 0

    run(scenario())


def test_a_dribbling_body_is_refused_408_by_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "WEBHOOK_BODY_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        async with bridge() as (url, app):
            host = url.removeprefix("http://")
            reader, writer = await asyncio.open_connection(*host.split(":"))
            writer.write(_head(host, "Content-Length: 1000\r\n") + b"CallSid=CA")  # then nothing more
            await writer.drain()
            assert (await _status_line(reader)).startswith(b"HTTP/1.1 408")
            writer.close()
            assert metric(app, "voice_bridge_rejections_total", reason="body_timeout") == 1

    run(scenario())


def test_a_signed_webhook_within_the_limit_still_works() -> None:
    async def scenario() -> None:
        async with bridge() as (url, _):
            form = {**FORM, "Padding": "x" * 60_000}  # a big but allowed body (< 64 KiB)
            assert (await post_voice(url, f"{url}/voice", form=form)).status_code == 200

    run(scenario())


# --- (c) slow and many clients -----------------------------------------------------------------------


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails if it does not close within `seconds`."""
    return await asyncio.wait_for(reader.read(), timeout=seconds)


def test_half_sent_requests_are_closed_by_the_header_deadline_while_others_are_served() -> None:
    n, header_timeout = 60, 0.5

    async def scenario() -> None:
        async with bridge(header_timeout_s=header_timeout, limit_concurrency=200) as (url, app):
            host, port = url.removeprefix("http://").split(":")
            started = time.monotonic()
            slow = [await asyncio.open_connection(host, port) for _ in range(n)]
            for i, (_, writer) in enumerate(slow):
                # Half of them send a partial head, half nothing at all.
                writer.write(b"POST /voice HTTP/1.1\r\nHost: x\r\nContent-Le" if i % 2 else b"")
            # Meanwhile a real webhook is answered at once.
            answer = await post_voice(url, f"{url}/voice")
            assert answer.status_code == 200 and "<Connect>" in answer.text
            assert time.monotonic() - started < header_timeout  # answered before any slow one was dropped
            outputs = await asyncio.gather(*(_closed_within(r, header_timeout + 5) for r, _ in slow))
            assert all(out.startswith(b"HTTP/1.1 408") for out in outputs)
            for _, writer in slow:
                writer.close()
            assert metric(app, "voice_bridge_http_refused_total", reason="header_timeout") == n
            # A kept-alive connection that starts a second request and stalls is dropped the same way.
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
            data = await _closed_within(reader, header_timeout + 5)
            assert data.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in data
            writer.close()

    run(scenario())


def test_connections_beyond_the_limit_are_refused_at_once_and_the_slots_come_back() -> None:
    limit = 10

    async def scenario() -> None:
        async with bridge(header_timeout_s=1.0, limit_concurrency=limit) as (url, app):
            host, port = url.removeprefix("http://").split(":")
            held = [await asyncio.open_connection(host, port) for _ in range(limit)]
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection(host, port)
            assert (await _closed_within(reader, 1.0)).startswith(b"HTTP/1.1 503")
            writer.close()
            assert metric(app, "voice_bridge_http_refused_total", reason="too_many_connections") == 1
            await asyncio.gather(*(_closed_within(r, 6) for r, _ in held))  # the header deadline frees them
            for _, w in held:
                w.close()
            assert (await post_voice(url, f"{url}/voice")).status_code == 200

    run(scenario())


# --- (d) the internal port ------------------------------------------------------------------------------


def test_with_a_metrics_port_the_public_port_serves_no_metrics_and_no_readiness() -> None:
    async def scenario() -> None:
        settings = Settings(twilio_auth_token=AUTH_TOKEN, metrics_port=9999)  # the port is `serve`'s business
        async with (
            local_bridge(settings) as started,
            serving(started.app) as url,
            serving(create_internal_app(started.app), lifespan="off") as internal,
            httpx.AsyncClient() as http,
        ):
            assert (await http.get(f"{url}/metrics")).status_code == 404
            assert (await http.get(f"{url}/readyz")).status_code == 404
            assert (await http.get(f"{url}/healthz")).json() == {"status": "ok"}
            assert (await post_voice(url, f"{url}/voice")).status_code == 200
            scraped = await http.get(f"{internal}/metrics")
            assert scraped.status_code == 200
            assert 'voice_bridge_webhooks_total{result="stream",route="/voice"} 1.0' in scraped.text
            assert (await http.get(f"{internal}/readyz")).json()["status"] == "ready"

    run(scenario())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_with_voice_bridge_metrics_port() -> None:
    port, metrics_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_", "FORWARDED_"))}
    env.update(TWILIO_AUTH_TOKEN=AUTH_TOKEN, VOICE_BRIDGE_METRICS_PORT=str(metrics_port), VOICE_BRIDGE_DRAIN_SECONDS="0")
    server = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url, internal = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{internal}/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
                await asyncio.sleep(0.1)
            assert (await http.get(f"{url}/metrics")).status_code == 404
            assert (await http.get(f"{url}/readyz")).status_code == 404
            assert (await http.get(f"{url}/healthz")).status_code == 200
            assert re.search(r"^voice_bridge_active_calls 0\.0$", (await http.get(f"{internal}/metrics")).text, re.M)

    try:
        run(scenario(), timeout=40)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
    with pytest.raises(OSError):  # both ports are closed with the process
        socket.create_connection(("127.0.0.1", metrics_port), timeout=1).close()


def test_a_signed_webhook_with_an_odd_or_huge_call_sid_is_refused_400_and_nothing_is_kept() -> None:
    async def scenario() -> None:
        async with bridge() as (url, app):
            for call_sid in ("", "CA" + "1" * 63, "CA-1", "CA\u00b2", "CA 1"):
                answer = await post_voice(url, f"{url}/voice", form={**FORM, "CallSid": call_sid})
                assert answer.status_code == 400, call_sid
            assert app.state.bridge.admission.active(0.0) == 0 and app.state.bridge.admission.remembered() == 0
            ok = await post_voice(url, f"{url}/voice")
            assert ok.status_code == 200 and "<Stream" in ok.text

    run(scenario())
